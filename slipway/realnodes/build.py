"""A service's build for real, on this machine: what the emulator's CodeBuild runs with real nodes
(slipway/emulator/codebuild.py). The commit's files are built by this machine's dockerd with
BuildKit and pushed to the local registry the node containers pull from (registry.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipway.realnodes.registry import LocalRegistry, RegistryError, base_image, host_docker


def buildkit_cli() -> str:
    """A docker CLI that builds with the daemon's own BuildKit (DOCKER_BUILDKIT=1): Debian's 20.10
    (/usr/bin/docker) does; a newer CLI some machines put first on PATH refuses BuildKit without
    the buildx plugin, which no registry reachable here ships."""
    for candidate in ("/usr/bin/docker", shutil.which("docker") or "docker"):
        if Path(candidate).exists():
            version = subprocess.run(
                [candidate, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
            ).stdout.strip()
            major = version.split(".", 1)[0]
            if major.isdigit() and int(major) < 23:  # the CLI that still builds without buildx
                return candidate
            if subprocess.run([candidate, "buildx", "version"], capture_output=True).returncode == 0:
                return candidate
    return "docker"


def build_service(
    registry: LocalRegistry,
    target: dict[str, Any],
    source: Any,
    reference: str,
    secrets: dict[str, str],
    *,
    log: Callable[[str], object] = lambda line: None,
) -> tuple[bool, str | None, list[str]]:
    """One target of a build's bake file built for real: the commit's files (`source`, a ZipFile)
    built by this machine's dockerd with BuildKit (DOCKER_BUILDKIT=1: build secrets mount, never
    in a layer), FROM the local base image as build argument BASE unless the target sets it (nothing
    can be pulled from the internet here), then pushed to the local registry under the path of
    `reference` (`<host:port>/<repository>:<key>`, as nodes pull it). `secrets` maps each secret's id
    to its value. Returns whether it built, the pushed digest and the log's lines."""
    name = reference.split("/", 1)[1]
    pushed = f"{registry.push_address}/{name}"
    args = dict(target.get("args") or {})
    args.setdefault("BASE", base_image(log=log))
    with tempfile.TemporaryDirectory(prefix="slipway-build-") as workdir:
        source.extractall(workdir)
        for info in source.infolist():  # zip keeps the mode in external_attr; extractall does not
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(Path(workdir) / info.filename, mode)
        context = Path(workdir) / target["context"]
        command = [buildkit_cli(), "build", "--progress=plain", "-t", pushed, context.as_posix()]
        if "dockerfile-inline" in target:
            (Path(workdir) / ".slipway.Dockerfile").write_text(target["dockerfile-inline"])
            command += ["-f", str(Path(workdir) / ".slipway.Dockerfile")]
        else:
            command += ["-f", str(context / target.get("dockerfile", "Dockerfile"))]
        for key, value in sorted(args.items()):
            command += ["--build-arg", f"{key}={value}"]
        if target.get("target"):
            command += ["--target", target["target"]]
        for key, value in sorted((target.get("labels") or {}).items()):
            command += ["--label", f"{key}={value}"]
        for i, (secret_id, value) in enumerate(sorted(secrets.items())):
            path = Path(workdir) / f".slipway-secret-{i}"
            path.write_text(value)
            path.chmod(0o600)
            command += ["--secret", f"id={secret_id},src={path}"]
        started = time.monotonic()
        built = subprocess.run(
            command, capture_output=True, text=True, timeout=1800, env=os.environ | {"DOCKER_BUILDKIT": "1"}
        )
        lines = (built.stdout + built.stderr).splitlines()
        if built.returncode != 0:
            return False, None, lines
        log(f"build: {pushed} in {time.monotonic() - started:.1f}s")
    try:
        push = host_docker("push", pushed)
    except RegistryError as exc:
        return False, None, [*lines, str(exc)]
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", push.stdout)
    return (True, found.group(1), lines) if found else (False, None, [*lines, push.stdout])
