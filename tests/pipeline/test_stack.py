"""The application on the swarm: every push deploys the commit's stack file, only what changed,
health-gated, rolled back on failure; a bad file is refused before anything changes."""

import json
import os

import pytest

from chalicelib import naming
from chalicelib.aws import ec2 as ec2_adapter
from slipway.harness import commit_id, deploy

STACK = b"""
version: "3.8"
services:
  web:
    image: slipway-example/web:1
    ports: ["8080:8080"]
    secrets: [app_token]
    deploy:
      replicas: 2
    healthcheck:
      test: ["CMD", "true"]
      interval: 5s
      start_period: 10s
  worker:
    image: slipway-example/worker:1
secrets:
  app_token:
    external: true
"""
SECRET_VALUE = "s3cr3t-value-that-must-stay-in-ssm"


def with_stack(emu, data: bytes = STACK, *, path: str = "stack.yml") -> str:
    commit = commit_id()
    emu.github.files[commit] = {path: data}
    return commit


def put_secret(emu, key: str = "app_token", value: str = SECRET_VALUE) -> None:
    emu.client("ssm").put_parameter(
        Name=naming.secret_parameter(emu.environment, key), Value=value, Type="SecureString", Overwrite=True
    )


def services(emu, run) -> dict:
    manager = run.output["rollout"]["manager"]
    return {name.split("_", 1)[1]: s for name, s in emu.nodes.services(manager).items()}


def commands(emu, kind: str) -> list[str]:
    return [what for _, what in emu.nodes.history if what.startswith(kind)]


@pytest.fixture
def emu(make_emulator):
    emu = make_emulator()
    put_secret(emu)
    return emu


def test_a_commit_without_a_stack_file_deploys_nodes_only_and_says_so(emu):
    run = deploy(emu)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["stack"] == {
        "present": False,
        "path": "stack.yml",
        "key": None,
        "services": [],
        "secrets": {},
        "ports": [],
        "warnings": [],
    }
    assert "Inspect the stack" not in run.states
    assert not commands(emu, "stack")
    assert "no stack file" in emu.github.statuses[-1]["description"]


def test_the_stack_runs_on_the_swarm_and_the_run_lists_its_services(emu):
    run = deploy(emu, with_stack(emu))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    listed = {s["name"]: s for s in run.output["rollout"]["services"]}
    assert set(listed) == {"web", "worker"}
    web = listed["web"]
    assert web["image"] == "slipway-example/web:1"
    assert web["digest"] == emu.nodes.registry["slipway-example/web:1"].digest
    assert (web["running"], web["desired"], web["updated"], web["state"]) == (2, 2, True, "converged")
    running = services(emu, run)
    assert running["web"].definition["image"] == f"slipway-example/web:1@{web['digest']}"
    # Slipway's safe defaults, and the secret by a name of its version.
    update = running["web"].definition["deploy"]["update_config"]
    assert (update["order"], update["failure_action"]) == ("start-first", "rollback")
    assert "app_token-v1" in emu.nodes.swarm_of(run.output["rollout"]["manager"]).secrets
    assert emu.github.statuses[-1]["state"] == "success"
    assert "2 services" in emu.github.statuses[-1]["description"]


def test_a_push_that_changes_neither_the_stack_nor_a_digest_updates_no_service(emu):
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    before = {name: (s.updated_at, s.version) for name, s in services(emu, first).items()}
    deploys = len(commands(emu, "docker stack deploy"))
    again = deploy(emu, with_stack(emu))
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    assert "Bake node image" not in again.states and "Update the stack" in again.states
    assert {name: (s.updated_at, s.version) for name, s in services(emu, again).items()} == before
    assert len(commands(emu, "docker stack deploy")) == deploys  # nothing sent to deploy
    assert again.output["rollout"]["changed"] == []
    assert {s["name"]: s["updated"] for s in again.output["rollout"]["services"]} == {"web": False, "worker": False}
    assert {s["name"]: (s["running"], s["desired"]) for s in again.output["rollout"]["services"]} == {
        "web": (2, 2),
        "worker": (1, 1),
    }


def test_a_new_digest_of_one_image_updates_that_service_only(emu):
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    worker_before = services(emu, first)["worker"].updated_at
    digest = emu.nodes.push("slipway-example/web:1")  # the same tag, rebuilt
    run = deploy(emu, with_stack(emu))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["rollout"]["changed"] == ["web"]
    running = services(emu, run)
    assert running["web"].definition["image"].endswith(digest)
    assert running["worker"].updated_at == worker_before


def test_a_failing_healthcheck_is_rolled_back_and_the_old_version_keeps_serving(emu):
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    good = services(emu, first)["web"].definition["image"]
    emu.nodes.push("slipway-example/web:2", healthy=False)
    run = deploy(emu, with_stack(emu, STACK.replace(b"web:1", b"web:2")))
    assert run.status == "FAILED"
    assert run.error == "StackFailed" and "service web was rolled back" in run.cause
    assert "unhealthy" in run.cause
    web = services(emu, first)["web"]
    assert web.definition["image"] == good and web.update_state == "rollback_completed"
    status = emu.github.statuses[-1]
    assert status["state"] == "failure" and "web" in status["description"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"services: [unclosed", "stack.yml"),
        (b"version: '3.8'\nservices:\n  web:\n    imagee: nginx\n", "imagee"),
        (b"version: '3.8'\nservices:\n  web:\n    deploy: {replicas: 1}\n", "image"),
        (
            b"version: '3.8'\nservices:\n  db:\n    image: postgres:16\n    volumes: ['data:/var/lib/postgresql']\n"
            b"volumes:\n  data: {}\n",
            "SLIPWAY_LOCAL_VOLUMES",
        ),
    ],
)
def test_a_bad_stack_file_is_refused_before_anything_changes(emu, data, problem):
    run = deploy(emu, with_stack(emu, data))
    assert run.status == "FAILED"
    assert run.error == "StackInvalid" and problem in run.cause and "stack.yml" in run.cause
    assert "Look for earlier runs" not in run.states
    assert set(ec2_adapter.count_tagged(emu.client("ec2"), emu.environment).values()) == {0}
    assert emu.github.statuses[-1]["state"] == "failure"


def test_a_stack_secret_without_a_value_in_ssm_is_refused_before_anything_changes(make_emulator):
    emu = make_emulator()
    run = deploy(emu, with_stack(emu))
    assert run.status == "FAILED" and run.error == "StackInvalid"
    assert naming.secret_parameter(emu.environment, "app_token") in run.cause
    assert set(ec2_adapter.count_tagged(emu.client("ec2"), emu.environment).values()) == {0}


def test_a_secrets_value_appears_nowhere_but_its_store(emu, capfd, every_log_record):
    run = deploy(emu, with_stack(emu))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    put_secret(emu, value="rotated-" + SECRET_VALUE)  # a new value: a new swarm secret, web updated
    rotated = deploy(emu, with_stack(emu))
    assert rotated.status == "SUCCEEDED", (rotated.error, rotated.cause)
    assert rotated.output["rollout"]["changed"] == ["web"]
    assert "app_token-v2" in emu.nodes.swarm_of(rotated.output["rollout"]["manager"]).secrets
    sfn, ssm = emu.client("stepfunctions"), emu.client("ssm")
    places = []
    for execution in (run, rotated):
        history = sfn.get_execution_history(executionArn=execution.execution_arn, maxResults=1000)["events"]
        places.append(json.dumps(history, default=str))
    for command in ssm.list_commands()["Commands"]:
        places.append(json.dumps(command["Parameters"]))
        for invocation in ssm.list_command_invocations(CommandId=command["CommandId"], Details=True)[
            "CommandInvocations"
        ]:
            places.append(json.dumps(invocation, default=str))
    places.append(json.dumps(emu.github.statuses))
    places.append(json.dumps([repr(r) for _, r in emu.results]))
    captured = capfd.readouterr()
    places += [captured.out, captured.err, *every_log_record]
    assert any("stack file read" in r for r in every_log_record)  # the functions' log lines are searched
    bucket = emu.client("s3")
    for obj in bucket.list_objects_v2(Bucket=os.environ["SLIPWAY_BAKE_BUCKET"]).get("Contents", []):
        places.append(
            bucket.get_object(Bucket=os.environ["SLIPWAY_BAKE_BUCKET"], Key=obj["Key"])["Body"]
            .read()
            .decode(errors="replace")
        )
    assert not [p for p in places if SECRET_VALUE in p]


def test_a_service_dropped_from_the_stack_is_removed(emu):
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    without_worker = STACK.split(b"  worker:")[0] + b"secrets:\n  app_token:\n    external: true\n"
    run = deploy(emu, with_stack(emu, without_worker))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["rollout"]["removed"] == ["worker"] and run.output["rollout"]["changed"] == []
    assert set(services(emu, run)) == {"web"}


def test_a_stack_of_public_images_deploys_on_emulated_nodes_as_written(emulator):
    # Given a stack whose images a public registry serves (nothing pushed to the emulated one)
    stack = b"""
services:
  proxy:
    image: nginx:1.27
    ports: ["8080:80"]
  cache:
    image: redis:7-alpine
  metrics:
    image: ghcr.io/prometheus/node-exporter:v1.8.2
"""
    run = deploy(emulator, with_stack(emulator, stack))
    # Then each is pulled, pinned to a digest and running
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    found = {s["name"]: s for s in run.output["rollout"]["services"]}
    assert sorted(found) == ["cache", "metrics", "proxy"]
    assert all(s["digest"].startswith("sha256:") and s["running"] == s["desired"] for s in found.values())


def test_an_image_no_registry_serves_fails_the_run_before_the_stack_changes(emulator):
    emulator.nodes.missing.add("nginx:0.0.404")
    stack = b"""
services:
  proxy:
    image: nginx:0.0.404
"""
    run = deploy(emulator, with_stack(emulator, stack))
    assert run.status == "FAILED" and run.error == "StackFailed"
    assert "nginx:0.0.404 could not be pulled on the manager" in run.cause
