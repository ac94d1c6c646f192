"""The commit status a deployment sets on GitHub: pending when it starts, then its outcome, with
a link to the execution; GitHub refusing or failing never changes how the run ends."""

from chalicelib import naming
from tests.conftest import commit_id, deploy
from tests.pipeline.test_deploy import break_after, new_content, tagged_instances


def statuses(emu, commit):
    return [(s["state"], s["description"]) for s in emu.github.statuses if s["sha"] == commit]


def test_a_deployment_shows_pending_then_success_on_the_commit(emulator):
    commit = commit_id()
    run = deploy(emulator, commit)
    assert run.status == "SUCCEEDED"
    ami = run.output["image"]["ami_id"]
    assert statuses(emulator, commit) == [("pending", "Deploying to dev"),
                                          ("success", f"Deployed to dev: 1 node on {ami}")]
    for status in emulator.github.statuses:
        assert status["repository"] == "example/app"
        assert status["context"] == naming.status_context("dev")
        assert status["target_url"].endswith("#/v2/executions/details/" + run.execution_arn)
    assert run.output["github"] == {"reported": True, "state": "success",
                                    "description": f"Deployed to dev: 1 node on {ami}"}


def test_a_failed_replacement_shows_failure_and_why(make_emulator):
    emu = make_emulator()
    first = deploy(emu)
    break_after(emu, "docker swarm join")
    commit = new_content(emu, commit_id())
    second = deploy(emu, commit)
    assert second.status == "FAILED" and second.error == "NodesUnhealthy"  # the run's own error
    (pending, _), (state, description) = statuses(emu, commit)
    assert (pending, state) == ("pending", "failure")
    assert description.startswith("Deploy to dev failed, the previous state stays: NodesUnhealthy: ")
    assert {n.instance_id for n in tagged_instances(emu)} == set(first.output["nodes"]["current"])


def test_a_commit_that_cannot_be_prepared_still_gets_its_failure(emulator):
    commit = commit_id()
    emulator.github.trees[commit] = {"ansible": "1" * 40}  # no packer/ folder
    run = deploy(emulator, commit)
    assert run.status == "FAILED" and run.error == "InvalidInput"
    [(state, description)] = statuses(emulator, commit)
    assert state == "failure" and "InvalidInput: the commit has no packer/ folder" in description


def test_github_refusing_the_status_does_not_fail_the_deployment(emulator):
    emulator.github.status_answer = 403  # a token that may read but not write statuses
    run = deploy(emulator)
    assert run.status == "SUCCEEDED"
    assert run.output["github"]["reported"] is False and "403" in run.output["github"]["why"]
    assert emulator.github.statuses == []


def test_github_down_is_retried_then_the_deployment_ends_as_it_would(emulator):
    emulator.github.status_answer = 502
    run = deploy(emulator)
    assert run.status == "SUCCEEDED"
    assert run.output["github_error"]["Error"] == "TransientError"
    posts = [r for r in emulator.github.requests if r.startswith("POST ")]
    assert len(posts) == 1 + 5  # pending (not retried: news only), then the outcome and its 4 retries


def test_without_a_token_no_status_is_sent(make_emulator):
    emu = make_emulator(extra_environment={"SLIPWAY_GITHUB_TOKEN_PARAMETER": ""})
    run = deploy(emu)
    assert run.status == "SUCCEEDED"
    assert run.output["github"]["reported"] is False and "TOKEN_PARAMETER" in run.output["github"]["why"]
    assert [r for r in emu.github.requests if r.startswith("POST ")] == []
