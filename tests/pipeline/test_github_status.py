"""The commit status a deployment sets on GitHub: pending when it starts, then its outcome, with
a link to the execution; GitHub refusing or failing never changes how the run ends."""

from chalicelib import naming
from slipway.faults import break_after
from slipway.harness import WHOLE_SECONDS, commit_id, deploy, new_content, stop_in, tagged_instances


def statuses(emu, commit):
    return [(s["state"], s["description"]) for s in emu.github.statuses if s["sha"] == commit]


def test_a_deployment_shows_pending_then_success_on_the_commit(emulator):
    commit = commit_id()
    run = deploy(emulator, commit)
    assert run.status == "SUCCEEDED"
    url = run.output["ingress"]["url"]  # the environment's address, the load balancer's
    assert statuses(emulator, commit) == [
        ("pending", "Deploying to dev"),
        ("success", f"Deployed to dev at {url}: 1 node; no stack file (stack.yml): nodes only"),
    ]
    for status in emulator.github.statuses:
        assert status["repository"] == "example/app"
        assert status["context"] == naming.status_context("dev")
        assert status["target_url"].endswith("#/v2/executions/details/" + run.execution_arn)
    [deployment] = emulator.github.deployments  # and the run's GitHub Deployment (test_github_deployments.py)
    assert run.output["github"] == {
        "reported": True,
        "state": "success",
        "description": f"Deployed to dev at {url}: 1 node; no stack file (stack.yml): nodes only",
        "deployment_id": deployment["id"],
        "deployment_state": "success",
    }


def test_a_failed_replacement_shows_failure_and_why(make_emulator):
    emu = make_emulator()
    first = deploy(emu)
    break_after(emu, "swarm-join")
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
    posts = [r for r in emulator.github.requests if r.startswith("POST ") and "/statuses/" in r]
    assert len(posts) == 1 + 5  # pending (not retried: news only), then the outcome and its 4 retries
    # The commit status fails first each time: the deployment stays as 'Prepare deployment' set it.
    [deployment] = emulator.github.deployments
    assert emulator.github.deployment_states(deployment["id"]) == ["in_progress"]


def test_without_a_token_no_status_is_sent(make_emulator):
    emu = make_emulator(extra_environment={"SLIPWAY_GITHUB_TOKEN_PARAMETER": ""})
    run = deploy(emu)
    assert run.status == "SUCCEEDED"
    assert run.output["github"]["reported"] is False and "TOKEN_PARAMETER" in run.output["github"]["why"]
    assert [r for r in emu.github.requests if r.startswith("POST ")] == []


def test_a_deploy_stopped_from_the_console_does_not_stay_pending(make_emulator):
    # Stopping a run runs none of its states: Step Functions' status-change event reaches
    # report_stopped_run, which marks the commit not deployed instead of leaving it pending.
    from slipway.harness import deliver_push

    emu = make_emulator(**WHOLE_SECONDS)
    commit = commit_id()
    run = stop_in(emu, deliver_push(emu, commit)[1]["execution_arn"], "Wait for nodes")
    assert run.status == "ABORTED"
    assert statuses(emu, commit) == [
        ("pending", "Deploying to dev"),
        ("error", "Deploy to dev stopped before it ended: not deployed; the next deployment cleans up after it"),
    ]
    [target] = [s["target_url"] for s in emu.github.statuses if s["state"] == "error"]
    assert target.endswith("#/v2/executions/details/" + run.execution_arn)
    # Its GitHub Deployment, found by the execution its payload names, is `error` too.
    [deployment] = [d for d in emu.github.deployments if d["sha"] == commit]
    assert emu.github.deployment_states(deployment["id"]) == ["in_progress", "error"]
    [handled] = [r for name, r in emu.results if name.endswith("-report_stopped_run")]
    assert handled["deployment_id"] == deployment["id"] and handled["deployment_state"] == "error"


def test_stopping_a_teardown_or_another_stages_deploy_tells_github_nothing(make_emulator):
    import json

    from chalicelib.steps import report

    emu = make_emulator(**WHOLE_SECONDS)
    assert deploy(emu).status == "SUCCEEDED"
    sent = len(emu.github.statuses)
    # The teardown's terminations tell `heal` nothing: stopped with the deployed record still there,
    # its nodes gone, a heal would start and take the lease the stopped teardown held.
    emu.instances_changed = lambda *args: None
    arn = emu.client("stepfunctions").start_execution(
        stateMachineArn=emu.arns["teardown"], input=json.dumps({"environment": emu.environment})
    )["executionArn"]
    assert stop_in(emu, arn, "Terminate nodes").status == "ABORTED"
    handled = [r for name, r in emu.results if name.endswith("-report_stopped_run")]
    assert handled == [{"lease": "released"}]  # GitHub hears nothing; the teardown's lease is given up
    other = {
        "detail": {
            "status": "ABORTED",
            "input": json.dumps({"commit": commit_id(), "repository": "a/b"}),
            "stateMachineArn": emu.arns["deploy"].replace("slipway-dev-deploy", "slipway-prod-deploy"),
        }
    }
    assert report.report_stopped_run(other) == {"ignored": "not one of this environment's state machines"}
    assert report.report_stopped_run({"detail": {"status": "SUCCEEDED"}}) == {"ignored": "status SUCCEEDED"}
    assert report.report_stopped_run(
        {"detail": {"status": "ABORTED", "stateMachineArn": emu.arns["deploy"], "input": "[1]"}}
    ) == {"ignored": "the execution's input is not a JSON object"}
    assert len(emu.github.statuses) == sent
