"""The whole pipeline with real nodes (`slipway demo --real-nodes`): the state machines and the
functions are the same as on AWS; only the emulator's layer runs instances as node containers.

Needs root, debootstrap, the docker CLI and a running dockerd (CI starts it); otherwise these skip
and say why, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from chalicelib import scripts
from slipway import realnodes
from slipway.emulator.nodes import Result
from slipway.follow import follow
from slipway.harness import commit_id, deploy, scheduled_event, tagged_instances
from tests.realnodes import LOST_AFTER_SECONDS, REAL_RUN_SECONDS, through_load_balancer


def cidr(test_name: str) -> str:
    """The VPC CIDR (the node network's subnet) of one test of this module: its own, so the tests
    run on several workers at once; none is the default, so a `slipway demo --real-nodes` can run
    beside them (10.170.0.0/16 onwards, clear of the other real-node modules' networks)."""
    tests = sorted(name for name in globals() if name.startswith("test_"))
    return f"10.{170 + tests.index(test_name)}.0.0/16"


def changed_role(emu, commit: str) -> str:
    """Give `commit` a changed ansible/ tree, as a push that changes the role would: the same
    change in every test of this module, so the node image it bakes is baked once in a session
    and reused by the tests after (each test's pipeline still bakes, registers and rolls it out)."""
    emu.github.trees[commit] = {"ansible": "a" * 40, "packer": "f" * 40}
    return commit


@pytest.fixture
def real(make_emulator, request, require):
    require(realnodes.bake_available())

    def start(node_count: int = 2, **environment: str):
        emu = make_emulator(
            node_count=node_count,
            real_nodes=True,
            poll_seconds=1,
            extra_environment={"SLIPWAY_VPC_CIDR": cidr(request.node.originalname)} | environment,
        )
        # Tests on other workers bake the same images (same content, same key): the session
        # removes them at its end (tests/conftest.py), not the test that happened to bake first.
        emu.nodes.remove_images = False
        return emu

    return start


def ready_hosts(emu, manager: str) -> dict[str, str]:
    listed = emu.nodes.run(manager, ["docker node ls --format '{{.Hostname}} {{.Status}}'"])
    assert listed.code == 0, listed.stderr
    return dict(line.split() for line in listed.stdout.splitlines())


def settled_hosts(emu, manager: str, within: float = 30) -> dict[str, str]:
    """ready_hosts once no node is Unknown any more (bounded): right after a leader election the
    new leader has not heard from the nodes yet."""
    deadline = time.monotonic() + within
    while True:
        hosts = ready_hosts(emu, manager)
        if "Unknown" not in hosts.values() or time.monotonic() > deadline:
            return hosts
        time.sleep(1)


def test_two_real_nodes_form_one_swarm_of_two_ready_nodes(real):
    emu = real()
    run = deploy(emu, timeout=REAL_RUN_SECONDS)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    nodes = tagged_instances(emu)
    assert len(nodes) == 2 and all(emu.nodes.container(n.instance_id) for n in nodes)
    manager = next(n for n in nodes if n.swarm_role == "manager")
    assert ready_hosts(emu, manager.instance_id) == {n.hostname: "Ready" for n in nodes}
    # Docker itself says who is a manager: the same as the pipeline's tags.
    assert {n.instance_id: emu.nodes.role(n.instance_id) for n in nodes} == {n.instance_id: n.swarm_role for n in nodes}


def test_a_real_replacement_always_has_a_ready_node_and_ends_with_only_the_new_ones(real):
    emu = real()
    first = deploy(emu, timeout=REAL_RUN_SECONDS)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            live = [i for i in list(emu.nodes.instances())]
            samples.append(sum(1 for i in live if emu.nodes.state(i) == "active"))
            stop.wait(0.5)  # a `docker exec` per node per sample: more often costs the run's CPU

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        second = deploy(emu, changed_role(emu, commit_id()), timeout=REAL_RUN_SECONDS)
    finally:
        stop.set()
        sampler.join()
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert len(samples) > 5 and min(samples) >= 1, samples
    current = second.output["nodes"]["current"]
    assert sorted(emu.nodes.instances()) == sorted(current)  # the old containers are gone
    manager = next(n for n in tagged_instances(emu) if n.swarm_role == "manager")
    # The old manager left last: a new leader lists every node Unknown until its first heartbeat.
    hosts = settled_hosts(emu, manager.instance_id)
    assert sorted(hosts.values()) == ["Ready", "Ready"], hosts  # the old nodes left the swarm


def test_a_real_prune_reports_what_docker_reclaimed(real):
    emu = real(node_count=1, SLIPWAY_PRUNE_FILTER="until=1s")
    run = deploy(emu, timeout=REAL_RUN_SECONDS)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    node = run.output["nodes"]["current"][0]
    made = emu.nodes.run(
        node,
        [
            "set -eu",
            "mkdir -p /tmp/junk && head -c 3000000 /dev/urandom > /tmp/junk/blob",
            "tar -C /tmp/junk -c . | docker import - >/dev/null",
            "docker image inspect --format '{{.Size}}' $(docker images -q --filter dangling=true)",
        ],
    )
    assert made.code == 0, made.stderr
    size = int(made.stdout.strip())
    time.sleep(2.1)  # older than "until=1s", in whole seconds
    result = emu.invoke("prune", scheduled_event())
    emu.wait_for_events()
    recorded = [
        r
        for name, r in emu.results
        if name.endswith("-record_prune") and isinstance(r, dict) and r.get("command_id") == result["command_id"]
    ]
    assert recorded and recorded[0]["failed"] == []
    # Docker prints four significant digits ("3.001MB").
    assert abs(recorded[0]["reclaimed_bytes"] - size) <= size * 0.01, (recorded, size)


def test_a_real_node_whose_dockerd_stops_fails_the_gate_and_the_old_node_keeps_serving(real):
    emu = real(node_count=1)
    first = deploy(emu, timeout=REAL_RUN_SECONDS)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    old = first.output["nodes"]["current"][0]
    original_run = emu.nodes.run

    def dockerd_dies_after_joining(instance_id: str, commands: list[str]) -> Result:
        result = original_run(instance_id, commands)
        if scripts.command_kind(commands) == "swarm-join":
            emu.nodes.stop_docker(instance_id)
        return result

    emu.nodes.run = dockerd_dies_after_joining
    second = deploy(emu, changed_role(emu, commit_id()), timeout=REAL_RUN_SECONDS)
    emu.nodes.run = original_run
    assert second.status == "FAILED" and second.error == "NodesUnhealthy", (second.error, second.cause)
    assert emu.nodes.instances() == [old]  # the new node's container is gone, the old one stays
    assert emu.nodes.state(old) == "active" and emu.nodes.role(old) == "manager"
    # The old manager still runs the swarm alone: the failed node was removed from it.
    hosts = ready_hosts(emu, old)
    assert list(hosts.values()) == ["Ready"], hosts


def answers(emu) -> list[str]:
    """GET / of the example's web service through every node container's published port 8080."""
    import urllib.request

    found = []
    for instance_id in list(emu.nodes.instances()):
        try:
            url = f"http://127.0.0.1:{emu.nodes.host_port(instance_id, 8080)}/"
            with urllib.request.urlopen(url, timeout=LOST_AFTER_SECONDS) as answer:
                found.append(answer.read(500).decode(errors="replace"))
        except (OSError, realnodes.NodeError, ValueError):
            continue
    return found


def test_a_real_stack_answers_over_http_and_keeps_answering_through_a_node_replacement(real):
    emu = real(node_count=2)
    emu.client("ssm").put_parameter(
        Name=f"/slipway/{emu.environment}/secrets/app_token", Value="real-secret", Type="SecureString"
    )
    stack = emu.example_stack()
    commit = commit_id()
    emu.github.files[commit] = {"stack.yml": stack}
    first = deploy(emu, commit, timeout=REAL_RUN_SECONDS)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    (web,) = first.output["rollout"]["services"]
    assert (web["name"], web["running"], web["desired"], web["updated"]) == ("web", 2, 2, True)
    assert web["digest"].startswith("sha256:")
    found = answers(emu)
    assert found and all("version=1" in a and "secret=yes" in a for a in found), found
    assert through_load_balancer(emu).startswith("slipway-example/web version=1")
    samples, stop = [], threading.Event()
    balanced: list[str | None] = []

    def sample():
        while not stop.is_set():
            samples.append(bool(answers(emu)))
            stop.wait(0.3)

    def sample_load_balancer():  # what a client of the environment's address gets
        while not stop.is_set():
            balanced.append(through_load_balancer(emu))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    balancer_sampler = threading.Thread(target=sample_load_balancer)
    balancer_sampler.start()
    try:
        commit = changed_role(emu, commit_id())
        emu.github.files[commit] = {"stack.yml": stack}
        second = deploy(emu, commit, timeout=REAL_RUN_SECONDS)
    finally:
        stop.set()
        sampler.join()
        balancer_sampler.join()
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert second.output["rollout"]["changed"] == ["web"]  # moved to the new nodes by a rolling update
    # Through the load balancer, no request was lost while every node was replaced.
    failed = [b for b in balanced if not (b or "").startswith("slipway-example/web")]
    assert len(balanced) > 20 and not failed, f"{len(failed)} of {len(balanced)} requests failed: {failed[:3]}"
    assert len(samples) > 10 and all(samples), f"{samples.count(False)} of {len(samples)} samples got no answer"
    assert sorted(emu.nodes.instances()) == sorted(second.output["nodes"]["current"])
    assert answers(emu)


def test_a_real_node_killed_between_pushes_is_replaced_and_the_swarm_is_the_live_nodes(real):
    emu = real(node_count=2)
    first = deploy(emu, timeout=REAL_RUN_SECONDS)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    nodes = tagged_instances(emu)
    manager = next(n for n in nodes if n.swarm_role == "manager")
    worker = next(n for n in nodes if n.swarm_role == "worker")
    # The node dies (its container killed, no leave), and EC2 then says it is terminated.
    subprocess.run(["docker", "rm", "-f", emu.nodes.container(worker.instance_id)], check=True, capture_output=True)
    emu.client("ec2").terminate_instances(InstanceIds=[worker.instance_id])
    emu.wait_for_events()
    sfn = emu.client("stepfunctions")
    [heal] = [
        e
        for e in sfn.list_executions(stateMachineArn=emu.arns["deploy"])["executions"]
        if e["name"].startswith("heal-")
    ]
    healed = follow(sfn, heal["executionArn"], say=None, poll=0.2, timeout=REAL_RUN_SECONDS)
    assert healed.status == "SUCCEEDED", (healed.error, healed.cause)
    live = tagged_instances(emu)
    assert len(live) == 2 and worker.instance_id not in {n.instance_id for n in live}
    # Docker's own member list: exactly the live nodes, all Ready (the dead one forgotten).
    assert settled_hosts(emu, manager.instance_id) == {n.hostname: "Ready" for n in live}
