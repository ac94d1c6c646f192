"""SSM adapter: node registration, Run Command, and the swarm's SecureString parameters."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib import naming

SHELL_DOCUMENT = "AWS-RunShellScript"
# Statuses after which an invocation will not change any more.
FINAL_STATUSES = {"Success", "Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated",
                  "DeliveryTimedOut", "ExecutionTimedOut", "InvalidPlatform", "AccessDenied"}


@dataclass(frozen=True)
class Invocation:
    instance_id: str
    status: str
    response_code: int
    output: str


def online_instances(ssm, instance_ids: list[str]) -> set[str]:
    """Which of these instances the SSM agent has registered and reports online."""
    if not instance_ids:
        return set()
    online = set()
    paginator = ssm.get_paginator("describe_instance_information")
    pages = paginator.paginate(Filters=[{"Key": "InstanceIds", "Values": instance_ids}])
    for page in pages:
        for info in page["InstanceInformationList"]:
            if info.get("PingStatus") == "Online":
                online.add(info["InstanceId"])
    return online


def run_shell(ssm, *, commands: list[str], comment: str, timeout_seconds: int,
              instance_ids: list[str] | None = None, targets: list[dict] | None = None,
              max_concurrency: str | None = None, max_errors: str | None = None,
              log_group: str | None = None) -> str:
    """Send an AWS-RunShellScript command to instances (by id) or to targets (by tag)."""
    request: dict = {
        "DocumentName": SHELL_DOCUMENT,
        "Comment": comment[:100],
        "Parameters": {"commands": commands, "executionTimeout": [str(timeout_seconds)]},
        "TimeoutSeconds": timeout_seconds,
    }
    if instance_ids:
        request["InstanceIds"] = instance_ids
    if targets:
        request["Targets"] = targets
    if max_concurrency:
        request["MaxConcurrency"] = max_concurrency
    if max_errors:
        request["MaxErrors"] = max_errors
    if log_group:
        request["CloudWatchOutputConfig"] = {"CloudWatchOutputEnabled": True,
                                             "CloudWatchLogGroupName": log_group}
    return ssm.send_command(**request)["Command"]["CommandId"]


def command_comment(ssm, command_id: str) -> str | None:
    commands = ssm.list_commands(CommandId=command_id)["Commands"]
    return commands[0].get("Comment", "") if commands else None


def invocations(ssm, command_id: str) -> list[Invocation]:
    """Every per-instance result of a command, with its output (an empty list until delivered)."""
    result = []
    paginator = ssm.get_paginator("list_command_invocations")
    for page in paginator.paginate(CommandId=command_id, Details=True):
        for inv in page["CommandInvocations"]:
            plugins = inv.get("CommandPlugins") or [{}]
            result.append(Invocation(
                instance_id=inv["InstanceId"],
                status=inv["Status"],
                response_code=int(plugins[0].get("ResponseCode", -1)),
                output=plugins[0].get("Output", ""),
            ))
    return result


def get_secure(ssm, name: str) -> str | None:
    try:
        return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return None


def put_secure(ssm, name: str, value: str, tags: dict[str, str]) -> None:
    ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    # PutParameter refuses Tags together with Overwrite, so tag in a second call.
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name,
                             Tags=naming.tag_list(tags))


def delete_tree(ssm, path: str) -> int:
    names = []
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True):
        names += [p["Name"] for p in page["Parameters"]]
    for start in range(0, len(names), 10):
        ssm.delete_parameters(Names=names[start:start + 10])
    return len(names)
