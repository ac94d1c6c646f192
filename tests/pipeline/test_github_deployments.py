"""The GitHub Deployment each run creates for the environment (issue 14): `in_progress` from
'Prepare deployment', then `success` with the environment's address, or `failure`; a successful
run makes the deployment it replaced `inactive`; without a token nothing is sent. Every request
the runs made is one GitHub's REST description allows (tests/aws/test_github_rest_description.py)."""

from slipway.faults import break_after
from slipway.harness import commit_id, deploy, new_content
from tests.github_rest import check


def deployment_of(emu, commit):
    [deployment] = [d for d in emu.github.deployments if d["sha"] == commit]
    return deployment


def no_problems(emu):
    return {name: problems for name, problems in check(emu.github.received).items() if problems}


def test_a_deployment_shows_in_progress_then_success_and_replaces_the_previous_one(emulator):
    first_commit, second_commit = commit_id(), commit_id()
    first = deploy(emulator, first_commit)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    deployment = deployment_of(emulator, first_commit)
    assert deployment["environment"] == "dev" and deployment["ref"] == first_commit
    assert deployment["payload"] == {"execution": first.output["deployment"]["id"]}
    assert deployment["production_environment"] is False and deployment["transient_environment"] is False
    assert emulator.github.deployment_states(deployment["id"]) == ["in_progress", "success"]
    in_progress, success = (s for s in emulator.github.deployment_statuses if s["deployment_url"] == deployment["url"])
    assert in_progress["description"] == "Deploying to dev"
    assert success["description"] == first.output["github"]["description"]
    assert success["log_url"].endswith("#/v2/executions/details/" + first.execution_arn)
    # The environment's address when it has one ($.ingress.url), else none.
    assert success["environment_url"] == ((first.output.get("ingress") or {}).get("url") or "")
    assert first.output["github"]["deployment_id"] == deployment["id"]
    assert first.output["github"]["deployment_state"] == "success" and "replaced" not in first.output["github"]

    second = deploy(emulator, second_commit)
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    replacing = deployment_of(emulator, second_commit)
    assert emulator.github.deployment_states(replacing["id"]) == ["in_progress", "success"]
    # GitHub's auto_inactive would not do it in a production environment: Slipway does it, always.
    assert emulator.github.deployment_states(deployment["id"]) == ["in_progress", "success", "inactive"]
    assert second.output["github"]["replaced"] == deployment["id"]
    assert no_problems(emulator) == {}


def test_a_failed_run_shows_failure_and_the_previous_deployment_stays_active(make_emulator):
    emu = make_emulator()
    first_commit = commit_id()
    assert deploy(emu, first_commit).status == "SUCCEEDED"
    break_after(emu, "swarm-join")
    commit = new_content(emu, commit_id())
    failed = deploy(emu, commit)
    assert failed.status == "FAILED" and failed.error == "NodesUnhealthy"
    deployment = deployment_of(emu, commit)
    assert emu.github.deployment_states(deployment["id"]) == ["in_progress", "failure"]
    [failure] = [s for s in emu.github.deployment_statuses if s["state"] == "failure"]
    assert failure["deployment_url"] == deployment["url"]
    assert failure["environment_url"] == "" and failure["description"].startswith("Deploy to dev failed")
    assert emu.github.deployment_states(deployment_of(emu, first_commit)["id"]) == ["in_progress", "success"]
    assert no_problems(emu) == {}


def test_a_refused_deployment_never_fails_the_run(emulator):
    emulator.github.deployment_answer = 403  # a token that may set commit statuses, not deployments
    run = deploy(emulator)
    assert run.status == "SUCCEEDED"
    assert run.output["github"]["reported"] is True and run.output["github"]["state"] == "success"
    assert "403" in run.output["github"]["deployment_why"] and "deployment_id" not in run.output["github"]
    assert emulator.github.deployments == []


def test_without_a_token_no_deployment_is_created(make_emulator):
    emu = make_emulator(extra_environment={"SLIPWAY_GITHUB_TOKEN_PARAMETER": ""})
    run = deploy(emu)
    assert run.status == "SUCCEEDED"
    assert "deployment_id" not in run.output["github"]
    assert [r for r in emu.github.received if "/deployments" in r["path"]] == []
    assert emu.github.deployments == []
