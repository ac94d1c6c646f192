"""A service's build for real: this machine's dockerd builds it with BuildKit (as the emulator's
CodeBuild does with real nodes) and pushes it to the local registry; then a pushed code change of an
application repository answers through the load balancer, with no request lost while it rolls out."""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from slipway import PROJECT_DIR, realnodes
from slipway.harness import application_repository, deploy, git
from slipway.harness import commit_files as commit
from slipway.realnodes import build, registry
from tests.realnodes import REAL_RUN_SECONDS, through_load_balancer

SECRET_VALUE = "build-secret-that-must-not-reach-a-layer"
DOCKERFILE = """\
ARG BASE=python:3.12-slim
FROM ${BASE}
COPY hello.txt /srv/hello.txt
RUN --mount=type=secret,id=token test -s /run/secrets/token && echo "token seen" > /srv/seen.txt
ARG GREETING=hi
RUN echo "$GREETING" > /srv/greeting.txt
"""


def source(files: dict[str, str]) -> zipfile.ZipFile:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return zipfile.ZipFile(io.BytesIO(data.getvalue()))


TARGET = {"context": "app", "dockerfile": "Dockerfile", "args": {"GREETING": "hello"}}
FILES = {"app/Dockerfile": DOCKERFILE, "app/hello.txt": "hello\n"}


@pytest.fixture(scope="module")
def local(require, local_registry_available):
    require(realnodes.bake_available())
    with registry.LocalRegistry().start() as found:
        yield found


def test_an_unchanged_context_rebuilt_pushes_the_same_digest(local):
    reference = f"{local.push_address}/slipway/test/app:same"
    built, first, log = build.build_service(local, TARGET, source(FILES), reference, {"token": SECRET_VALUE})
    assert built, "\n".join(log[-20:])
    again, second, _ = build.build_service(local, TARGET, source(FILES), reference, {"token": SECRET_VALUE})
    assert again and first == second and first.startswith("sha256:")
    # A changed file of the context is a new image
    changed = FILES | {"app/hello.txt": "hello again\n"}
    _, third, _ = build.build_service(local, TARGET, source(changed), reference, {"token": SECRET_VALUE})
    assert third != first


def test_a_build_secret_is_mounted_but_never_in_a_layer_the_history_or_the_log(local):
    reference = f"{local.push_address}/slipway/test/app:secret"
    built, _, log = build.build_service(local, TARGET, source(FILES), reference, {"token": SECRET_VALUE})
    assert built, "\n".join(log[-20:])
    # The build saw it (the RUN that needs it passed) ...
    shown = subprocess.run(["docker", "run", "--rm", reference, "cat", "/srv/seen.txt"], capture_output=True, text=True)
    assert shown.stdout.strip() == "token seen", shown.stderr
    # ... and it is nowhere in the image: no layer, no history, no config, nor the build's log
    saved = subprocess.run(["docker", "save", reference], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as image:
        for member in image.getmembers():
            if member.isfile():
                data = image.extractfile(member).read()  # type: ignore[union-attr]
                if member.name.endswith(".tar"):
                    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                        for entry in layer.getmembers():
                            if entry.isfile():
                                assert SECRET_VALUE.encode() not in layer.extractfile(entry).read(), entry.name  # type: ignore[union-attr]
                assert SECRET_VALUE.encode() not in data, member.name
    history = subprocess.run(["docker", "history", "--no-trunc", reference], capture_output=True, text=True).stdout
    assert SECRET_VALUE not in history and "token" in history
    assert SECRET_VALUE not in "\n".join(log)


def test_a_failing_dockerfile_fails_the_build_with_buildkits_own_words(local):
    files = FILES | {"app/Dockerfile": DOCKERFILE + "RUN exit 3\n"}
    built, digest, log = build.build_service(
        local, TARGET, source(files), f"{local.push_address}/slipway/test/app:broken", {"token": SECRET_VALUE}
    )
    assert not built and digest is None
    assert any("exit code: 3" in line for line in log), log[-10:]


# --- an application repository, end to end on real nodes -------------------------------------------

WEB_STACK = """\
services:
  web:
    build:
      context: ./web
      args: {VERSION: "%s"}
    ports: ["80:8080"]
    healthcheck:
      test: ["CMD", "python3", "/srv/web/app.py", "check"]
      interval: 2s
      timeout: 2s
      retries: 3
      start_period: 2s
    deploy:
      replicas: 2
"""


@pytest.fixture
def web_repo(tmp_path) -> Path:
    """An application repository: the example's web service and a stack file that builds it."""
    example = PROJECT_DIR / "example" / "web"
    files = {f"web/{p.name}": p.read_text() for p in example.iterdir() if p.is_file()}
    return application_repository(tmp_path / "web-app", files | {"stack.yml": WEB_STACK % "1"})


def test_a_pushed_code_change_answers_through_the_load_balancer_with_no_request_lost(make_emulator, require, web_repo):
    require(realnodes.bake_available())
    require(registry.registry_available())
    emu = make_emulator(
        node_count=2,
        real_nodes=True,
        poll_seconds=1,
        repo=web_repo,
        extra_environment={"SLIPWAY_VPC_CIDR": "10.180.0.0/16", "SLIPWAY_STACK_FILE": "stack.yml"},
    )
    emu.nodes.remove_images = False
    first = deploy(emu, git(web_repo, "rev-parse", "HEAD"), timeout=REAL_RUN_SECONDS)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    assert [s["built"] for s in first.output["builds"]["services"]] == [True]
    assert (through_load_balancer(emu) or "").startswith("slipway-example/web version=1")
    balanced: list[str | None] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            balanced.append(through_load_balancer(emu))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        second = deploy(emu, commit(web_repo, {"stack.yml": WEB_STACK % "2"}), timeout=REAL_RUN_SECONDS)
    finally:
        stop.set()
        sampler.join()
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert [s["built"] for s in second.output["builds"]["services"]] == [True]
    assert second.output["rollout"]["changed"] == ["web"]
    assert (through_load_balancer(emu) or "").startswith("slipway-example/web version=2")
    failed = [b for b in balanced if not (b or "").startswith("slipway-example/web")]
    assert len(balanced) > 20 and not failed, f"{len(failed)} of {len(balanced)} requests failed: {failed[:3]}"
    assert any("version=1" in b for b in balanced) and any("version=2" in b for b in balanced)
