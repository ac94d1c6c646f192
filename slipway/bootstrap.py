"""`slipway bootstrap`: deploy what `chalice deploy` does not (.chalice/resources.yaml) as one
CloudFormation stack, and write its outputs into the stage's environment_variables in
.chalice/config.json, which `chalice deploy` then gives the functions.

The template is rendered first: CloudFormation cannot read local files, so each state machine's
definition (statemachines/*.asl.json) is put into it, with one DefinitionSubstitution per
${XxxFunctionArn} placeholder pointing at the name Chalice gives that function, and the state
machines' role may invoke exactly those functions. `make package` writes the same rendering.
"""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import yaml

from slipway.statemachines import PLACEHOLDER

TEMPLATE = Path(".chalice") / "resources.yaml"
CONFIG = Path(".chalice") / "config.json"
INVOKE_SID = "InvokeTheTaskFunctions"
# CloudFormation's limit for a template sent inline (TemplateBody).
MAX_TEMPLATE_BODY = 51_200
SOURCE_KEY = "source.zip"
SOURCE_FOLDERS = ("packer", "ansible")
# Stack output -> the variable chalicelib/settings.py reads.
OUTPUT_VARIABLES = {
    "DeployStateMachineArn": "SLIPWAY_DEPLOY_STATE_MACHINE_ARN",
    "BakeProjectName": "SLIPWAY_BAKE_PROJECT",
    "NodeInstanceProfileName": "SLIPWAY_NODE_INSTANCE_PROFILE",
    "SourceBucketName": "SLIPWAY_BAKE_BUCKET",
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class BootstrapError(Exception):
    """The stack could not be deployed or removed; the message says why."""


def stack_name(stage: str) -> str:
    return f"slipway-{stage}-resources"


def function_for(placeholder: str) -> str:
    """`CheckBakeFunctionArn` -> `check_bake` (the inverse of statemachines.function_placeholder)."""
    if not placeholder.endswith("FunctionArn"):
        raise ValueError(f"placeholder {placeholder!r} does not name a function (…FunctionArn)")
    return _CAMEL.sub("_", placeholder.removesuffix("FunctionArn")).lower()


def load_config(project_dir: Path) -> dict:
    return json.loads((project_dir / CONFIG).read_text())


def stage_parameters(config: dict, stage: str) -> dict[str, str]:
    """The template's parameters for a stage of .chalice/config.json."""
    if stage not in config.get("stages", {}):
        raise BootstrapError(f"no stage {stage!r} in .chalice/config.json")
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    parameters = {"Stage": stage, "Environment": env.get("SLIPWAY_ENVIRONMENT", stage)}
    retention = config["stages"][stage].get("log_retention_in_days", config.get("log_retention_in_days"))
    if retention:
        parameters["LogRetentionInDays"] = str(retention)
    return parameters


def render(project_dir: Path, app_name: str = "slipway") -> dict:
    """The template as deployed: definitions and the exact functions the state machines invoke."""
    template = copy.deepcopy(yaml.safe_load((project_dir / TEMPLATE).read_text()))
    arns: list[dict] = []
    for resource in template["Resources"].values():
        source = (resource.get("Metadata") or {}).get("Slipway", {}).get("Definition")
        if resource["Type"] != "AWS::StepFunctions::StateMachine" or not source:
            continue
        text = (project_dir / source).read_text()
        definition = json.loads(text)  # a broken file fails here, not in CloudFormation
        substitutions = {}
        for placeholder in sorted(set(PLACEHOLDER.findall(text))):
            arn = {
                "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}"
                f":function:{app_name}-${{Stage}}-{function_for(placeholder)}"
            }
            substitutions[placeholder] = arn
            if arn not in arns:
                arns.append(arn)
        resource["Properties"]["DefinitionString"] = json.dumps(definition, separators=(",", ":"))
        resource["Properties"]["DefinitionSubstitutions"] = substitutions
    statements = [
        s
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::Role"
        for p in r["Properties"].get("Policies", [])
        for s in p["PolicyDocument"]["Statement"]
        if s.get("Sid") == INVOKE_SID
    ]
    if len(statements) != 1 or not arns:
        raise BootstrapError(
            f"{TEMPLATE}: expected one statement {INVOKE_SID} and state machines with a Metadata Slipway.Definition"
        )
    statements[0]["Resource"] = arns
    return template


def template_body(template: dict) -> str:
    body = json.dumps(template, separators=(",", ":"))
    if len(body) > MAX_TEMPLATE_BODY:
        raise BootstrapError(
            f"the rendered template is {len(body)} bytes, over CloudFormation's "
            f"{MAX_TEMPLATE_BODY} for an inline template"
        )
    return body


def write_outputs(project_dir: Path, stage: str, outputs: dict[str, str]) -> dict[str, str]:
    """Put the stack's outputs into the stage's environment_variables (only those that changed)."""
    path = project_dir / CONFIG
    config = json.loads(path.read_text())
    variables = config["stages"][stage].setdefault("environment_variables", {})
    written = {}
    for output, variable in OUTPUT_VARIABLES.items():
        if output in outputs and variables.get(variable) != outputs[output]:
            variables[variable] = outputs[output]
            written[variable] = outputs[output]
    if written:
        path.write_text(json.dumps(config, indent=2) + "\n")
    return written


def forget_outputs(project_dir: Path, stage: str) -> None:
    path = project_dir / CONFIG
    config = json.loads(path.read_text())
    variables = config["stages"][stage].get("environment_variables", {})
    removed = [variables.pop(v) for v in OUTPUT_VARIABLES.values() if v in variables]
    if removed:
        path.write_text(json.dumps(config, indent=2) + "\n")


def source_archive(project_dir: Path) -> tuple[bytes, str]:
    """packer/ and ansible/ as a zip, what packer/buildspec.yml expects at the build's root:
    from git HEAD when this is a checkout, else from the files on disk."""
    try:
        data = subprocess.run(
            ["git", "-C", str(project_dir), "archive", "--format=zip", "HEAD", *SOURCE_FOLDERS],
            check=True,
            capture_output=True,
        ).stdout
        return data, "git HEAD"
    except (OSError, subprocess.CalledProcessError):
        pass
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in SOURCE_FOLDERS:
            for path in sorted((project_dir / folder).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    info = zipfile.ZipInfo(str(path.relative_to(project_dir)), (1980, 1, 1, 0, 0, 0))
                    info.external_attr = (path.stat().st_mode & 0o777) << 16
                    archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue(), "the files on disk"


def _failure_reasons(cfn, name: str) -> str:
    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except Exception:  # noqa: BLE001 - only to enrich the message
        return ""
    reasons = [
        f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
        for e in events
        if e["ResourceStatus"].endswith("FAILED")
    ]
    return "; ".join(reasons[:5])


def _stack(cfn, name: str) -> dict | None:
    try:
        return cfn.describe_stacks(StackName=name)["Stacks"][0]
    except cfn.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise


def deploy(project_dir: Path, stage: str, *, session=None, say: Callable[[str], None] = print) -> dict[str, str]:
    """Create or update the stack, upload the bake's source, write the outputs into config.json."""
    import boto3

    session = session or boto3.session.Session()
    config = load_config(project_dir)
    parameters = stage_parameters(config, stage)
    body = template_body(render(project_dir, config.get("app_name", "slipway")))
    cfn = session.client("cloudformation")
    name = stack_name(stage)
    identity = session.client("sts").get_caller_identity()
    say(f"Stack {name} in account {identity['Account']}, region {session.region_name}")
    request = {
        "StackName": name,
        "TemplateBody": body,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "Capabilities": ["CAPABILITY_NAMED_IAM"],
        "Tags": [{"Key": "slipway:environment", "Value": parameters["Environment"]}],
    }
    existing = _stack(cfn, name)
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise BootstrapError(
            f"{name} failed to create before ({_failure_reasons(cfn, name)}); "
            f"delete it with `slipway bootstrap --stage {stage} --delete`, then retry"
        )
    try:
        if existing is None:
            cfn.create_stack(**request, OnFailure="ROLLBACK")
            waiter = "stack_create_complete"
        else:
            cfn.update_stack(**request)
            waiter = "stack_update_complete"
        say(f"Waiting for {name} ({waiter.removesuffix('_complete').replace('_', ' ')})…")
        cfn.get_waiter(waiter).wait(StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 360})
    except cfn.exceptions.ClientError as exc:
        if "No updates are to be performed" not in str(exc):
            raise BootstrapError(f"{name}: {exc} {_failure_reasons(cfn, name)}") from exc
        say(f"{name} is up to date")
    except Exception as exc:  # botocore's WaiterError
        raise BootstrapError(f"{name}: {exc} {_failure_reasons(cfn, name)}") from exc
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    data, origin = source_archive(project_dir)
    session.client("s3").put_object(Bucket=outputs["SourceBucketName"], Key=SOURCE_KEY, Body=data)
    say(f"Uploaded s3://{outputs['SourceBucketName']}/{SOURCE_KEY} ({len(data)} bytes, from {origin})")
    written = write_outputs(project_dir, stage, outputs)
    for variable, value in written.items():
        say(f"  .chalice/config.json stages.{stage}: {variable}={value}")
    say(f"Next: chalice deploy --stage {stage}")
    return outputs


def delete(project_dir: Path, stage: str, *, session=None, say: Callable[[str], None] = print) -> None:
    """Empty the source bucket (every version), delete the stack, forget its outputs."""
    import boto3

    session = session or boto3.session.Session()
    cfn = session.client("cloudformation")
    name = stack_name(stage)
    stack = _stack(cfn, name)
    if stack is not None:
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        bucket = outputs.get("SourceBucketName")
        if bucket:
            s3 = session.client("s3")
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                objects = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                ]
                if objects:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        cfn.delete_stack(StackName=name)
        say(f"Waiting for {name} to be deleted…")
        try:
            cfn.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 360})
        except Exception as exc:
            raise BootstrapError(f"{name}: {exc} {_failure_reasons(cfn, name)}") from exc
    else:
        say(f"{name} does not exist")
    forget_outputs(project_dir, stage)
