"""SSM adapter: node registration, Run Command, and the swarm's SecureString parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import naming
from chalicelib.aws import Client, error_code, just_created
from chalicelib.errors import TransientError

SHELL_DOCUMENT = "AWS-RunShellScript"
# Statuses after which an invocation will not change any more.
FINAL_STATUSES = {
    "Success",
    "Failed",
    "Cancelled",
    "TimedOut",
    "Undeliverable",
    "Terminated",
    "DeliveryTimedOut",
    "ExecutionTimedOut",
    "InvalidPlatform",
    "AccessDenied",
}
# Not found right after a create (see chalicelib.aws). ListCommandInvocations just after
# SendCommand (the command ids the steps read come from their SendCommand a step before):
COMMAND_NOT_VISIBLE = frozenset({"InvalidCommandId", "InvocationDoesNotExist"})
# AddTagsToResource just after PutParameter, in the same call:
PARAMETER_NOT_VISIBLE = frozenset({"InvalidResourceId"})


@dataclass(frozen=True)
class Invocation:
    instance_id: str
    status: str
    response_code: int
    output: str


def online_instances(ssm: Client, instance_ids: list[str]) -> set[str]:
    """Which of these instances the SSM agent has registered and reports online."""
    if not instance_ids:
        return set()
    online: set[str] = set()
    paginator = ssm.get_paginator("describe_instance_information")
    pages = paginator.paginate(Filters=[{"Key": "InstanceIds", "Values": instance_ids}])
    for page in pages:
        for info in page["InstanceInformationList"]:
            if info.get("PingStatus") == "Online":
                online.add(info["InstanceId"])
    return online


def run_shell(
    ssm: Client,
    *,
    commands: list[str],
    comment: str,
    timeout_seconds: int,
    instance_ids: list[str] | None = None,
    targets: list[dict[str, Any]] | None = None,
    max_concurrency: str | None = None,
    max_errors: str | None = None,
    log_group: str | None = None,
) -> str:
    """Send an AWS-RunShellScript command to instances (by id) or to targets (by tag)."""
    request: dict[str, Any] = {
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
        request["CloudWatchOutputConfig"] = {"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": log_group}
    return str(ssm.send_command(**request)["Command"]["CommandId"])


def command_comment(ssm: Client, command_id: str) -> str | None:
    commands = ssm.list_commands(CommandId=command_id)["Commands"]
    return str(commands[0].get("Comment", "")) if commands else None


def invocations(ssm: Client, command_id: str) -> list[Invocation]:
    """Every per-instance result of a command, with its output (an empty list until delivered).
    A command SSM does not know yet, just after SendCommand, is TransientError."""
    result: list[Invocation] = []
    paginator = ssm.get_paginator("list_command_invocations")
    with just_created(f"command {command_id}", COMMAND_NOT_VISIBLE):
        pages = list(paginator.paginate(CommandId=command_id, Details=True))
    for page in pages:
        for inv in page["CommandInvocations"]:
            plugins = inv.get("CommandPlugins") or [{}]
            result.append(
                Invocation(
                    instance_id=inv["InstanceId"],
                    status=inv["Status"],
                    response_code=int(plugins[0].get("ResponseCode", -1)),
                    output=plugins[0].get("Output", ""),
                )
            )
    return result


def output(ssm: Client, command_id: str, instance_id: str) -> str:
    """A finished invocation's whole standard output (up to the 24,000 characters SSM keeps;
    ListCommandInvocations gives only the first 2,500)."""
    with just_created(f"command {command_id} on {instance_id}", COMMAND_NOT_VISIBLE):
        answer = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    return str(answer.get("StandardOutputContent", ""))


def versions(ssm: Client, names: list[str]) -> dict[str, int]:
    """{name: version} of the parameters that exist among `names`, read from their metadata only
    (DescribeParameters): a SecureString's value is never read here."""
    found: dict[str, int] = {}
    for start in range(0, len(names), 50):
        filters = [{"Key": "Name", "Option": "Equals", "Values": names[start : start + 50]}]
        for page in ssm.get_paginator("describe_parameters").paginate(ParameterFilters=filters):
            for parameter in page["Parameters"]:
                found[str(parameter["Name"])] = int(parameter.get("Version", 1))
    return found


def values_under(ssm: Client, path: str) -> dict[str, str]:
    """{name below `path`: value} of the parameters directly under `path` (GetParametersByPath, not
    recursive, decrypted). For the environment's variables: the values stay in the caller's memory."""
    found: dict[str, str] = {}
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=False, WithDecryption=True)
    for page in pages:
        for parameter in page["Parameters"]:
            found[str(parameter["Name"]).removeprefix(path.rstrip("/") + "/")] = str(parameter.get("Value", ""))
    return found


def _read(ssm: Client, name: str) -> str | None:
    try:
        return str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return None
        raise


def get_secure(ssm: Client, name: str, *, just_put: bool = False) -> str | None:
    """A SecureString's value, None if there is no such parameter. With `just_put` (the caller
    knows a PutParameter of it has just been made, such as the join tokens after this run's
    swarm init), not found is SSM not showing it yet: TransientError."""
    value = _read(ssm, name)
    if value is None and just_put:
        raise TransientError(f"not visible yet, just after its put: parameter {name} (ParameterNotFound)")
    return value


def get_string(ssm: Client, name: str) -> str | None:
    """A parameter's value, None if there is no such parameter."""
    return _read(ssm, name)


def put_string(ssm: Client, name: str, value: str) -> None:
    """Write (or overwrite) a String parameter; repeating it is harmless."""
    ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)


def delete(ssm: Client, name: str) -> bool:
    """Delete a parameter; False if it was not there."""
    try:
        ssm.delete_parameter(Name=name)
        return True
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return False
        raise


def put_secure(ssm: Client, name: str, value: str, tags: dict[str, str]) -> None:
    """Write (or overwrite) a SecureString and tag it; repeating it is harmless."""
    ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    # PutParameter refuses Tags together with Overwrite, so tag in a second call, which may not
    # find the parameter yet.
    with just_created(f"parameter {name}", PARAMETER_NOT_VISIBLE):
        ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name, Tags=naming.tag_list(tags))


def delete_tree(ssm: Client, path: str) -> int:
    names: list[str] = []
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True):
        names += [p["Name"] for p in page["Parameters"]]
    for start in range(0, len(names), 10):
        ssm.delete_parameters(Names=names[start : start + 10])
    return len(names)
