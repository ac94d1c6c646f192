"""`slipway bootstrap`: deploy what `chalice deploy` does not (.chalice/resources.yaml) as one
CloudFormation stack, and write its outputs into the stage's environment_variables in
.chalice/config.json, which `chalice deploy` then gives the functions.

The template is rendered first: CloudFormation cannot read local files, so each state machine's
definition (statemachines/*.asl.json) is put into it, with one DefinitionSubstitution per
${XxxFunctionArn} placeholder pointing at the name Chalice gives that function, and the state
machines' role may invoke exactly those functions. `make package` writes the same rendering.

The rendering is larger than CloudFormation takes inline (TemplateBody, 51,200 bytes), so it goes
through the stack's own source bucket (TemplateURL): a new stack is first created with that bucket
alone (the same resource, so the update keeps it), then updated to the whole template.

`resolve` evaluates the template's intrinsic functions for given names and ids, as CloudFormation
would: the emulator creates the node role from it, and the policy tests read concrete ARNs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

from slipway import statemachines
from slipway.statemachines import PLACEHOLDER

TEMPLATE = Path(".chalice") / "resources.yaml"
CONFIG = Path(".chalice") / "config.json"
INVOKE_SID = "InvokeTheTaskFunctions"
# CloudFormation's limits for a template sent inline (TemplateBody) and read from S3 (TemplateURL).
MAX_TEMPLATE_BODY = 51_200
MAX_TEMPLATE_URL = 1_000_000
# The rendered template, in the source bucket (versioned: the bucket's lifecycle forgets old ones).
TEMPLATE_KEY = "templates/resources.json"
# What a new stack is created with first: the bucket the whole template is then read from.
SEED_RESOURCES = ("SourceBucket", "SourceBucketPolicy")
SOURCE_KEY = "source.zip"
SOURCE_FOLDERS = ("packer", "ansible")
# Stack output -> the variable chalicelib/settings.py reads.
OUTPUT_VARIABLES = {
    "DeployStateMachineArn": "SLIPWAY_DEPLOY_STATE_MACHINE_ARN",
    "BakeProjectName": "SLIPWAY_BAKE_PROJECT",
    "NodeInstanceProfileName": "SLIPWAY_NODE_INSTANCE_PROFILE",
    "SourceBucketName": "SLIPWAY_BAKE_BUCKET",
    "LeaseTableName": "SLIPWAY_LEASE_TABLE",
    "BuildProjectName": "SLIPWAY_BUILD_PROJECT",
    # Not a stack output: the content key of the node image source bootstrap uploads (installation_image).
    "NodeImageKey": "SLIPWAY_NODE_IMAGE_KEY",
}


class BootstrapError(Exception):
    """The stack could not be deployed or removed; the message says why."""


def stack_name(stage: str) -> str:
    return f"slipway-{stage}-resources"


def load_config(project_dir: Path) -> dict:
    return json.loads((project_dir / CONFIG).read_text())


def load_template(project_dir: Path) -> dict:
    """.chalice/resources.yaml as written (not rendered)."""
    # libyaml's safe loader when PyYAML has it (a tenth of the time; every emulator start reads it).
    return yaml.load((project_dir / TEMPLATE).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def stage_parameters(config: dict, stage: str, region: str | None = None) -> dict[str, str]:
    """The template's parameters for a stage of .chalice/config.json. SLIPWAY_KMS_KEY_ARN, the
    stage's own key, becomes KmsKeyArn (checked as the functions check it, when the region is known)."""
    if stage not in config.get("stages", {}):
        raise BootstrapError(f"no stage {stage!r} in .chalice/config.json")
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    parameters = {"Stage": stage, "Environment": env.get("SLIPWAY_ENVIRONMENT", stage)}
    retention = config["stages"][stage].get("log_retention_in_days", config.get("log_retention_in_days"))
    if retention:
        parameters["LogRetentionInDays"] = str(retention)
    key = env.get("SLIPWAY_KMS_KEY_ARN", "").strip()
    if key:
        from chalicelib.errors import ConfigurationError
        from chalicelib.setting_values import kms_key_arn

        try:
            parameters["KmsKeyArn"] = kms_key_arn(key, region or key.split(":")[3])
        except (ConfigurationError, IndexError) as exc:
            raise BootstrapError(f"stage {stage}: {exc}") from exc
    return parameters


def render(project_dir: Path, app_name: str = "slipway") -> dict:
    """The template as deployed: definitions and the exact functions the state machines invoke."""
    template = copy.deepcopy(load_template(project_dir))
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
                f":function:{app_name}-${{Stage}}-{statemachines.function_for(placeholder)}"
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


def template_body(template: dict, limit: int = MAX_TEMPLATE_URL) -> str:
    """The template as sent; over CloudFormation's limit (for a template read from S3 unless told
    otherwise) it is refused here rather than by CloudFormation."""
    body = json.dumps(template, separators=(",", ":"))
    if len(body) > limit:
        raise BootstrapError(
            f"the rendered template is {len(body)} bytes, over CloudFormation's {limit} for a template "
            + ("sent inline" if limit == MAX_TEMPLATE_BODY else "read from S3")
        )
    return body


def seed_template(template: dict) -> dict:
    """What a new stack is created with: the whole template's parameters (the same are passed) and
    its source bucket exactly as the whole template defines it (so the update keeps that bucket)."""
    return {
        "AWSTemplateFormatVersion": template["AWSTemplateFormatVersion"],
        "Description": template["Description"],
        "Parameters": template["Parameters"],
        "Resources": {name: template["Resources"][name] for name in SEED_RESOURCES},
        "Outputs": {"SourceBucketName": template["Outputs"]["SourceBucketName"]},
    }


# --- intrinsic functions, as CloudFormation evaluates them -------------------------------------

_SUB = re.compile(r"\$\{([^}!]+)\}")


def example_ids(template: dict, parameters: Mapping[str, str], account: str, region: str) -> dict[str, Any]:
    """Physical ids and attributes for every resource, as CloudFormation would name them: given
    names where the template gives one (resolved), made-up ids (subnet-…, sg-…) otherwise.
    Keys: the logical id (what Ref gives) and "<logical id>.<attribute>" (what GetAtt gives)."""
    context: dict[str, Any] = {}
    partition = "aws"

    def name(properties: dict, key: str, logical: str) -> str:
        value = properties.get(key)
        return str(resolve(value, context, parameters, account, region)) if value is not None else logical

    for logical, resource in template["Resources"].items():
        kind, properties = resource["Type"], resource.get("Properties", {})
        made_up = hashlib.sha256(logical.encode()).hexdigest()[:17]
        if kind == "AWS::S3::Bucket":
            bucket = name(properties, "BucketName", logical.lower())
            context[logical] = bucket
            context[f"{logical}.Arn"] = f"arn:{partition}:s3:::{bucket}"
        elif kind == "AWS::Logs::LogGroup":
            group = name(properties, "LogGroupName", logical)
            context[logical] = group
            context[f"{logical}.Arn"] = f"arn:{partition}:logs:{region}:{account}:log-group:{group}:*"
        elif kind == "AWS::IAM::Role":
            role = name(properties, "RoleName", logical)
            context[logical] = role
            context[f"{logical}.Arn"] = f"arn:{partition}:iam::{account}:role/{role}"
        elif kind == "AWS::IAM::InstanceProfile":
            profile = name(properties, "InstanceProfileName", logical)
            context[logical] = profile
            context[f"{logical}.Arn"] = f"arn:{partition}:iam::{account}:instance-profile/{profile}"
        elif kind == "AWS::EC2::SecurityGroup":
            context[logical] = context[f"{logical}.GroupId"] = f"sg-{made_up}"
        elif kind.startswith("AWS::EC2::"):
            prefix = {"AWS::EC2::VPC": "vpc", "AWS::EC2::Subnet": "subnet", "AWS::EC2::RouteTable": "rtb"}
            context[logical] = f"{prefix.get(kind, 'id')}-{made_up}"
        else:
            context[logical] = name(properties, "Name", logical)
    return context


def resolve(  # noqa: C901 - one branch per CloudFormation intrinsic function
    value: Any,
    ids: Mapping[str, Any],
    parameters: Mapping[str, str],
    account: str,
    region: str,
    conditions: Mapping[str, bool] | None = None,
) -> Any:
    """`value` with Ref, Fn::Sub, Fn::GetAtt, Fn::If and Fn::Join evaluated (AWS::NoValue drops
    the key or list item, as CloudFormation does). An unknown function or name raises KeyError."""
    pseudo = {
        "AWS::Partition": "aws",
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::URLSuffix": "amazonaws.com",
    }
    no_value = object()

    def ref(name: str) -> Any:
        for source in (pseudo, parameters, ids):
            if name in source:
                return source[name]
        raise KeyError(f"Ref to {name!r}: neither a parameter, a pseudo parameter nor a resource")

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (walk(item) for item in node) if v is not no_value]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Ref":
                return no_value if argument == "AWS::NoValue" else ref(argument)
            if function == "Fn::GetAtt":
                logical, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return ids[f"{logical}.{attribute}"]
            if function == "Fn::Sub":
                text, local = (argument, {}) if isinstance(argument, str) else (argument[0], walk(argument[1]))

                def fill(match: re.Match[str]) -> str:
                    key = match.group(1)
                    if key in local:
                        return str(local[key])
                    return str(ids[key] if "." in key else ref(key))

                return _SUB.sub(fill, text)
            if function == "Fn::If":
                condition, if_true, if_false = argument
                if conditions is None or condition not in conditions:
                    raise KeyError(f"Fn::If on {condition!r}: its value was not given")
                return walk(if_true if conditions[condition] else if_false)
            if function == "Fn::Join":
                separator, items = argument
                return separator.join(str(v) for v in walk(items))
            if function.startswith("Fn::"):
                raise KeyError(f"{function} is not evaluated here")
        return {k: v for k, v in ((k, walk(v)) for k, v in node.items()) if v is not no_value}

    return walk(value)


def conditions(template: dict, parameters: Mapping[str, str]) -> dict[str, bool]:
    """The template's conditions for these parameters (Fn::Equals, Fn::Not, Fn::And, Fn::Or)."""
    defaults = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    values = defaults | dict(parameters)

    def truth(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Fn::Equals":
                left, right = (truth(a) for a in argument)
                return str(left) == str(right)
            if function == "Fn::Not":
                return not truth(argument[0])
            if function == "Fn::And":
                return all(truth(a) for a in argument)
            if function == "Fn::Or":
                return any(truth(a) for a in argument)
            if function == "Ref":
                return values[argument]
            if function == "Condition":
                return truth(template["Conditions"][argument])
        return node

    return {name: bool(truth(node)) for name, node in template.get("Conditions", {}).items()}


def role_policies(
    template: dict,
    role: str,
    parameters: Mapping[str, str],
    account: str,
    region: str,
    ids: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A role as CloudFormation would create it: its name, trust policy, managed policy ARNs and
    every policy document it gets (its own Policies and each AWS::IAM::Policy naming it whose
    Condition holds), all resolved. `ids` overrides example_ids' made-up ids."""
    values = {k: str(v["Default"]) for k, v in template.get("Parameters", {}).items() if "Default" in v} | dict(
        parameters
    )
    truths = conditions(template, values)
    known = example_ids(template, values, account, region) | dict(ids or {})

    def evaluate(node: Any) -> Any:
        return resolve(node, known, values, account, region, truths)

    properties = template["Resources"][role]["Properties"]
    documents = {p["PolicyName"]: evaluate(p["PolicyDocument"]) for p in properties.get("Policies", [])}
    for resource in template["Resources"].values():
        attached = resource.get("Properties", {}).get("Roles", [])
        created = truths.get(resource.get("Condition", ""), "Condition" not in resource)
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in attached and created:
            documents[evaluate(resource["Properties"]["PolicyName"])] = evaluate(
                resource["Properties"]["PolicyDocument"]
            )
    return {
        "RoleName": evaluate(properties["RoleName"]),
        "AssumeRolePolicyDocument": evaluate(properties["AssumeRolePolicyDocument"]),
        "ManagedPolicyArns": evaluate(properties.get("ManagedPolicyArns", [])),
        "Policies": documents,
    }


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


def installation_image(project_dir: Path) -> tuple[str, bytes]:
    """The installation's node image source: its content key (as 'Prepare deployment' keys a
    commit's packer/ and ansible/: the git tree ids, here of the folders as they are on disk) and
    the zip the bake runs, for the bake bucket's sources/<key>.zip. A repository that has neither
    folder deploys on this image."""
    from chalicelib import plans
    from slipway.gittree import folders_zip, working_tree_id

    trees = {folder: working_tree_id(project_dir / folder) for folder in plans.IMAGE_FOLDERS}
    return plans.image_key(trees), folders_zip(project_dir, plans.IMAGE_FOLDERS)


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
    from slipway.gittree import folders_zip

    return folders_zip(project_dir, SOURCE_FOLDERS), "the files on disk"


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


def _apply(cfn, name: str, request: dict, *, create: bool, say: Callable[[str], None]) -> None:
    """Create or update the stack and wait for it; an update that changes nothing is done."""
    try:
        if create:
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


def _outputs(cfn, name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def deploy(project_dir: Path, stage: str, *, session=None, say: Callable[[str], None] = print) -> dict[str, str]:
    """Create or update the stack, upload the bake's source, write the outputs into config.json."""
    import boto3

    session = session or boto3.session.Session()
    config = load_config(project_dir)
    parameters = stage_parameters(config, stage, session.region_name)
    template = render(project_dir, config.get("app_name", "slipway"))
    body = template_body(template)
    cfn = session.client("cloudformation")
    s3 = session.client("s3")
    name = stack_name(stage)
    identity = session.client("sts").get_caller_identity()
    say(f"Stack {name} in account {identity['Account']}, region {session.region_name}")
    request = {
        "StackName": name,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "Capabilities": ["CAPABILITY_NAMED_IAM"],
        # Not slipway:environment: CloudFormation gives a stack's tags to every resource it makes,
        # and teardown removes what carries that tag; the resources that belong to the
        # environment carry it themselves (.chalice/resources.yaml).
        "Tags": [{"Key": "slipway:stack", "Value": name}],
    }
    existing = _stack(cfn, name)
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise BootstrapError(
            f"{name} failed to create before ({_failure_reasons(cfn, name)}); "
            f"delete it with `slipway bootstrap --stage {stage} --delete`, then retry"
        )
    if existing is None:
        say(f"Creating {name} with its source bucket first: the whole template is read from there")
        seed = template_body(seed_template(template), MAX_TEMPLATE_BODY)
        _apply(cfn, name, {**request, "TemplateBody": seed}, create=True, say=say)
    bucket = _outputs(cfn, name)["SourceBucketName"]
    s3.put_object(Bucket=bucket, Key=TEMPLATE_KEY, Body=body.encode())
    url = f"https://{bucket}.s3.{session.region_name}.amazonaws.com/{TEMPLATE_KEY}"
    _apply(cfn, name, {**request, "TemplateURL": url}, create=False, say=say)
    outputs = _outputs(cfn, name)
    data, origin = source_archive(project_dir)
    s3.put_object(Bucket=outputs["SourceBucketName"], Key=SOURCE_KEY, Body=data)
    say(f"Uploaded s3://{outputs['SourceBucketName']}/{SOURCE_KEY} ({len(data)} bytes, from {origin})")
    key, image = installation_image(project_dir)
    s3.put_object(Bucket=outputs["SourceBucketName"], Key=f"sources/{key}.zip", Body=image)
    say(f"Uploaded the node image source s3://{outputs['SourceBucketName']}/sources/{key}.zip ({len(image)} bytes)")
    outputs = {**outputs, "NodeImageKey": key}
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
