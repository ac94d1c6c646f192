"""Self-healing between pushes: a node that dies is replaced without a push (EC2's state-change
event reaches `heal`, which starts the deploy machine for the last deployed commit), the swarm's
member list is the live nodes again and its managers as many as the node count wants; one failure
starts one heal, whatever the storm of events; the drift check heals what no event told of."""

import json
import time

from chalicelib import naming
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.steps.heal import HEAL_WINDOW_SECONDS
from slipway.follow import follow
from slipway.harness import FOLLOW_POLL, commit_id, deliver_push, deploy, scheduled_event, teardown


def heals(emu) -> list[dict]:
    sfn = emu.client("stepfunctions")
    found = sfn.list_executions(stateMachineArn=emu.arns["deploy"])["executions"]
    return sorted((e for e in found if e["name"].startswith("heal-")), key=lambda e: e["startDate"])


def the_heal(emu, timeout: float = 120):
    """Deliver the events EC2 sent, then follow the one heal they started to its end."""
    emu.wait_for_events()
    started = heals(emu)
    assert len(started) == 1, [h["name"] for h in started]
    return follow(emu.client("stepfunctions"), started[0]["executionArn"], say=None, poll=FOLLOW_POLL, timeout=timeout)


def live(emu) -> list[ec2_adapter.Node]:
    return ec2_adapter.list_nodes(emu.client("ec2"), emu.environment, states=["running"])


def assert_swarm_is_exactly_the_live_nodes(emu, count: int) -> None:
    nodes = live(emu)
    assert len(nodes) == count
    swarm = emu.nodes.swarm_of(nodes[0].instance_id)
    assert swarm is not None and swarm.members == {n.instance_id for n in nodes}, "a dead member is left"
    assert {emu.nodes.state(n.instance_id) for n in nodes} == {"active"}
    wanted = 3 if count >= 3 else 1
    assert len(swarm.managers()) == wanted
    assert emu.nodes.has_quorum(nodes[0].instance_id)


def test_a_lost_node_of_a_one_node_environment_is_replaced_without_a_push(make_emulator):
    emu = make_emulator(node_count=1)
    commit = commit_id()
    first = deploy(emu, commit)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    statuses = len(emu.github.statuses)
    [node] = first.output["nodes"]["current"]
    emu.client("ec2").terminate_instances(InstanceIds=[node])
    healed = the_heal(emu)
    assert healed.status == "SUCCEEDED", (healed.error, healed.cause)
    assert healed.output["deployment"]["commit"] == commit and healed.output["deployment"]["trigger"] == "heal"
    assert healed.output["nodes"]["new"] and node not in healed.output["nodes"]["current"]
    assert_swarm_is_exactly_the_live_nodes(emu, 1)
    assert len(emu.github.statuses) == statuses  # a heal that succeeds sets no status on the old commit


def test_a_lost_manager_of_three_is_replaced_and_the_quorum_restored(make_emulator):
    emu = make_emulator(node_count=3)
    first = deploy(emu)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    managers = [n.instance_id for n in live(emu) if n.swarm_role == "manager"]
    assert len(managers) == 3
    emu.client("ec2").terminate_instances(InstanceIds=[managers[0]])
    healed = the_heal(emu)
    assert healed.status == "SUCCEEDED", (healed.error, healed.cause)
    assert healed.output["retire"]["forgotten"]  # the dead manager's member, demoted and removed
    assert_swarm_is_exactly_the_live_nodes(emu, 3)


def test_a_stopped_worker_is_replaced_and_retired(make_emulator):
    emu = make_emulator(node_count=4)
    first = deploy(emu)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    [worker, *_] = [n.instance_id for n in live(emu) if n.swarm_role == "worker"]
    emu.client("ec2").stop_instances(InstanceIds=[worker])
    healed = the_heal(emu)
    assert healed.status == "SUCCEEDED", (healed.error, healed.cause)
    assert healed.output["nodes"]["old"] == [worker]  # the stopped node is retired by the heal
    assert_swarm_is_exactly_the_live_nodes(emu, 4)


def test_three_nodes_dying_at_once_with_every_event_twice_start_one_heal(make_emulator):
    emu = make_emulator(node_count=3)
    first = deploy(emu)
    assert first.status == "SUCCEEDED"
    nodes = first.output["nodes"]["current"]
    emu.client("ec2").terminate_instances(InstanceIds=nodes)  # shutting-down, terminated: 6 events
    emu.instances_changed("us-east-1", nodes, ("shutting-down", "terminated"))  # each delivered twice
    healed = the_heal(emu)
    assert healed.status == "SUCCEEDED", (healed.error, healed.cause)
    assert len(heals(emu)) == 1
    assert_swarm_is_exactly_the_live_nodes(emu, 3)


def test_a_heal_racing_a_push_lets_the_push_win_and_runs_nothing_twice(make_emulator):
    emu = make_emulator(node_count=1)
    first = deploy(emu)
    assert first.status == "SUCCEEDED"
    emu.client("ec2").terminate_instances(InstanceIds=first.output["nodes"]["current"])
    pushed = commit_id()
    status, answer = deliver_push(emu, pushed)  # the push arrives while the events are on their way
    assert status == 202
    emu.wait_for_events()
    sfn = emu.client("stepfunctions")
    push_run = follow(sfn, answer["execution_arn"], say=None, poll=FOLLOW_POLL, timeout=180)
    for heal in heals(emu):
        follow(sfn, heal["executionArn"], say=None, poll=FOLLOW_POLL, timeout=180)
    assert push_run.status == "SUCCEEDED", (push_run.error, push_run.cause)
    # Whichever came first, the push's commit is what runs once both ended, on one node.
    deployed = json.loads(
        emu.client("ssm").get_parameter(Name=naming.deployed_parameter(emu.environment))["Parameter"]["Value"]
    )
    assert deployed["commit"] == pushed
    assert_swarm_is_exactly_the_live_nodes(emu, 1)
    runs = sfn.list_executions(stateMachineArn=emu.arns["deploy"])["executions"]
    assert len({r["name"] for r in runs}) == len(runs)


def test_the_drift_check_heals_a_node_no_event_told_of_and_nothing_when_nothing_is_missing(make_emulator):
    emu = make_emulator(node_count=2)
    first = deploy(emu)
    assert first.status == "SUCCEEDED"
    assert emu.invoke("drift_check", scheduled_event()) == {
        "healthy": True,
        "running": 2,
        "ready": 2,
        "wanted": 2,
    }
    assert heals(emu) == []
    # A node whose dockerd died: it runs, but the swarm lists it Down. It is terminated and replaced.
    broken = first.output["nodes"]["current"][1]
    emu.nodes.broken.add(broken)
    answer = emu.invoke("drift_check", scheduled_event())
    if "started" in answer:
        assert answer["reason"] == "drift: 1 of 2 nodes Ready in the swarm, 1 Down terminated", answer
        heal = answer["started"]
    else:  # the termination's own event reached `heal` first, which started the same heal
        assert answer["ignored"] == "a run is in progress", answer
        (heal,) = answer["running"]
        assert heal.split(":")[-1].startswith("heal-"), heal
    healed = follow(emu.client("stepfunctions"), heal, say=None, poll=FOLLOW_POLL, timeout=120)
    assert healed.status == "SUCCEEDED", (healed.error, healed.cause)
    emu.wait_for_events()  # its termination's events name the same heal: nothing more starts
    assert len(heals(emu)) == 1
    assert broken not in {n.instance_id for n in live(emu)}
    assert_swarm_is_exactly_the_live_nodes(emu, 2)
    # A node stopped whose event was lost: the next check finds it missing.
    emu.instances_changed = lambda *args: None
    emu.client("ec2").stop_instances(InstanceIds=[live(emu)[0].instance_id])
    # The next heal window (a heal is named for its window: the same window would name the first).
    later = scheduled_event(at=time.time() + HEAL_WINDOW_SECONDS)
    answer = emu.invoke("drift_check", later)
    assert answer["reason"] == "drift: 1 of 2 nodes running", answer
    again = follow(emu.client("stepfunctions"), answer["started"], say=None, poll=FOLLOW_POLL, timeout=120)
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    assert_swarm_is_exactly_the_live_nodes(emu, 2)


def test_a_dead_node_of_a_torn_down_or_busy_environment_starts_nothing(make_emulator):
    emu = make_emulator(node_count=1)
    first = deploy(emu)
    assert first.status == "SUCCEEDED"
    gone = teardown(emu)  # its own terminations reach `heal` while it runs, and after
    assert gone.status == "SUCCEEDED"
    emu.wait_for_events()
    time.sleep(0.2)
    emu.wait_for_events()
    assert heals(emu) == []
    event = scheduled_event() | {
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "detail": {"instance-id": first.output["nodes"]["current"][0], "state": "terminated"},
    }
    answer = emu.invoke("heal", event)
    assert answer == {"ignored": "nothing is deployed (never, or torn down)"}


def test_a_heal_that_waited_behind_a_deploy_of_a_newer_commit_is_skipped(make_emulator):
    # Given commit A deployed, then B deployed by a push
    from chalicelib import deploy_input

    emu = make_emulator(node_count=1)
    first = deploy(emu)
    second = deploy(emu)
    assert first.status == second.status == "SUCCEEDED"
    older, newer = first.output["deployment"]["commit"], second.output["deployment"]["commit"]
    # When a heal of A, started (as the heal starts one) before B's record was written, gets its turn
    heal_input = deploy_input.DeployInput(
        repository="example/app", ref="refs/heads/main", commit=older, pusher="slipway heal", trigger="heal"
    )
    sfn = emu.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=emu.arns["deploy"], name="heal-late", input=json.dumps(heal_input.as_execution_input())
    )["executionArn"]
    run = follow(sfn, arn, say=None, poll=FOLLOW_POLL, timeout=180)
    # Then it is skipped: B stays deployed, nothing changed, and A's commit status is untouched
    assert run.status == "SUCCEEDED" and run.output["queue"]["skip"] is True
    assert run.output["queue"]["superseded_by"]["commit"] == newer
    deployed = json.loads(
        emu.client("ssm").get_parameter(Name=naming.deployed_parameter(emu.environment))["Parameter"]["Value"]
    )
    assert deployed["commit"] == newer
    assert [s["state"] for s in emu.github.statuses if s["sha"] == older] == ["pending", "success"]
