"""The routing-mesh stand-in (slipway/realnodes/mesh.py) in real node containers: DockerNodes(mesh=...)
starts it in each node it launches and keeps every node's peers the live nodes' addresses, so the
published port answers on either node whichever runs the task. The "task" is a plain
`python3 -m http.server` on the task port of one node (no swarm needed: what the mesh forwards to
is a host-mode port, whatever listens there). tests/deploy/test_mesh.py tests mesh.py itself.

Needs root, debootstrap, the docker CLI and a running dockerd; where they are missing the tests
skip and say why, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections import Counter

import pytest

from slipway.realnodes import MESH_PEERS, DockerNodes, NodeError
from slipway.realnodes.load_balancer import HealthCheck, LoadBalancer

# Not another module's subnet (10.199: test_docker_nodes, 10.198: test_pipeline, 10.190-197:
# test_stack_real, 10.42: a demo).
SUBNET = "10.189.0.0/16"
A = ("i-0aaaaaaaaaaaaaaa1", "ip-10-189-1-10", "10.189.1.10")
B = ("i-0bbbbbbbbbbbbbbb2", "ip-10-189-2-20", "10.189.2.20")
PUBLISHED, TASK = 8080, 18080
TASK_PID = "/run/slipway-test-task.pid"


@pytest.fixture
def nodes(image):
    made = DockerNodes(SUBNET, run_id=f"test-{uuid.uuid4().hex[:10]}", mesh={PUBLISHED: TASK})
    yield made
    made.close()


def start_task(nodes: DockerNodes, machine: tuple[str, str, str]) -> None:
    """An HTTP server on the node's task port whose / answers the node's host name."""
    started = nodes.run(
        machine[0],
        [
            "mkdir -p /srv/task && hostname > /srv/task/index.html && cd /srv/task",
            f"(exec python3 -m http.server {TASK} >/dev/null 2>&1) &",
            f"echo $! > {TASK_PID}",
        ],
    )
    assert started.code == 0, started


def stop_task(nodes: DockerNodes, machine: tuple[str, str, str]) -> None:
    stopped = nodes.run(
        machine[0],
        [f'pid=$(cat {TASK_PID}) && kill "$pid"', 'while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done'],
    )
    assert stopped.code == 0, stopped


def get(ip: str, port: int = PUBLISHED) -> str | None:
    """What the published port of the node at `ip` answers to GET / (None: no answer)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as response:
            return response.read().decode().strip()
    except OSError:
        return None


def answers(count: int) -> Counter:
    """Who answers `count` requests to each node's published port."""
    return Counter(get(ip) for _ in range(count) for ip in (A[2], B[2]))


def eventually(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def peers_of(nodes: DockerNodes, machine: tuple[str, str, str]) -> list[str]:
    return nodes.run(machine[0], [f"cat {MESH_PEERS}"]).stdout.split()


def test_either_node_answers_on_the_published_port_wherever_the_task_runs(nodes, image):
    for instance_id, hostname, ip in (A, B):
        nodes.launch(instance_id, image=image, hostname=hostname, ip=ip)
    assert peers_of(nodes, A) == peers_of(nodes, B) == [A[2], B[2]]

    # Given the task on A: B's published port answers from it too
    start_task(nodes, A)
    assert eventually(lambda: get(B[2]) == A[1]), get(B[2])
    assert answers(4) == {A[1]: 8}

    # When the task moves to B: both still answer, from B
    stop_task(nodes, A)
    start_task(nodes, B)
    assert eventually(lambda: get(A[2]) == B[1]), get(A[2])
    assert answers(4) == {B[1]: 8}

    # A load balancer on this machine with both nodes' published port as targets, as the NLB has them
    health = HealthCheck(protocol="http", path="/", interval=0.2, timeout=2)
    with LoadBalancer(health=health, deregistration_delay=0) as lb:
        port = lb.listen(80)
        lb.set_targets(80, {A[0]: (A[2], PUBLISHED), B[0]: (B[2], PUBLISHED)})
        healthy = eventually(lambda: {t["state"] for t in lb.health(80).values()} == {"healthy"})
        assert healthy, lb.health(80)
        assert Counter(get("127.0.0.1", port) for _ in range(6)) == {B[1]: 6}
        assert {t: c["forwarded"] for t, c in lb.stats(80)["targets"].items()} == {A[0]: 3, B[0]: 3}

    # A node terminated leaves the others' peers
    nodes.terminate(A[0])
    assert peers_of(nodes, B) == [B[2]]
    assert get(B[2]) == B[1]

    # Starting the mesh again on a port it already serves changes nothing
    nodes.start_mesh(B[0], PUBLISHED, TASK)
    assert get(B[2]) == B[1]

    # A mesh that cannot listen (the task holds that port) fails with its log
    with pytest.raises(NodeError, match=f"mesh of {B[0]} on port {TASK} exited: .*cannot listen"):
        nodes.start_mesh(B[0], TASK, 1)
