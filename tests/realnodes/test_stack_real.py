"""The application stack for real: a two-node swarm of node containers (the image baked with the
swarm_node role), the node tool fetching the stack file from S3 and a secret from SSM of this
process's moto (served to the nodes on their network's gateway), `docker stack deploy` pulling
example/web's images from a local registry, the service answering through a node's published
port, a rolling update, and a rollback by Swarm of an image whose health check fails.

What this machine's kernel allows shapes the stack (slipway/realnodes/): no IPVS, so no routing
mesh and no service VIP: the port is published in `mode: host` and the service uses
`endpoint_mode: dnsrr`. One replica on two nodes: a start-first update needs a node whose host
port is free for the new task.

Needs root, debootstrap, the docker CLI, a running dockerd and docker-registry; where they are
missing the tests skip and say why, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import pytest

from chalicelib import scripts
from slipway.realnodes import DockerNodes, registry
from tests.realnodes import LOST_AFTER_SECONDS

# Not another module's subnet (10.199: test_docker_nodes, 10.198: test_pipeline, 10.42: a demo);
# one per pytest-xdist worker, should this module's tests be spread over several.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
NET = f"10.{190 + _WORKER % 8}"
SUBNET = f"{NET}.0.0/16"
A = ("i-0aaaaaaaaaaaaaaa1", f"ip-{NET.replace('.', '-')}-1-10", f"{NET}.1.10")
B = ("i-0bbbbbbbbbbbbbbb2", f"ip-{NET.replace('.', '-')}-2-20", f"{NET}.2.20")
REGION = "eu-west-1"
BUCKET = "slipway-stack-test-artifacts"
PARAMETER = "/slipway/stack-test/web-token"
SECRET_VALUE = f"token-{uuid.uuid4().hex}"
STACK = "web"
SERVICE = f"{STACK}_web"
TASK_LABEL = f"com.docker.swarm.service.name={SERVICE}"
PORT = 8080
# A first pull on a fresh node, a start-first update with its 15 s monitor, a rollback: each well
# within this (measured: about 10 s, 25 s, 30 s).
ROLLOUT_SECONDS = 180


def stack_file(image: str) -> str:
    return f"""\
version: "3.8"
services:
  web:
    image: {image}
    ports:
      - {{target: {PORT}, published: {PORT}, protocol: tcp, mode: host}}
    secrets:
      - {{source: web_token, target: web_token}}
    deploy:
      replicas: 1
      endpoint_mode: dnsrr
      update_config: {{parallelism: 1, order: start-first, failure_action: rollback, monitor: 15s}}
      rollback_config: {{parallelism: 1, order: start-first}}
      restart_policy: {{condition: any, delay: 1s}}
secrets:
  web_token:
    external: true
    name: slipway_web_token
"""


def deploy_script(key: str) -> list[str]:
    """What the pipeline runs on a manager through SSM: the stack file and the secret with the
    node's role, then the deploy."""
    return [
        "set -eu",
        "install -d -m 0700 /var/lib/slipway",
        f"slipway-node fetch {BUCKET} {key} /var/lib/slipway/stack.yml",
        f"slipway-node secret slipway_web_token {PARAMETER}",
        "docker stack deploy --with-registry-auth --resolve-image always --prune"
        f" -c /var/lib/slipway/stack.yml {STACK}",
    ]


class Swarm:
    def __init__(self, nodes: DockerNodes, images: dict[str, str], s3) -> None:
        self.nodes, self.images, self.s3 = nodes, images, s3
        self.hosts = {A[1]: A[0], B[1]: B[0]}
        self.first = None  # the first deploy's Result

    def deploy(self, tag: str):
        key = f"stacks/{tag}-{uuid.uuid4().hex[:8]}/docker-compose.yml"
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=stack_file(self.images[tag]).encode())
        return self.nodes.run(A[0], deploy_script(key))

    def inspect(self) -> dict:
        found = self.nodes.run(A[0], [f"docker service inspect {SERVICE}"])
        assert found.code == 0, found.stderr
        return json.loads(found.stdout)[0]

    def tasks(self) -> list[dict]:
        """The service's tasks that should run: id, image, node (instance id), state."""
        listed = self.nodes.run(
            A[0], [f"docker service ps {SERVICE} --filter desired-state=running --no-trunc --format '{{{{json .}}}}'"]
        )
        assert listed.code == 0, listed.stderr
        tasks = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        return [
            {"id": t["ID"], "image": t["Image"], "node": self.hosts.get(t["Node"]), "state": t["CurrentState"]}
            for t in tasks
        ]

    def answer(self, instance_id: str) -> str | None:
        """GET / through the node's published port (on this machine's loopback), or None: refused,
        reset, or unanswered for LOST_AFTER_SECONDS."""
        url = f"http://127.0.0.1:{self.nodes.host_port(instance_id, PORT)}/"
        try:
            with urllib.request.urlopen(url, timeout=LOST_AFTER_SECONDS) as response:
                return response.read().decode().strip()
        except OSError:
            return None

    def answers(self) -> dict[str, str | None]:
        return {instance_id: self.answer(instance_id) for instance_id in (A[0], B[0])}

    def wait_for_answer(self, version: str, timeout: float = ROLLOUT_SECONDS) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            for instance_id, line in self.answers().items():
                if line and f"version={version} " in line:
                    return instance_id, line
            if time.monotonic() > deadline:
                pytest.fail(f"no node answered version {version} in {timeout}s: {self.answers()} {self.tasks()}")
            time.sleep(1)

    def follow_update(self, timeout: float = ROLLOUT_SECONDS) -> tuple[str, list[dict[str, str | None]]]:
        """Poll (once a second, bounded) until Swarm's update of the service ends; returns its final
        UpdateStatus.State and what both nodes answered at each poll."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            seen.append(self.answers())
            state = (self.inspect().get("UpdateStatus") or {}).get("State", "")
            if state in ("completed", "rollback_completed", "paused", "rollback_paused"):
                return state, seen
            if time.monotonic() > deadline:
                pytest.fail(f"the update of {SERVICE} did not end in {timeout}s: {state!r}, {self.tasks()}")
            time.sleep(1)


def version_of(line: str | None) -> str | None:
    for word in (line or "").split():
        if word.startswith("version="):
            return word.removeprefix("version=")
    return None


@pytest.fixture(scope="module")
def local_registry(image, local_registry_available):
    with registry.LocalRegistry() as started:
        pushed = registry.example_images(started)
        yield started, pushed


@pytest.fixture(scope="module")
def swarm(image, local_registry):
    import boto3
    from moto import mock_aws

    served, pushed = local_registry
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        boto3.client("ssm", region_name=REGION).put_parameter(Name=PARAMETER, Value=SECRET_VALUE, Type="SecureString")
        nodes = DockerNodes(SUBNET, run_id=f"test-{uuid.uuid4().hex[:10]}", aws_region=REGION, published_ports=[PORT])
        try:
            at_gateway = served.address(nodes.gateway)
            nodes.insecure_registries = (at_gateway,)
            nodes.start_aws_endpoint()  # moto, as the nodes see it: http://<gateway>:<port>
            for instance_id, hostname, ip in (A, B):
                nodes.launch(instance_id, image=image, hostname=hostname, ip=ip)
            init = nodes.run(A[0], scripts.init_script())
            assert init.code == 0, init.stderr
            joined = nodes.run(B[0], scripts.join_script(scripts.parse_tokens(init.stdout)["worker"], A[2]))
            assert joined.code == 0, joined.stderr
            images = {tag: f"{at_gateway}/{registry.EXAMPLE_REPOSITORY}:{tag}" for tag in pushed}
            made = Swarm(nodes, images, s3)
            made.first = made.deploy("1")
            yield made
        finally:
            nodes.close()


def test_the_node_tool_fetches_the_stack_file_and_makes_the_secret_through_the_endpoint(swarm):
    first = swarm.first
    assert first.code == 0, first.stdout + first.stderr
    assert f"Creating service {SERVICE}" in first.stdout
    assert first.stderr == ""
    # Debian 12's boto3 (1.26) on the node, reaching moto only through AWS_ENDPOINT_URL.
    fetched = swarm.nodes.run(A[0], ["stat -c %a /var/lib/slipway/stack.yml", "cat /var/lib/slipway/stack.yml"])
    assert fetched.code == 0 and fetched.stdout == "600\n" + stack_file(swarm.images["1"]), fetched
    secret = swarm.nodes.run(A[0], ["docker secret inspect slipway_web_token --format '{{json .Spec.Labels}}'"])
    assert json.loads(secret.stdout) == {"slipway.parameter": PARAMETER}
    again = swarm.nodes.run(A[0], [f"slipway-node secret slipway_web_token {PARAMETER}"])
    assert (again.code, again.stdout, again.stderr) == (0, "", "")
    missing = swarm.nodes.run(A[0], [f"slipway-node fetch {BUCKET} stacks/none.yml /tmp/none.yml"])
    assert missing.code == 1 and f"s3://{BUCKET}/stacks/none.yml" in missing.stderr and "NoSuchKey" in missing.stderr


def test_version_1_answers_through_a_nodes_published_port_with_its_secret(swarm):
    instance_id, line = swarm.wait_for_answer("1")
    assert line.endswith("secret=yes"), line
    [task] = swarm.tasks()
    assert task["node"] == instance_id and task["image"].startswith(swarm.images["1"] + "@sha256:")
    # The task got the parameter's value as its secret file.
    value = swarm.nodes.run(
        instance_id,
        [f"docker exec $(docker ps -q --filter label={TASK_LABEL}) cat /run/secrets/web_token"],
    )
    assert (value.code, value.stdout) == (0, SECRET_VALUE), value
    # The other node reaches it on the node's private address, as a load balancer would.
    other = B if instance_id == A[0] else A
    mine = A if other is B else B
    probe = swarm.nodes.run(
        other[0],
        [
            f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{mine[2]}:{PORT}/').read().decode())\""
        ],
    )
    assert probe.code == 0 and probe.stdout.strip() == line, probe


def test_deploying_the_same_stack_again_restarts_no_task(swarm):
    swarm.wait_for_answer("1")
    before, tasks = swarm.inspect(), swarm.tasks()
    again = swarm.deploy("1")  # the same file (a new key), the same digest
    assert again.code == 0 and f"Updating service {SERVICE}" in again.stdout, again
    after = swarm.inspect()
    # Measured on Docker 20.10: the CLI sends the update anyway, so the service's version and
    # UpdatedAt change on every deploy; its tasks stay (same ids, no rollout).
    assert after["Version"]["Index"] > before["Version"]["Index"]
    assert after["UpdatedAt"] != before["UpdatedAt"]
    assert after.get("UpdateStatus") == before.get("UpdateStatus")
    assert after["Spec"]["TaskTemplate"] == before["Spec"]["TaskTemplate"]
    time.sleep(3)  # a restart would show by now: the old task shut down, a new one starting
    assert [t["id"] for t in swarm.tasks()] == [t["id"] for t in tasks]


def test_an_update_to_version_2_rolls_out_start_first(swarm):
    swarm.wait_for_answer("1")
    updated = swarm.deploy("2")
    assert updated.code == 0, updated.stdout + updated.stderr
    state, seen = swarm.follow_update()
    assert state == "completed", (state, swarm.inspect().get("UpdateStatus"))
    # start-first: at every poll some node answered, the old version or the new.
    assert all({version_of(line) for line in answers.values()} & {"1", "2"} for answers in seen), seen
    instance_id, line = swarm.wait_for_answer("2", timeout=10)
    [task] = swarm.tasks()
    assert task["node"] == instance_id and task["image"].startswith(swarm.images["2"] + "@sha256:")
    # Deployed again unchanged, the service loses the last update's status (Swarm resets it on every
    # ServiceUpdate and no rollout sets it again): no UpdateStatus means "nothing rolled out".
    assert swarm.inspect()["UpdateStatus"]["State"] == "completed"
    again = swarm.deploy("2")
    assert again.code == 0, again
    time.sleep(2)
    assert "UpdateStatus" not in swarm.inspect()
    assert [t["id"] for t in swarm.tasks()] == [task["id"]]


def test_an_update_to_an_unhealthy_image_is_rolled_back_by_swarm(swarm):
    [running] = swarm.tasks()
    serving = version_of(swarm.answer(running["node"]))
    assert serving in ("1", "2")
    spec_image = swarm.inspect()["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    broken = swarm.deploy("broken")
    assert broken.code == 0, broken.stdout + broken.stderr
    state, seen = swarm.follow_update()
    assert state == "rollback_completed", (state, swarm.inspect().get("UpdateStatus"))
    # The old task was never stopped: it answered its version at every poll.
    assert all(version_of(answers[running["node"]]) == serving for answers in seen), seen
    after = swarm.inspect()
    assert after["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == spec_image
    assert [t["id"] for t in swarm.tasks()] == [running["id"]]
    history = swarm.nodes.run(A[0], [f"docker service ps {SERVICE} --no-trunc --format '{{{{json .}}}}'"])
    tasks = [json.loads(line) for line in history.stdout.splitlines()]
    # Swarm stopped the unhealthy task; its exit code (143, SIGTERM's) says it failed, and why.
    assert any(t["Image"].startswith(swarm.images["broken"]) and "unhealthy" in t["Error"] for t in tasks), tasks


def test_the_local_registry_serves_until_closed_and_keeps_its_storage(tmp_path, local_registry_available):
    served = registry.LocalRegistry(storage=tmp_path / "registry").start()
    try:
        with urllib.request.urlopen(f"http://{served.push_address}/v2/", timeout=5) as answer:
            assert answer.status == 200
        assert served.address("10.190.0.1") == f"10.190.0.1:{served.port}"
        assert served.start() is served  # already running: the same process
    finally:
        served.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{served.push_address}/v2/", timeout=2)
    assert (tmp_path / "registry").is_dir()
    served.close()  # idempotent


class _Commit:
    """A commit's files for stack.parse: {path: bytes}."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def kind(self, path: str) -> str | None:
        return "file" if path in self.files else None

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)


def _deploy_conf(swarm, content: bytes) -> str:
    """The pipeline's reading and deploy script for a stack binding a repository file read-only;
    returns the Swarm config's name."""
    from chalicelib import rollout, stack

    compose = (
        "services:\n  conf:\n"
        f"    image: {swarm.images['1']}\n"
        "    volumes: ['./app.conf:/etc/app/app.conf:ro']\n"
        "    deploy: {endpoint_mode: dnsrr}\n"
    )
    parsed = stack.parse(compose, path="compose.yaml", files=_Commit({"app.conf": content}))
    document = stack.rendered(parsed, {})
    data = stack.dump(document)
    key = stack.content_key(data)
    swarm.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    for digest, body in parsed.config_data.items():
        swarm.s3.put_object(Bucket=BUCKET, Key=stack.config_key(digest), Body=body)
    done = swarm.nodes.run(A[0], rollout.deploy_script("conf", BUCKET, key, {}, [], rollout.config_files(document)))
    assert done.code == 0, done.stdout + done.stderr
    [name] = [c["name"] for c in document["configs"].values()]
    return name


def _read_in_task(swarm, content: bytes) -> None:
    deadline = time.monotonic() + ROLLOUT_SECONDS
    while True:
        for instance_id in (A[0], B[0]):
            read = swarm.nodes.run(
                instance_id,
                [
                    "for id in $(docker ps -q --filter label=com.docker.swarm.service.name=conf_conf); do",
                    '  docker exec "$id" cat /etc/app/app.conf; echo; done',
                ],
            )
            if read.code == 0 and content.decode() in read.stdout:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"no task of conf_conf read {content!r} in {ROLLOUT_SECONDS}s")
        time.sleep(1)


def test_a_read_only_bind_of_a_repository_file_reaches_the_container_as_a_config(swarm):
    # Given a compose file binding a file of the repository read-only, deployed as the pipeline does
    versions = [f"# the commit's bytes {n} {uuid.uuid4().hex}\nlisten {PORT};".encode() for n in range(3)]
    names = []
    for content in versions:
        names.append(_deploy_conf(swarm, content))
        # Then the task reads the commit's bytes from the config named by their content
        _read_in_task(swarm, content)
    assert len(set(names)) == 3
    # And a config no task uses any more is removed by a later deploy (the same file again: nothing
    # changes but the clean-up); the one in use stays
    assert _deploy_conf(swarm, versions[2]) == names[2]
    inspected = swarm.nodes.run(A[0], [f"docker config inspect --format '{{{{.Spec.Name}}}}' {names[0]} {names[2]}"])
    assert inspected.stdout.split() == [names[2]], inspected
