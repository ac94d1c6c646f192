"""The ASL documents: placeholders, retries, catches and names a person can read."""

import json

import pytest

from slipway import statemachines
from slipway.emulator import load_app


def machine(name):
    return json.loads(statemachines.path(name).read_text())


def tasks(definition):
    return {n: s for n, s in definition["States"].items() if s["Type"] == "Task"}


def test_render_fills_placeholders_and_leaves_context_paths_alone():
    text = '{"a": "${FooFunctionArn}", "b.$": "$$.Execution.Name", "c.$": "$.x"}'
    assert json.loads(statemachines.render(text, {"FooFunctionArn": "arn:1"})) == {
        "a": "arn:1", "b.$": "$$.Execution.Name", "c.$": "$.x"}


def test_render_refuses_a_missing_substitution():
    with pytest.raises(KeyError, match="BarFunctionArn"):
        statemachines.render('{"a": "${BarFunctionArn}"}', {})


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_every_placeholder_names_a_function_of_the_app(name):
    app = load_app().app
    known = {statemachines.function_placeholder(f.name) for f in app.pure_lambda_functions}
    assert statemachines.placeholders(statemachines.path(name).read_text()) <= known


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_every_task_retries_transient_errors_and_catches_into_a_fail_state(name):
    definition = machine(name)
    for state_name, state in tasks(definition).items():
        retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
        assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= retried, state_name
        assert all(r["IntervalSeconds"] >= 1 for r in state["Retry"])
        catch = state["Catch"][0]
        assert catch["ErrorEquals"] == ["States.ALL"], state_name
        if state["Resource"] == REPORT:
            # Telling GitHub never changes how the run ends: success stays success.
            assert catch["Next"] == state["Next"], state_name
            continue
        reachable = _reachable(definition, catch["Next"])
        kinds = {definition["States"][n]["Type"] for n in reachable}
        assert "Fail" in kinds and "Succeed" not in kinds, state_name


REPORT = "${ReportOutcomeFunctionArn}"


def test_the_queue_state_is_the_one_after_a_good_prepare():
    # A queued deploy is only skipped for a newer one that has entered this state (steps.wait_turn).
    from chalicelib import naming

    for name in ("deploy", "teardown"):
        states = machine(name)["States"]
        assert states[naming.QUEUE_STATE]["Resource"] == "${WaitTurnFunctionArn}"
    assert machine("deploy")["States"]["Prepare deployment"]["Next"] == naming.QUEUE_STATE


def test_a_run_times_out_only_after_the_longest_default_wait_in_the_queue():
    # TimeoutSeconds is the backstop for a run that never ends (reported by report_stopped_run);
    # it must leave a queued run its whole default wait and then time for a deployment.
    from chalicelib.settings import from_environment

    defaults = from_environment({"SLIPWAY_ENVIRONMENT": "dev", "AWS_REGION": "eu-west-1"})
    for name in ("deploy", "teardown"):
        timeout = machine(name)["TimeoutSeconds"]
        assert timeout >= defaults.queue_max_checks * defaults.poll_seconds + 2 * 3600, name


def test_every_deployment_ends_by_telling_github():
    # Each way into a terminal state of the deploy machine goes through a report task, so the
    # commit's status never stays "pending" (a run that fails before it knows its commit excepted).
    definition = machine("deploy")
    states = definition["States"]
    terminal = {n for n, s in states.items() if s["Type"] in ("Succeed", "Fail")}
    for name, state in states.items():
        targets = [state.get("Next"), state.get("Default")] + [c["Next"] for c in state.get("Choices", [])] \
            + [c["Next"] for c in state.get("Catch", [])]
        if set(targets) & terminal:
            assert state.get("Resource") == REPORT, f"{name} ends the run without telling GitHub"
    reports = {n: s["Parameters"]["outcome"] for n, s in states.items() if s.get("Resource") == REPORT}
    assert {states[states[n]["Next"]]["Type"] + ":" + o for n, o in reports.items()} == {
        "Succeed:success", "Succeed:superseded", "Fail:failure", "Fail:error"}


def _reachable(definition, start):
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = definition["States"][name]
        todo += [n for n in [state.get("Next"), state.get("Default")] if n]
        todo += [c["Next"] for c in state.get("Choices", [])]
        todo += [c["Next"] for c in state.get("Catch", [])]
    return seen


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_state_names_are_sentences_not_ids(name):
    for state_name in machine(name)["States"]:
        assert " " in state_name and state_name[0].isupper(), state_name
