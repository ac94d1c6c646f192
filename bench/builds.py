"""Builds per push kind on a three-service application repository: the services built and reused
(cache hits: a build key ECR already has), the services updated, and the run's wall seconds on the
emulator; then the same builds for real on this machine's dockerd (BuildKit), cold (its build cache
pruned) and warm, in seconds, when a dockerd, the local registry and the node image's base root are
here. CodeBuild's side (provisioning, buildx bake, the registry cache) cannot run here: docs/costs.md
estimates its minutes."""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from unittest import mock

from slipway.emulator import Emulator
from slipway.harness import application_repository, commit_files, deploy, git

QUIET = {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}
SERVICE = """\
ARG BASE=python:3.12-slim
FROM ${BASE}
COPY . /srv/app
RUN python3 -m compileall -q /srv/app && python3 -c "print(sum(range(10**6)))" > /srv/app/warm.txt
CMD ["python3", "/srv/app/main.py"]
"""
FILES = {
    "stack.yml": "services:\n"
    + "".join(f"  {name}:\n    build: ./{name}\n" for name in ("api", "web", "worker"))
    + '    ports: ["80:8080"]\n',
    "README.md": "# bench app\n",
    **{f"{name}/Dockerfile": SERVICE for name in ("api", "web", "worker")},
    **{f"{name}/main.py": f"print({name!r})\n" for name in ("api", "web", "worker")},
}
PUSHES = (
    ("first push", None),
    ("one service's folder changed", {"web/main.py": "print('web, changed')\n"}),
    ("nothing a build reads changed", {"README.md": "# bench app, documented\n"}),
)


def emulated(repo: Path) -> list[dict]:
    rows = []
    env = {"SLIPWAY_STACK_FILE": "stack.yml"}
    with mock.patch.dict(os.environ, QUIET), Emulator(poll_seconds=0, repo=repo, extra_environment=env) as emu:
        for label, change in PUSHES:
            commit = commit_files(repo, change) if change else git(repo, "rev-parse", "HEAD")
            started = time.monotonic()
            run = deploy(emu, commit)
            assert run.status == "SUCCEEDED", (run.error, run.cause)
            services = run.output["builds"]["services"]
            rows.append(
                {
                    "push": label,
                    "built": sum(1 for s in services if s["built"]),
                    "reused": sum(1 for s in services if not s["built"]),
                    "updated": sum(1 for s in run.output["rollout"]["services"] if s["updated"]),
                    "transitions": run.state_transitions,
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
    return rows


def real(repo: Path) -> list[dict] | str:
    """The services built for real, cold then warm, and after one service's change."""
    from slipway import realnodes
    from slipway.realnodes import build, registry

    missing = registry.registry_available() or realnodes.bake_available()
    if missing or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return f"real builds skipped: {missing or 'no dockerd answers'}"
    rows = []
    with registry.LocalRegistry().start() as local:

        def build_all(label: str, names: tuple[str, ...]) -> None:
            archive = subprocess.run(
                ["git", "-C", str(repo), "archive", "--format=zip", "HEAD"], capture_output=True, check=True
            )
            source = zipfile.ZipFile(io.BytesIO(archive.stdout))
            timings = []
            for name in names:
                started = time.monotonic()
                built, _, log = build.build_service(
                    local,
                    {"context": name, "dockerfile": "Dockerfile"},
                    source,
                    f"{local.push_address}/bench/{name}:x",
                    {},
                )
                assert built, "\n".join(log[-10:])
                timings.append(time.monotonic() - started)
            rows.append({"builds": label, "services": len(names), "seconds": round(sum(timings), 1)})

        registry.base_image()  # imported once, outside the timings
        subprocess.run([build.buildkit_cli(), "builder", "prune", "-af"], capture_output=True)
        build_all("cold (build cache pruned)", ("api", "web", "worker"))
        build_all("warm, nothing changed", ("api", "web", "worker"))
        commit_files(repo, {"api/main.py": "print('api, changed')\n"})
        build_all("warm, one service changed", ("api",))
    return rows


WEB_STACK = """\
services:
  web:
    build: {context: ./web, args: {VERSION: "%s"}}
    ports: ["80:8080"]
    healthcheck: {test: ["CMD", "python3", "/srv/web/app.py", "check"], interval: 2s, timeout: 2s, retries: 3}
    deploy: {replicas: 2}
"""


def push_to_answer(tmp: Path) -> dict | str:
    """With real nodes: the seconds from a push of a code change until the new version answers
    through the load balancer's stand-in, and the requests that failed meanwhile."""
    import threading
    import urllib.request

    from slipway import PROJECT_DIR, realnodes
    from slipway.realnodes import registry

    missing = registry.registry_available() or realnodes.bake_available()
    if missing:
        return f"real nodes skipped: {missing}"
    web = {f"web/{p.name}": p.read_text() for p in (PROJECT_DIR / "example" / "web").iterdir() if p.is_file()}
    repo = application_repository(tmp / "web-app", web | {"stack.yml": WEB_STACK % "1"})
    env = {"SLIPWAY_STACK_FILE": "stack.yml", "SLIPWAY_VPC_CIDR": "10.181.0.0/16"}
    with (
        mock.patch.dict(os.environ, QUIET),
        Emulator(poll_seconds=1, node_count=2, real_nodes=True, repo=repo, extra_environment=env) as emu,
    ):
        first = deploy(emu, git(repo, "rev-parse", "HEAD"), timeout=900)
        assert first.status == "SUCCEEDED", (first.error, first.cause)
        host, port = emu.load_balancer.address(80)  # type: ignore[union-attr]
        answers: list[tuple[float, str]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as answer:
                        answers.append((time.monotonic(), answer.read(200).decode(errors="replace")))
                except OSError as exc:
                    answers.append((time.monotonic(), f"failed: {exc}"))
                stop.wait(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        pushed = time.monotonic()
        try:
            second = deploy(emu, commit_files(repo, {"stack.yml": WEB_STACK % "2"}), timeout=900)
        finally:
            stop.set()
            sampler.join()
        assert second.status == "SUCCEEDED", (second.error, second.cause)
        new = [at for at, text in answers if "version=2" in text]
        return {
            "push to new version answering (s)": round(new[0] - pushed, 1) if new else None,
            "run (s)": round(time.monotonic() - pushed, 1),
            "requests": len(answers),
            "failed": sum(1 for _, text in answers if text.startswith("failed")),
        }


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        repo = application_repository(Path(tmp) / "app", FILES)
        return {"emulated": emulated(repo), "real": real(repo), "real nodes": push_to_answer(Path(tmp))}


def report(result: dict) -> None:
    print("Builds per push (three services; emulated CodeBuild, one digest per build key)")
    print(f"  {'push':<32} {'built':>5} {'reused':>6} {'updated':>7} {'transitions':>11} {'seconds':>8}")
    for row in result["emulated"]:
        print(
            f"  {row['push']:<32} {row['built']:>5} {row['reused']:>6} {row['updated']:>7} "
            f"{row['transitions']:>11} {row['seconds']:>8}"
        )
    print("Real builds on this machine (dockerd's BuildKit, pushed to the local registry)")
    if isinstance(result["real"], str):
        print(f"  {result['real']}")
        return
    for row in result["real"]:
        print(f"  {row['builds']:<32} {row['services']:>2} services {row['seconds']:>7} s")
    print("Real nodes: a pushed code change (one built service, two replicas) through the load balancer")
    nodes = result["real nodes"]
    print(f"  {nodes}" if isinstance(nodes, str) else "  " + ", ".join(f"{k}: {v}" for k, v in nodes.items()))


if __name__ == "__main__":
    report(main())
