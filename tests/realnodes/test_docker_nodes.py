"""Real nodes: the node image baked with the swarm_node role, each instance a container with its
own dockerd, and Slipway's own SSM scripts (chalicelib/scripts.py) run in them for real.

Needs root, debootstrap, the docker CLI and a running dockerd. Where they are missing the tests
skip and say why; on CI (CI=true) a missing prerequisite is a failure, not a skip.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from chalicelib import scripts
from slipway import realnodes
from slipway.realnodes import DockerNodes

# Not the default VPC CIDR: a local run with real nodes may hold 10.42.0.0/16 at the same time.
SUBNET = "10.199.0.0/16"
A = ("i-0aaaaaaaaaaaaaaa1", "ip-10-199-1-10", "10.199.1.10")
B = ("i-0bbbbbbbbbbbbbbb2", "ip-10-199-2-20", "10.199.2.20")


@pytest.fixture
def nodes(image):
    made = DockerNodes(SUBNET, run_id=f"test-{uuid.uuid4().hex[:10]}")
    yield made
    made.close()


def launch(nodes: DockerNodes, image: str, *machines) -> None:
    for instance_id, hostname, ip in machines:
        nodes.launch(instance_id, image=image, hostname=hostname, ip=ip)


def form_swarm(nodes: DockerNodes, token_kind: str = "manager") -> dict[str, str]:
    init = nodes.run(A[0], scripts.init_script())
    assert init.code == 0, init.stderr
    tokens = scripts.parse_tokens(init.stdout)
    joined = nodes.run(B[0], scripts.join_script(tokens[token_kind], A[2]))
    assert joined.code == 0, joined.stderr
    return tokens


def ready_nodes(nodes: DockerNodes, through: str, count: int, timeout: float = 30) -> list[dict]:
    """`docker node ls` once `count` nodes are listed and Ready (a join is seen a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = nodes.nodes(through)
        if len(listed) == count and all(n["Status"] == "Ready" for n in listed):
            return listed
        if time.monotonic() > deadline:
            return listed
        time.sleep(0.5)


def eventually(check, timeout: float = 30):
    """The value of check() once truthy (a node learns a swarm change a moment after the
    command that made it returns), or the last value after the timeout."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def test_two_nodes_form_a_swarm_and_pass_the_health_gate(nodes, image):
    launch(nodes, image, A, B)
    tokens = form_swarm(nodes)
    assert set(tokens) == {"manager", "worker"}
    assert all(t.startswith("SWMTKN-1-") for t in tokens.values())

    # The first node advertises its private address (eth0), not an inner bridge's.
    address = nodes.run(A[0], ["docker info --format '{{.Swarm.NodeAddr}}'"])
    assert address.stdout.strip() == A[2], address

    health = {i: nodes.run(i, scripts.HEALTH_SCRIPT) for i in (A[0], B[0])}
    assert {i: (r.code, r.stdout.strip()) for i, r in health.items()} == {A[0]: (0, "active"), B[0]: (0, "active")}

    listed = ready_nodes(nodes, A[0], 2)
    assert sorted((n["Hostname"], n["Status"]) for n in listed) == [(A[1], "Ready"), (B[1], "Ready")]
    assert nodes.role(A[0]) == nodes.role(B[0]) == "manager"

    # The scripts are idempotent: init on an active node gives the same tokens, join skips.
    again = nodes.run(A[0], scripts.init_script())
    assert again.code == 0 and scripts.parse_tokens(again.stdout) == tokens
    rejoin = nodes.run(B[0], scripts.join_script(tokens["manager"], A[2]))
    assert rejoin.code == 0 and len(ready_nodes(nodes, A[0], 2)) == 2


def test_a_wrong_token_fails_the_join_with_dockers_error(nodes, image):
    launch(nodes, image, A, B)
    form_swarm(nodes)  # A and B in one swarm; a third node tries a forged token
    c = ("i-0ccccccccccccccc3", "ip-10-199-3-30", "10.199.3.30")
    launch(nodes, image, c)
    bogus = "SWMTKN-1-" + "0" * 50 + "-" + "1" * 25
    joined = nodes.run(c[0], scripts.join_script(bogus, A[2]))
    assert joined.code != 0
    assert "Error response from daemon" in joined.stderr
    assert nodes.state(c[0]) != "active"


def test_promote_then_retire_the_first_manager_through_the_second(nodes, image):
    launch(nodes, image, A, B)
    form_swarm(nodes, token_kind="worker")
    ready_nodes(nodes, A[0], 2)
    assert (nodes.role(A[0]), nodes.role(B[0])) == ("manager", "worker")

    promoted = nodes.run(A[0], scripts.promote_script([B[1]]))
    assert promoted.code == 0, promoted.stderr
    assert f"Node {B[1]} promoted to a manager in the swarm." in promoted.stdout
    assert eventually(lambda: nodes.role(B[0]) == "manager")

    retired = nodes.run(B[0], scripts.retire_script([A[1], "ip-10-199-9-99"]))
    assert retired.code == 0, retired.stdout + retired.stderr
    assert "ip-10-199-9-99: not in the swarm" in retired.stdout
    assert f"Manager {A[1]} demoted in the swarm." in retired.stdout
    assert scripts.left_swarm(retired.stdout) == {A[1], "ip-10-199-9-99"}
    assert [n["Hostname"] for n in nodes.nodes(B[0])] == [B[1]]
    assert nodes.run(B[0], scripts.HEALTH_SCRIPT).stdout.strip() == "active"


def test_promote_on_a_worker_fails_as_docker_says(nodes, image):
    launch(nodes, image, A, B)
    form_swarm(nodes, token_kind="worker")
    # The script tries again 45 times (a manager may be electing a leader): a tenth of a second
    # apart here, not two, so the refusal is seen in seconds.
    refused = nodes.run(B[0], ["export SWARM_RETRY_SECONDS=0.1", *scripts.promote_script([A[1]])])
    assert refused.code != 0
    assert "not a swarm manager" in refused.stderr


def test_prune_reports_the_space_a_dangling_image_took(nodes, image):
    launch(nodes, image, A)
    # Two one-layer images of 3 MB of random bytes: one untagged (dangling), one tagged.
    made = nodes.run(
        A[0],
        [
            "set -eu",
            "cd /tmp && mkdir -p junk && head -c 3000000 /dev/urandom > junk/blob",
            "tar -C junk -c . | docker import - >/dev/null",
            "head -c 3000000 /dev/urandom > junk/blob",
            "tar -C junk -c . | docker import - slipway-keep:1 >/dev/null",
            "docker images --filter dangling=true --format '{{.ID}}'",
        ],
    )
    assert made.code == 0, made.stderr
    dangling = made.stdout.split()
    assert len(dangling) == 1
    size = int(nodes.run(A[0], [f"docker image inspect --format '{{{{.Size}}}}' {dangling[0]}"]).stdout)
    assert size >= 3_000_000

    time.sleep(2.1)  # "until=1s" compares whole seconds: the image must be 2s old
    pruned = nodes.run(A[0], scripts.prune_script("until=1s"))
    assert pruned.code == 0, pruned.stderr
    reclaimed = scripts.reclaimed_bytes(pruned.stdout)
    assert reclaimed is not None, pruned.stdout
    # Docker prints 4 significant digits ("3.001MB"): within 1% of the image's size.
    assert abs(reclaimed - size) <= size * 0.01, (reclaimed, size, pruned.stdout)

    left = nodes.run(A[0], ["docker images --format '{{.Repository}}:{{.Tag}}'"]).stdout.split()
    assert left == ["slipway-keep:1"]  # no --all: a tagged image stays

    nothing = nodes.run(A[0], scripts.prune_script("until=1s"))
    assert nothing.code == 0 and scripts.reclaimed_bytes(nothing.stdout) == 0, nothing.stdout


def test_a_stopped_dockerd_fails_the_health_gate(nodes, image):
    launch(nodes, image, A)
    assert nodes.run(A[0], scripts.HEALTH_SCRIPT).stdout.strip() == "inactive"
    nodes.stop_docker(A[0])
    health = nodes.run(A[0], scripts.HEALTH_SCRIPT)
    assert health.code != 0, health
    # Debian 12's docker CLI (20.10), given --format, says so through a template error; without
    # --format it names the daemon it cannot reach.
    assert health.stdout.strip() != "active" and health.stderr
    plain = nodes.run(A[0], ["docker info"])
    assert plain.code != 0 and "Cannot connect to the Docker daemon" in plain.stdout + plain.stderr
    assert nodes.state(A[0]).startswith("error:")
    assert nodes.role(A[0]) is None

    nodes.start_docker(A[0])
    assert nodes.run(A[0], scripts.HEALTH_SCRIPT).stdout.strip() == "inactive"


def test_commands_get_real_exit_codes_and_both_streams(nodes, image):
    launch(nodes, image, A)
    result = nodes.run(A[0], ["echo out", "echo err >&2", "hostname", "exit 7"])
    assert (result.code, result.stdout, result.stderr) == (7, f"out\n{A[1]}\n", "err\n")
    stopped = nodes.run(A[0], ["set -eu", "false", "echo never"])
    assert stopped.code == 1 and stopped.stdout == ""
    # The image is the role's: its daemon.json is there and the node's dockerd uses it.
    config = nodes.run(A[0], ["cat /etc/docker/daemon.json"])
    assert json.loads(config.stdout)["log-driver"] == "json-file"


def _labelled(kind: str, run_id: str) -> list[str]:
    args = ["docker", kind, "ls", "-q", "--filter", f"label={realnodes.LABEL}={run_id}"]
    if kind == "container":
        args.insert(3, "-a")
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


def test_terminate_and_close_leave_nothing_behind(nodes, image):
    launch(nodes, image, A, B)
    assert len(_labelled("container", nodes.run_id)) == 2
    assert len(_labelled("network", nodes.run_id)) == 1
    assert len(_labelled("volume", nodes.run_id)) == 2

    nodes.terminate(B[0])
    assert len(_labelled("container", nodes.run_id)) == 1
    assert len(_labelled("volume", nodes.run_id)) == 1
    gone = nodes.run(B[0], scripts.HEALTH_SCRIPT)
    assert gone.code != 0 and B[0] in gone.stderr
    nodes.terminate(B[0])  # again: nothing to do

    nodes.close()
    assert _labelled("container", nodes.run_id) == []
    assert _labelled("network", nodes.run_id) == []
    assert _labelled("volume", nodes.run_id) == []  # each node's /var/lib/docker
    nodes.close()  # idempotent
    assert realnodes.image_exists(image)  # the module's image is not this object's to remove


def test_an_address_outside_the_network_is_refused(nodes, image):
    with pytest.raises(realnodes.NodeError, match="not in the node network"):
        nodes.launch("i-0ddddddddddddddd4", image=image, hostname="elsewhere", ip="192.168.1.5")
    assert _labelled("container", nodes.run_id) == []


def test_a_join_goes_through_the_next_manager_when_the_first_is_down(nodes, image):
    C = ("i-0ccccccccccccccc3", "ip-10-199-3-30", "10.199.3.30")
    D = ("i-0ddddddddddddddd4", "ip-10-199-4-40", "10.199.4.40")
    launch(nodes, image, A, B, C, D)
    tokens = form_swarm(nodes)  # A inits, B joins as a manager
    joined = nodes.run(C[0], scripts.join_script(tokens["manager"], A[2]))
    assert joined.code == 0, joined.stderr
    assert len(ready_nodes(nodes, A[0], 3)) == 3
    nodes.stop_docker(A[0])  # one of three managers down: the swarm keeps its quorum
    late = nodes.run(D[0], scripts.join_script(tokens["worker"], A[2], B[2]))
    assert late.code == 0, late.stdout + late.stderr
    listed = eventually(lambda: [n for n in nodes.nodes(B[0]) if n["Hostname"] == D[1] and n["Status"] == "Ready"])
    assert listed, nodes.nodes(B[0])
    assert nodes.role(D[0]) == "worker"


def test_nested_containers_take_exec_and_health_checks_on_overlay2(nodes, image):
    launch(nodes, image, A)
    # A tiny image from the node's own root: dash (also as /bin/sh) and the C library it needs.
    made = nodes.run(
        A[0],
        [
            "set -eu",
            "test \"$(docker info --format '{{.Driver}}')\" = overlay2",
            "libs=$(ldd /bin/dash | grep -o '/[^ ]*' | sort -u)",
            "tar -ch /bin/sh /bin/dash $libs 2>/dev/null | docker import - slipway-tiny:1 >/dev/null",
            "docker run -d -i --name tiny --health-cmd 'exit 0' --health-interval 1s slipway-tiny:1 /bin/dash",
            "docker exec tiny /bin/dash -c 'echo exec-ok'",
        ],
    )
    assert made.code == 0 and made.stdout.splitlines()[-1] == "exec-ok", made
    health = eventually(
        lambda: nodes.run(A[0], ["docker inspect --format '{{.State.Health.Status}}' tiny"]).stdout.strip() == "healthy"
    )
    assert health, nodes.run(A[0], ["docker inspect --format '{{json .State.Health}}' tiny"]).stdout


def test_commands_get_the_aws_endpoint_and_registries_and_ports_reach_this_machine(image):
    made = DockerNodes(
        SUBNET,
        run_id=f"test-{uuid.uuid4().hex[:10]}",
        aws_endpoint="http://10.199.0.1:4566",
        aws_region="eu-west-1",
        insecure_registries=["10.199.0.1:5999"],
        published_ports=[8080],
    )
    try:
        assert made.gateway == "10.199.0.1"
        launch(made, image, A)
        env = made.run(A[0], ["env | grep ^AWS_ | sort"]).stdout.splitlines()
        assert env == [
            "AWS_ACCESS_KEY_ID=testing",
            "AWS_DEFAULT_REGION=eu-west-1",
            "AWS_ENDPOINT_URL=http://10.199.0.1:4566",
            "AWS_REGION=eu-west-1",
            "AWS_SECRET_ACCESS_KEY=testing",
        ]
        registries = made.run(A[0], ["docker info --format '{{json .RegistryConfig.IndexConfigs}}'"])
        assert json.loads(registries.stdout)["10.199.0.1:5999"]["Secure"] is False
        # A server on the node's port 8080 answers on this machine's loopback.
        served = made.run(A[0], ["cd /etc && (python3 -m http.server 8080 >/dev/null 2>&1 &) && sleep 1"])
        assert served.code == 0, served
        url = f"http://127.0.0.1:{made.host_port(A[0], 8080)}/hostname"
        answer = eventually(lambda: _get(url), timeout=10)
        assert answer == f"{A[1]}\n"
        with pytest.raises(realnodes.NodeError, match="not published"):
            made.host_port(A[0], 9090)
    finally:
        made.close()


def _get(url: str) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_a_second_image_key_of_the_same_root_is_made_from_the_first_with_its_own_labels(image):
    # The pipeline's bake (slipway/emulator/) gives every image key of one role content the same
    # converged root: the second key's image is that root too, with its own labels, not a re-import.
    root = realnodes.working_tree_tag()  # the root `image` was imported from
    tag = "test-derived"  # one name each run (its bake lock file in .cache/ too); a leftover goes first
    realnodes.remove_images([realnodes.image_name(f"{tag}-2"), realnodes.image_name(tag)])
    said: list[str] = []
    derived = realnodes.bake_image(tag, log=said.append, labels={"slipway.run": "derived"}, root_tag=root)
    again = realnodes.bake_image(f"{tag}-2", log=said.append, root_tag=root)  # from either of the two
    try:
        assert any("made from an image of the same root" in line for line in said), said

        def config(of: str) -> dict:
            inspected = ["docker", "image", "inspect", "--format", "{{json .Config}}", of]
            return json.loads(subprocess.run(inspected, capture_output=True, text=True, check=True).stdout)

        made, base = config(derived), config(image)
        assert made["Labels"]["slipway.run"] == "derived" and made["Labels"][realnodes.ROLE_LABEL] == "node-image"
        assert made["Cmd"] == base["Cmd"] == realnodes.NODE_COMMAND  # a node container starts its dockerd
        listed = ["docker", "run", "--rm", "--entrypoint", "cat", derived, "/etc/docker/daemon.json"]
        assert subprocess.run(listed, capture_output=True, check=True).stdout  # the role's files are there
    finally:
        # Parent listed first or not, both go (a parent is removed once its child is), the base stays.
        assert realnodes.remove_images([derived, again]) == 2
        assert not realnodes.image_exists(derived) and not realnodes.image_exists(again)
        assert realnodes.image_exists(image)
