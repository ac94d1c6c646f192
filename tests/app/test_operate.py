"""`slipway deploy COMMIT` and `slipway runs` against the emulated AWS (in this process, as the
shell's boto3 would reach it): a commit of the repository the environment runs is deployed again
(after an environment variable changed, or as a rollback), a bad commit is refused with the
webhook's message, a missing environment is one line and exit 1."""

from __future__ import annotations

import json

import pytest

from chalicelib import naming
from slipway.cli import operate
from slipway.harness import application_repository, deploy, follow_run, git
from slipway.harness import commit_files as commit

pytestmark = pytest.mark.emulator

COMPOSE = "services:\n  web:\n    image: nginx:1.27\n    environment: {TZ: '${TZ}'}\n"


@pytest.fixture
def app_repo(tmp_path):
    return application_repository(tmp_path / "app", {"compose.yaml": COMPOSE})


@pytest.fixture
def app(make_emulator, app_repo):
    return make_emulator(repo=app_repo, node_count=1, extra_environment={"SLIPWAY_STACK_FILE": ""})


def started(capsys) -> str:
    """The execution `slipway deploy --json` printed (the functions' metrics lines share stdout here)."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"execution_arn"')]
    return json.loads(lines[-1])["execution_arn"]


def test_a_commit_refused_for_a_variable_deploys_once_the_variable_is_set(app, app_repo, capsys):
    head = git(app_repo, "rev-parse", "HEAD")
    refused = deploy(app, head, repository="me/app")
    assert refused.status == "FAILED" and "${TZ} has no value" in refused.cause
    # A first run that failed recorded nothing: the repository is named
    assert (
        operate.deploy(head, environment=app.environment, repository=None, endpoint_url=None, region=None, as_json=True)
        == 1
    )
    assert "has deployed nothing yet: name the repository" in capsys.readouterr().err
    app.client("ssm").put_parameter(Name=f"{naming.variables_path(app.environment)}/TZ", Value="UTC", Type="String")
    code = operate.deploy(
        head, environment=app.environment, repository="me/app", endpoint_url=None, region=None, as_json=True
    )
    assert code == 0
    run = follow_run(app, started(capsys))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["deployment"]["commit"] == head
    # Then a later commit, and the earlier one again without naming the repository: the rollback
    later = commit(app_repo, {"compose.yaml": COMPOSE.replace("1.27", "1.28")})
    assert deploy(app, later, repository="me/app").status == "SUCCEEDED"
    assert (
        operate.deploy(head, environment=app.environment, repository=None, endpoint_url=None, region=None, as_json=True)
        == 0
    )
    back = follow_run(app, started(capsys))
    assert back.status == "SUCCEEDED" and back.output["deployment"]["repository"] == "me/app"
    assert [s["image"] for s in back.output["rollout"]["services"]] == ["nginx:1.27"]
    # And `slipway runs` lists them, newest first, with the failure's first line
    capsys.readouterr()
    assert operate.runs(environment=app.environment, endpoint_url=None, region=None, as_json=True, limit=10) == 0
    listed = json.loads(capsys.readouterr().out)
    deploys = [r for r in listed if r["kind"] == "deploy"]
    assert len(deploys) == 4 and {r["commit"] for r in deploys} == {head, later}
    failed = [r for r in deploys if r["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["error"] == "StackInvalid" and "${TZ} has no value" in failed[0]["cause"]


@pytest.mark.parametrize(
    ("commit_id", "message"),
    [("abc123", "commit"), ("z" * 40, "commit")],
)
def test_a_bad_commit_is_refused_with_the_webhooks_message(app, capsys, commit_id, message):
    code = operate.deploy(
        commit_id, environment=app.environment, repository="me/app", endpoint_url=None, region=None, as_json=False
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("slipway deploy: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_environment_that_does_not_exist_is_one_line(app, capsys):
    code = operate.runs(environment="nope", endpoint_url=None, region=None, as_json=False, limit=5)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("slipway runs: no environment nope here: no state machine slipway-nope-deploy")
