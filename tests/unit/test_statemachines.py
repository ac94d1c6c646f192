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
        "a": "arn:1",
        "b.$": "$$.Execution.Name",
        "c.$": "$.x",
    }


def test_render_refuses_a_missing_substitution():
    with pytest.raises(KeyError, match="BarFunctionArn"):
        statemachines.render('{"a": "${BarFunctionArn}"}', {})


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_every_placeholder_names_a_function_of_the_app(name):
    app = load_app().app
    known = {statemachines.function_placeholder(f.name) for f in app.pure_lambda_functions}
    assert statemachines.placeholders(statemachines.path(name).read_text()) <= known


# Step Functions reports a failed Lambda invoke as Lambda.<Name>: these are the service errors its
# guide ("Handle Lambda service exceptions") names. Lambda.ClientExecutionTimeoutException is left
# out on purpose: the invoke timed out on the caller's side, so the function may still be running,
# and a retry would run a step alongside itself; the Catch ends the run instead.
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)

# The one Retry block of every Task: Lambda's transient service errors and chalicelib's TransientError
# (an AWS or GitHub fault worth trying again); every other error is final and goes to the Catch.
# ASL cannot share a block, so each Task carries this JSON as it is.
TRANSIENT_RETRY = [
    {
        "ErrorEquals": [*LAMBDA_SERVICE_ERRORS, "TransientError"],
        "IntervalSeconds": 2,
        "MaxAttempts": 4,
        "BackoffRate": 2.0,
    }
]
RETRY = {"deploy": TRANSIENT_RETRY, "teardown": TRANSIENT_RETRY}

# Tasks whose Retry differs from their machine's, by state name, with the reason. None so far: every
# step is written to be run again after a transient fault (docs/pipeline.md, "Failures and faults").
RETRY_EXCEPTIONS: dict[str, dict[str, str]] = {"deploy": {}, "teardown": {}}

# Tasks without a Catch, by state name, with the reason. None: an error anywhere must reach the
# undo, GitHub or a Fail state, never end the run where it happened.
NO_CATCH: dict[str, dict[str, str]] = {"deploy": {}, "teardown": {}}


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_every_task_has_its_machine_s_one_retry_block(name):
    definition = machine(name)
    exceptions = RETRY_EXCEPTIONS[name]
    assert set(exceptions) <= set(tasks(definition)), "an exception names no Task"
    for state_name, state in tasks(definition).items():
        if state_name in exceptions:
            assert state.get("Retry") != RETRY[name], f"{state_name} is no exception any more"
        else:
            assert state.get("Retry") == RETRY[name], state_name


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_the_retry_block_retries_every_transient_error_and_nothing_final(name):
    from chalicelib import errors

    [retrier] = RETRY[name]
    assert retrier["ErrorEquals"] == [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "TransientError",
    ]
    ours = [e for e in retrier["ErrorEquals"] if not e.startswith("Lambda.")]
    # The names our Python raises are class names in chalicelib.errors (a typo would never match),
    # and only TransientError among them is worth retrying: BakeFailed, NodesUnhealthy... are final.
    assert ours == [errors.TransientError.__name__]
    assert not {"States.ALL", "States.TaskFailed", "Lambda.Unknown"} & set(retrier["ErrorEquals"])
    assert retrier["IntervalSeconds"] >= 1
    assert retrier["BackoffRate"] >= 1.0
    assert 1 <= retrier["MaxAttempts"] <= 10
    # Bounded: a step that keeps failing reaches its Catch within a minute of waits (2+4+8+16 s).
    waits = sum(
        retrier["IntervalSeconds"] * retrier["BackoffRate"] ** attempt for attempt in range(retrier["MaxAttempts"])
    )
    assert waits <= 60, waits


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_every_task_catches_everything_into_a_fail_state(name):
    definition = machine(name)
    assert set(NO_CATCH[name]) <= set(tasks(definition)), "an exception names no Task"
    for state_name, state in tasks(definition).items():
        if state_name in NO_CATCH[name]:
            assert "Catch" not in state, f"{state_name} is no exception any more"
            continue
        [catch] = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], state_name
        if state["Resource"] == REPORT:
            # Telling GitHub never changes how the run ends: success stays success.
            assert catch["Next"] == state["Next"], state_name
            continue
        reachable = _reachable(definition, catch["Next"])
        kinds = {definition["States"][n]["Type"] for n in reachable}
        assert "Fail" in kinds and "Succeed" not in kinds, state_name


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_an_error_handler_keeps_the_error_that_started_it(name):
    # The Fail states report $.error: a Task that runs only after a Catch (the undo, the report)
    # puts its own error elsewhere, so the first error is the one the run ends with.
    definition = machine(name)
    handlers = set().union(
        *(_reachable(definition, c["Next"]) for s in tasks(definition).values() for c in s.get("Catch", []))
    )
    for state_name in handlers & set(tasks(definition)):
        for catch in definition["States"][state_name]["Catch"]:
            assert catch["ResultPath"] not in ("$", "$.error"), state_name


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_the_asl_is_formatted_as_json_dumps_writes_it(name):
    # Hand-written, one format: `json.dumps(definition, indent=2)` and a newline (re-run it after an edit).
    text = statemachines.path(name).read_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


REPORT = "${ReportOutcomeFunctionArn}"


def test_the_queue_state_is_the_one_after_a_good_prepare():
    # A queued deploy is only skipped for a newer one that has entered this state (steps.wait_turn).
    from chalicelib import naming

    for name in ("deploy", "teardown"):
        states = machine(name)["States"]
        assert states[naming.QUEUE_STATE]["Resource"] == "${WaitTurnFunctionArn}"
    # Between them only the read of the stack file, which changes nothing outside the bake bucket.
    assert machine("deploy")["States"]["Prepare deployment"]["Next"] == "Read the stack file"
    assert machine("deploy")["States"]["Read the stack file"]["Next"] == naming.QUEUE_STATE


def test_a_run_times_out_only_after_the_longest_default_wait_in_the_queue():
    # TimeoutSeconds is the backstop for a run that never ends (reported by report_stopped_run);
    # it must leave a queued run its whole default wait and then time for a deployment.
    from chalicelib.settings import from_environment

    defaults = from_environment(
        {"SLIPWAY_ENVIRONMENT": "dev", "AWS_REGION": "eu-west-1", "SLIPWAY_NODE_INSTANCE_PROFILE": "slipway-dev-node"}
    )
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
        targets = (
            [state.get("Next"), state.get("Default")]
            + [c["Next"] for c in state.get("Choices", [])]
            + [c["Next"] for c in state.get("Catch", [])]
        )
        if set(targets) & terminal:
            assert state.get("Resource") == REPORT, f"{name} ends the run without telling GitHub"
    reports = {n: s["Parameters"]["outcome"] for n, s in states.items() if s.get("Resource") == REPORT}
    assert {states[states[n]["Next"]]["Type"] + ":" + o for n, o in reports.items()} == {
        "Succeed:success",
        "Succeed:superseded",
        "Fail:failure",
        "Fail:error",
    }


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


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_the_tests_quick_retries_retry_the_same_errors_as_often_only_sooner(name):
    text = statemachines.path(name).read_text()
    quick = json.loads(statemachines.quick_retries(text))
    original = machine(name)

    def retriers(definition):
        return [r for state in tasks(definition).values() for r in state.get("Retry", [])]

    assert len(retriers(quick)) == len(retriers(original)) > 0
    for fast, real in zip(retriers(quick), retriers(original), strict=True):
        assert (fast["ErrorEquals"], fast["MaxAttempts"]) == (real["ErrorEquals"], real["MaxAttempts"])
        assert (fast["IntervalSeconds"], fast["BackoffRate"]) == (1, 1.0) and "MaxDelaySeconds" not in fast
    # Nothing else changes: with the retriers put back, the document is the original.
    for fast, real in zip(tasks(quick).values(), tasks(original).values(), strict=True):
        fast["Retry"] = real.get("Retry")
        if fast["Retry"] is None:
            del fast["Retry"]
    assert quick == original
