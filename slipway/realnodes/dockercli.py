"""The docker CLI as the real nodes use it, whether this machine can run them, and the labels that
mark what they create (`slipway.emulator=<run id>`), by which cleanup finds it."""

from __future__ import annotations

import os
import shutil
import subprocess

LABEL = "slipway.emulator"  # value: the run id
ROLE_LABEL = "slipway.role"  # "node-image", "node", "network"


class DockerUnavailable(RuntimeError):
    """Real nodes were asked for but this machine cannot run them; the message says why."""


class NodeError(RuntimeError):
    """A node container could not be started or did not become ready."""


def run_docker(
    *args: str,
    check: bool = True,
    timeout: float | None = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise NodeError(
            f"docker {' '.join(args[:3])} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-1500:]}"
        )
    return result


def write_in(name: str, path: str, text: str, *, mode: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Write `text` to `path` in the container `name`, atomically (a temporary file renamed), its
    folder made first; `mode` (e.g. "755") sets its permissions."""
    folder = path.rsplit("/", 1)[0] or "/"
    chmod = f" && chmod {mode} {path}.tmp" if mode else ""
    return run_docker(
        "exec",
        "-i",
        name,
        "sh",
        "-c",
        f"mkdir -p {folder} && cat > {path}.tmp{chmod} && mv -f {path}.tmp {path}",
        input=text,
        check=check,
        timeout=30,
    )


def docker_available() -> str | None:
    """None when real nodes can run here, else one line saying why not."""
    if os.geteuid() != 0:
        return "real nodes need root (node containers need SYS_ADMIN, the bake needs chroot)"
    if not shutil.which("docker"):
        return "the docker CLI is not installed (apt-get install docker.io)"
    for tool, package in (("nsenter", "util-linux"), ("ip", "iproute2")):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install {package})"
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "dockerd is not answering (docker version timed out after 20s)"
    if result.returncode != 0 or not result.stdout.strip():
        reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"dockerd is not answering (start it: dockerd >/tmp/dockerd.log 2>&1 &): {reason}"
    return None


def require_docker() -> None:
    reason = docker_available()
    if reason:
        raise DockerUnavailable(reason)
