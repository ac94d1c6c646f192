"""One run at a time, for certain: the environment's lease on the emulator, with the queue's
ListExecutions made as stale as AWS allows it to be (docs/pipeline.md, "Look for earlier runs")."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from unittest import mock

import pytest

from chalicelib.aws import dynamodb as dynamodb_adapter
from slipway.harness import (
    WHOLE_SECONDS,
    commit_id,
    deliver_push,
    deploy,
    entered,
    exited,
    follow_run,
    history,
    new_content,
    tagged_instances,
    teardown,
    wait_until_entered,
)


def leases(emu) -> list[dict]:
    return emu.client("dynamodb").scan(TableName=os.environ["SLIPWAY_LEASE_TABLE"])["Items"]


def write_lease(emu, owner: str, *, taken_at: float, expires_at: float) -> None:
    emu.client("dynamodb").put_item(
        TableName=os.environ["SLIPWAY_LEASE_TABLE"],
        Item={
            "environment": {"S": emu.environment},
            "owner": {"S": owner},
            "taken_at": {"N": str(int(taken_at))},
            "expires_at": {"N": str(int(expires_at))},
        },
    )


def name(arn: str) -> str:
    return arn.split(":execution:", 1)[1]


def queue_answers(emu, arn: str) -> list[dict]:
    return [
        json.loads(e["stateExitedEventDetails"]["output"])["queue"]
        for e in history(emu, arn)
        if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "Look for earlier runs"
    ]


class Takes:
    """Every lease write's owner (dynamodb.take and reclaim), as the runs made them."""

    def __init__(self) -> None:
        self.owners: list[str] = []
        self._take, self._reclaim = dynamodb_adapter.take, dynamodb_adapter.reclaim

    def take(self, client, table, environment, owner, *args):
        self.owners.append(owner)
        return self._take(client, table, environment, owner, *args)

    def reclaim(self, client, table, environment, owner, *args):
        self.owners.append(owner)
        return self._reclaim(client, table, environment, owner, *args)


def test_two_takes_at_the_same_moment_give_the_lease_to_one(emulator):
    # DynamoDB's conditional write is atomic; moto's checks, then writes. With the time between the
    # two widened so both threads check before either writes, exactly one take must still win.
    from moto.dynamodb.models import table as moto_table

    original = moto_table.get_expected
    both_checked = threading.Barrier(2, timeout=2)

    def get_expected(expected):
        op = original(expected)
        check = op.expr

        def expr(current):
            held = check(current)
            with contextlib.suppress(threading.BrokenBarrierError):
                both_checked.wait()  # serialized writes: the barrier breaks after its timeout
            return held

        op.expr = expr
        return op

    table, now = os.environ["SLIPWAY_LEASE_TABLE"], int(time.time())
    answers = []

    def take(owner: str) -> None:
        client = emulator.client("dynamodb")
        answers.append(dynamodb_adapter.take(client, table, emulator.environment, owner, now + 600, now))

    with mock.patch.object(moto_table, "get_expected", get_expected):
        threads = [threading.Thread(target=take, args=(owner,)) for owner in ("run-a", "run-b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(taken for taken, _ in answers) == [False, True], answers
    [winner] = [holder for taken, holder in answers if not taken]  # what the other take found
    assert winner is not None and winner.owner in ("run-a", "run-b")
    assert [item["owner"]["S"] for item in leases(emulator)] == [winner.owner]


def test_two_runs_that_both_find_the_way_clear_still_go_one_at_a_time(make_emulator):
    # Given a swarm, when two pushes arrive together and ListExecutions shows neither of them to
    # the other (eventually consistent: each believes the way is clear), then exactly one holds the
    # lease: the other waits until the first has given it up, and nothing runs twice.
    emu = make_emulator(node_count=2, poll_seconds=1)
    assert deploy(emu).status == "SUCCEEDED"
    with mock.patch("chalicelib.aws.stepfunctions.running", return_value=[]):
        answers = [deliver_push(emu, new_content(emu, commit_id()))[1] for _ in range(2)]
        runs = [follow_run(emu, a["execution_arn"]) for a in answers]
    assert [r.status for r in runs] == ["SUCCEEDED", "SUCCEEDED"], [(r.error, r.cause) for r in runs]
    [holder] = [r for r in runs if "Wait for earlier runs" not in r.states]
    [waiter] = [r for r in runs if "Wait for earlier runs" in r.states]
    # Nobody was ahead in ListExecutions: the lease alone kept the waiter back, naming its holder.
    first, *_, last = queue_answers(emu, waiter.execution_arn)
    assert first["ahead"] == [name(holder.execution_arn)] and not first["clear"] and "lease" not in first
    assert last["clear"] and last["lease"]["owner"] == waiter.execution_arn
    assert holder.output["queue"]["lease"]["owner"] == holder.execution_arn
    # The waiter changed nothing before the holder had done all it does and given the lease up.
    released = entered(emu, holder.execution_arn, "Report success to GitHub")
    assert exited(emu, holder.execution_arn, "Remove old images") <= released
    assert entered(emu, waiter.execution_arn, "Look for a baked image") >= released
    assert waiter.states.count("Bake node image") == holder.states.count("Bake node image") == 1
    # The swarm ends as the waiter, the last run, left it; no lease is left behind.
    nodes = tagged_instances(emu)
    assert {n.instance_id for n in nodes} == set(waiter.output["nodes"]["current"])
    assert {n.image_id for n in nodes} == {waiter.output["image"]["ami_id"]}
    assert leases(emu) == []


def test_a_lease_whose_holder_was_stopped_without_its_event_is_reclaimed(make_emulator):
    # Given a run stopped past the queue whose status-change event never arrives (so
    # report_stopped_run never gives its lease up), when the next push deploys, then it finds the
    # holder ended, takes the lease over at once and deploys.
    emu = make_emulator(**WHOLE_SECONDS)
    stopped = deliver_push(emu, commit_id())[1]["execution_arn"]
    wait_until_entered(emu, stopped, "Look for a baked image")
    with mock.patch.object(emu, "execution_stopped"):  # the event is lost
        emu.client("stepfunctions").stop_execution(executionArn=stopped, error="Operator", cause="console")
    ended = follow_run(emu, stopped)
    assert ended.status == "ABORTED", (ended.status, ended.error, ended.cause, ended.states)
    [held] = leases(emu)
    assert held["owner"] == {"S": stopped}
    run = deploy(emu)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["queue"]["lease"]["reclaimed_from"] == name(stopped)
    assert "Wait for earlier runs" not in run.states
    assert leases(emu) == []


def test_an_expired_lease_is_taken_over_without_asking_about_its_holder(make_emulator):
    # A lease past its expiry is free: the write's condition lets the next run take it, even from
    # a holder Step Functions does not know yet (which would otherwise be given its grace).
    emu = make_emulator(poll_seconds=1)
    ghost = emu.arns["deploy"].replace(":stateMachine:", ":execution:") + ":long-gone"
    write_lease(emu, ghost, taken_at=time.time(), expires_at=time.time() - 1)
    run = deploy(emu)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["queue"]["lease"] == {"owner": run.execution_arn, "expires_at": mock.ANY}
    assert "Wait for earlier runs" not in run.states
    assert leases(emu) == []


def test_a_lease_held_by_a_run_step_functions_does_not_show_yet_is_waited_for(make_emulator):
    # Taken a moment ago by an execution DescribeExecution does not know (it is eventually
    # consistent too): the next run waits rather than take over a lease that may be alive.
    emu = make_emulator(poll_seconds=1, extra_environment={"SLIPWAY_QUEUE_MAX_CHECKS": "2"})
    ghost = emu.arns["deploy"].replace(":stateMachine:", ":execution:") + ":just-started"
    write_lease(emu, ghost, taken_at=time.time(), expires_at=time.time() + 7200)
    run = deploy(emu)
    assert run.status == "FAILED" and run.error == "QueueTimeout"
    assert "just-started" in run.cause and "Look for a baked image" not in run.states
    assert leases(emu)[0]["owner"] == {"S": ghost}


def test_a_deploy_gives_the_lease_up_when_it_succeeds_or_is_skipped(make_emulator):
    # After a run that deploys, and one skipped in the queue for a newer push, no lease is left;
    # the skipped run never took one.
    emu = make_emulator(node_count=2, poll_seconds=1)
    takes = Takes()
    with (
        mock.patch.object(dynamodb_adapter, "take", takes.take),
        mock.patch.object(dynamodb_adapter, "reclaim", takes.reclaim),
    ):
        commits = [new_content(emu, commit_id()) for _ in range(3)]
        answers = [deliver_push(emu, c)[1] for c in commits]  # all three at once, then followed
        first, middle, last = (follow_run(emu, a["execution_arn"]) for a in answers)
    assert first.status == middle.status == last.status == "SUCCEEDED"
    assert middle.states[-1] == "Skipped for a newer push" and "lease" not in middle.output["queue"]
    assert middle.execution_arn not in takes.owners
    assert {first.execution_arn, last.execution_arn} <= set(takes.owners)
    assert leases(emu) == []


def test_a_failed_deploy_gives_the_lease_up(make_emulator):
    # A failed bake: the undo, then the report, which gives the lease up.
    failing = make_emulator(bake_outcome="FAILED")
    run = deploy(failing)
    assert run.status == "FAILED" and run.error == "BakeFailed"
    # A failed run has no output: its history shows the lease it held.
    assert queue_answers(failing, run.execution_arn)[-1]["lease"]["owner"] == run.execution_arn
    assert leases(failing) == []


def test_a_deploy_stopped_with_its_event_gives_the_lease_up(make_emulator):
    emu = make_emulator(**WHOLE_SECONDS)
    stopped = deliver_push(emu, commit_id())[1]["execution_arn"]
    wait_until_entered(emu, stopped, "Look for a baked image")
    emu.client("stepfunctions").stop_execution(executionArn=stopped, error="Operator", cause="console")
    assert follow_run(emu, stopped).status == "ABORTED"
    emu.wait_for_events()
    assert leases(emu) == []


def test_a_teardown_gives_the_lease_up_when_it_succeeds_fails_or_is_stopped(make_emulator):
    emu = make_emulator(**WHOLE_SECONDS)
    assert deploy(emu).status == "SUCCEEDED"
    done = teardown(emu)
    assert done.status == "SUCCEEDED" and done.output["queue"]["lease"]["owner"] == done.execution_arn
    assert leases(emu) == []

    # Something still tagged fails 'Confirm nothing is left'; the lease goes on the way to the Fail.
    with mock.patch("chalicelib.aws.ec2.count_tagged", return_value={"vpc": 1}):
        failed = teardown(emu)
    assert failed.status == "FAILED" and failed.error == "TeardownIncomplete"  # the error that failed it
    assert failed.states[-2:] == ["Release the lease", "Teardown failed"]
    assert leases(emu) == []

    sfn = emu.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=emu.arns["teardown"], input=json.dumps({"environment": emu.environment}))[
        "executionArn"
    ]
    wait_until_entered(emu, arn, "Terminate nodes")
    sfn.stop_execution(executionArn=arn, error="Operator", cause="console")
    assert follow_run(emu, arn).status == "ABORTED"
    emu.wait_for_events()
    assert [r for n, r in emu.results if n.endswith("-report_stopped_run")] == [{"lease": "released"}]
    assert leases(emu) == []


@pytest.mark.parametrize("operation", ["PutItem", "DeleteItem"])
def test_a_lease_write_whose_answer_is_lost_is_sent_again_and_changes_nothing_more(make_emulator, operation):
    # The take or the release takes effect and its answer is lost: sent again, the take finds the
    # lease already this run's, the release finds it gone. The run deploys and leaves no lease.
    from chalicelib import aws
    from slipway.faults import Fault

    emu = make_emulator(poll_seconds=1)
    fault = Fault(operation, "lost")
    fault.install([aws.client("dynamodb")])
    run = deploy(emu)
    assert fault.fired == 1 and run.status == "SUCCEEDED", (run.error, run.cause)
    assert leases(emu) == []
