"""Rehearse docs/deploy-to-aws.md's path against the emulator served over HTTP: the same two
commands (`slipway bootstrap --stage dev`, then `chalice deploy --stage dev`) run as separate
processes in a copy of this checkout, with only AWS_ENDPOINT_URL pointing them at moto. Then check
what exists and how it is wired, as an operator would with the AWS CLI.

What the emulator cannot rehearse is listed in docs/deploy-to-aws.md ("The rehearsal").
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

from slipway import PROJECT_DIR
from slipway.deploy import rehearsal
from slipway.statemachines import PLACEHOLDER

# Starts the emulator (served over HTTP, or its nodes): not in `make test-fast`.
pytestmark = pytest.mark.emulator

STAGE = "dev"
ACCOUNT = "123456789012"
REGION = "us-east-1"
BIN = Path(sys.executable).parent
COPIED = ["app.py", "requirements.txt", "chalicelib", "statemachines", "packer", "ansible"]


def _copy_checkout(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    (target / ".chalice").mkdir()
    for path in (PROJECT_DIR / ".chalice").glob("*"):
        if path.is_file():
            shutil.copy2(path, target / ".chalice" / path.name)
    # Chalice's cache of the dependency layer, when this checkout has one: saves a pip download.
    cache = PROJECT_DIR / ".chalice" / "deployments"
    if cache.is_dir():
        shutil.copytree(cache, target / ".chalice" / "deployments")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Run the documented commands once; yield (endpoint, checkout copy, their output)."""
    checkout = tmp_path_factory.mktemp("checkout")
    _copy_checkout(checkout)
    with rehearsal.aws_server() as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        output = _run([str(BIN / "slipway"), "bootstrap", "--stage", STAGE], checkout, env)
        output += _run([str(BIN / "chalice"), "deploy", "--stage", STAGE], checkout, env)
        yield endpoint, checkout, output


def _client(endpoint: str, service: str):
    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _deployed_functions(checkout: Path) -> dict[str, str]:
    """{Chalice's name: deployed function name} that `chalice deploy` recorded for the stage."""
    deployed = json.loads((checkout / ".chalice" / "deployed" / f"{STAGE}.json").read_text())
    return {
        r["name"]: r["lambda_arn"].rsplit(":", 1)[-1]
        for r in deployed["resources"]
        if r["resource_type"] == "lambda_function"
    }


def _app_functions(checkout: Path) -> set[str]:
    return set(_deployed_functions(checkout).values())


def test_bootstrap_writes_the_stack_outputs_into_the_stage_config(deployed):
    # Given the documented path ran, when reading the stage's config, then the functions get
    # the values that only exist after the stack, under the names settings.py reads.
    endpoint, checkout, _ = deployed
    variables = json.loads((checkout / ".chalice" / "config.json").read_text())["stages"][STAGE][
        "environment_variables"
    ]
    assert (
        variables["SLIPWAY_DEPLOY_STATE_MACHINE_ARN"]
        == f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:slipway-dev-deploy"
    )
    assert variables["SLIPWAY_BAKE_PROJECT"] == "slipway-dev-bake"
    assert variables["SLIPWAY_NODE_INSTANCE_PROFILE"] == "slipway-dev-node"
    # The name the Lambda policies scope s3:PutObject to (.chalice/policy-dev.json).
    assert variables["SLIPWAY_BAKE_BUCKET"] == f"slipway-dev-bake-{ACCOUNT}-{REGION}"
    # The table the Lambda policies scope the lease to (.chalice/policy-dev.json), as the stack made it.
    assert variables["SLIPWAY_LEASE_TABLE"] == "slipway-dev-leases"
    table = _client(endpoint, "dynamodb").describe_table(TableName="slipway-dev-leases")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "environment", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_every_function_is_deployed_with_its_own_role_and_the_stack_outputs(deployed):
    endpoint, checkout, _ = deployed
    lam, iam = _client(endpoint, "lambda"), _client(endpoint, "iam")
    functions = _deployed_functions(checkout)
    # Chalice names the API handler after the app and stage, every other function after itself.
    assert functions["api_handler"] == "slipway-dev"
    assert {
        "slipway-dev-prune",
        "slipway-dev-record_prune",
        "slipway-dev-prepare",
        "slipway-dev-terminate_nodes",
    } <= set(functions.values())
    policies = {}
    for chalice_name, name in functions.items():
        config = lam.get_function_configuration(FunctionName=name)
        # The bake and the builds download a commit's archive: they alone get more time and memory
        # (the builds' is the whole repository, re-zipped in memory).
        larger = {"start_bake": (512, 300), "start_builds": (1024, 300)}
        assert (config["MemorySize"], config["Timeout"]) == larger.get(chalice_name, (256, 60)), chalice_name
        variables = config["Environment"]["Variables"]
        assert variables["SLIPWAY_DEPLOY_STATE_MACHINE_ARN"].endswith(":stateMachine:slipway-dev-deploy")
        assert variables["SLIPWAY_BAKE_PROJECT"] == "slipway-dev-bake"
        role = config["Role"].rsplit("/", 1)[-1]
        assert role == f"slipway-dev-{chalice_name}"  # autogen_policy off: a role per function
        [policy_name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
        policies[chalice_name] = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    # The policy each role got is the file .chalice/config.json names for that function.
    expected = {
        "api_handler": "policy-dev-webhook.json",
        "prune": "policy-dev-prune.json",
        "record_prune": "policy-dev-prune.json",
        "prepare": "policy-dev.json",
        "report_stopped_run": "policy-dev-report.json",
    }
    for name, filename in expected.items():
        assert policies[name] == json.loads((checkout / ".chalice" / filename).read_text())


def test_each_function_has_a_log_group_with_the_retention(deployed):
    endpoint, checkout, _ = deployed
    groups = {
        g["logGroupName"]: g.get("retentionInDays")
        for g in _client(endpoint, "logs").describe_log_groups()["logGroups"]
    }
    # Every function writes to /aws/lambda/<its name>, the API handler included (slipway-dev,
    # whose group the stack makes: Chalice's own is named after api_handler, see resources.yaml).
    for name in _app_functions(checkout):
        assert groups.get(f"/aws/lambda/{name}") == 30, name
    for name in ("/aws/vendedlogs/states/slipway-dev", "/aws/codebuild/slipway-dev-bake", "/slipway/dev/prune"):
        assert groups.get(name) == 30, name


def test_the_prune_schedule_and_the_event_rules_target_their_functions(deployed):
    endpoint, _, _ = deployed
    events, lam = _client(endpoint, "events"), _client(endpoint, "lambda")
    rules = {r["Name"]: r for r in events.list_rules()["Rules"]}
    # Chalice names each rule <function>-event.
    assert rules["slipway-dev-prune-event"]["ScheduleExpression"] == "rate(1 day)"
    pattern = json.loads(rules["slipway-dev-record_prune-event"]["EventPattern"])
    assert pattern["detail-type"] == ["EC2 Command Status-change Notification"]
    stopped = json.loads(rules["slipway-dev-report_stopped_run-event"]["EventPattern"])
    assert stopped["detail-type"] == ["Step Functions Execution Status Change"]
    assert stopped["detail"]["status"] == ["ABORTED", "TIMED_OUT"]
    for rule, function in (
        ("slipway-dev-prune-event", "slipway-dev-prune"),
        ("slipway-dev-record_prune-event", "slipway-dev-record_prune"),
        ("slipway-dev-report_stopped_run-event", "slipway-dev-report_stopped_run"),
    ):
        [target] = events.list_targets_by_rule(Rule=rule)["Targets"]
        assert target["Arn"] == lam.get_function_configuration(FunctionName=function)["FunctionArn"]


def test_both_state_machines_invoke_deployed_functions_only_through_their_role(deployed):
    endpoint, checkout, _ = deployed
    sfn, iam, lam = (_client(endpoint, s) for s in ("stepfunctions", "iam", "lambda"))
    machines = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    assert set(machines) == {"slipway-dev-deploy", "slipway-dev-teardown"}
    deployed_arns = {lam.get_function_configuration(FunctionName=n)["FunctionArn"] for n in _app_functions(checkout)}
    invoked: set[str] = set()
    for arn in machines.values():
        machine = sfn.describe_state_machine(stateMachineArn=arn)
        assert not PLACEHOLDER.search(machine["definition"]), "a placeholder was not substituted"
        states = json.loads(machine["definition"])["States"]
        resources = {s["Resource"] for s in states.values() if s["Type"] == "Task"}
        assert resources <= deployed_arns, resources - deployed_arns
        invoked |= resources
        assert machine["roleArn"].endswith(":role/slipway-dev-states")
    [policy] = iam.list_role_policies(RoleName="slipway-dev-states")["PolicyNames"]
    document = iam.get_role_policy(RoleName="slipway-dev-states", PolicyName=policy)["PolicyDocument"]
    [invoke] = [s for s in document["Statement"] if s["Action"] == "lambda:InvokeFunction"]
    assert set(invoke["Resource"]) == invoked  # exactly the functions the definitions name


def test_the_bake_project_builds_the_uploaded_source_with_the_packer_buildspec(deployed):
    endpoint, _, _ = deployed
    [project] = _client(endpoint, "codebuild").batch_get_projects(names=["slipway-dev-bake"])["projects"]
    assert project["source"]["type"] == "S3"
    assert project["source"]["buildspec"] == "packer/buildspec.yml"
    assert project["serviceRole"].endswith(":role/slipway-dev-bake")
    assert project["environment"]["computeType"] == "BUILD_GENERAL1_SMALL"
    bucket, key = project["source"]["location"].split("/", 1)
    body = _client(endpoint, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    names = set(zipfile.ZipFile(io.BytesIO(body)).namelist())
    assert {"packer/buildspec.yml", "packer/packer.sha256", "ansible/swarm_node.yml"} <= names


def test_the_node_instance_profile_has_the_ssm_core_policy(deployed):
    endpoint, _, _ = deployed
    iam = _client(endpoint, "iam")
    profile = iam.get_instance_profile(InstanceProfileName="slipway-dev-node")["InstanceProfile"]
    [role] = profile["Roles"]
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonSSMManagedInstanceCore"]


def test_the_webhook_route_is_served_by_the_api_handler(deployed):
    endpoint, _, output = deployed
    apigw = _client(endpoint, "apigateway")
    [api] = [a for a in apigw.get_rest_apis()["items"] if a["name"] == "slipway"]
    resources = {r["path"]: r for r in apigw.get_resources(restApiId=api["id"])["items"]}
    method = resources["/github/webhook"]["resourceMethods"]["POST"]
    integration = apigw.get_integration(
        restApiId=api["id"], resourceId=resources["/github/webhook"]["id"], httpMethod="POST"
    )
    assert integration["type"].upper() == "AWS_PROXY"  # moto keeps Swagger's spelling
    assert integration["uri"].endswith(":function:slipway-dev/invocations")
    assert method is not None
    assert "Rest API URL" in output  # what docs/deploy-to-aws.md tells the operator to copy into GitHub


def test_a_second_run_of_both_commands_changes_nothing(deployed):
    # Given a deployed stage, when the operator runs the same two commands again (an upgrade),
    # then both succeed and the config is unchanged.
    endpoint, checkout, _ = deployed
    before = (checkout / ".chalice" / "config.json").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
    )
    # (AWS answers an unchanged stack with "No updates are to be performed"; moto updates it.)
    _run([str(BIN / "slipway"), "bootstrap", "--stage", STAGE], checkout, env)
    _run([str(BIN / "chalice"), "deploy", "--stage", STAGE], checkout, env)
    assert (checkout / ".chalice" / "config.json").read_text() == before


def test_the_bake_runs_in_the_stacks_own_network_with_its_own_profile(deployed):
    # The project gives Packer the stack's subnet, security group and instance profile; they exist,
    # the group lets nothing in, and none of them carries the environment's tag (teardown's).
    endpoint, _, _ = deployed
    [project] = _client(endpoint, "codebuild").batch_get_projects(names=["slipway-dev-bake"])["projects"]
    variables = {v["name"]: v["value"] for v in project["environment"]["environmentVariables"]}
    assert "PKR_VAR_kms_key_id" not in variables  # the stage has no key of its own
    ec2, iam = _client(endpoint, "ec2"), _client(endpoint, "iam")
    [subnet] = ec2.describe_subnets(SubnetIds=[variables["PKR_VAR_subnet_id"]])["Subnets"]
    [group] = ec2.describe_security_groups(GroupIds=[variables["PKR_VAR_security_group_id"]])["SecurityGroups"]
    assert group["VpcId"] == subnet["VpcId"] and group["IpPermissions"] == []
    # (Its egress, HTTPS and HTTP only, is checked on the template: moto's CloudFormation ignores
    # SecurityGroupEgress and keeps the default allow-all rule, which CloudFormation replaces.)
    [vpc] = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"]
    assert not vpc["IsDefault"]
    for resource in (subnet, group, vpc):
        assert "slipway:environment" not in {t["Key"] for t in resource.get("Tags", [])}
    profile = iam.get_instance_profile(InstanceProfileName=variables["PKR_VAR_iam_instance_profile"])["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["slipway-dev-bake-instance"]
    [policy] = iam.list_role_policies(RoleName="slipway-dev-node")["PolicyNames"]
    sids = {
        s["Sid"]
        for s in iam.get_role_policy(RoleName="slipway-dev-node", PolicyName=policy)["PolicyDocument"]["Statement"]
    }
    assert {
        "WritePruneOutput",
        "FindThePruneLogGroup",
        "ReadTheStacksSecrets",
        "NoOtherParameters",
        "PullImages",
    } <= sids
