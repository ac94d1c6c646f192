"""A Docker registry on this machine for real stacks on node containers, and the example web
service's images in it.

- `LocalRegistry` runs Debian's `docker-registry` (distribution 2.8) as a subprocess, storage in
  .cache/registry/ (shared by runs, so a second run's pushes find their layers there), on a free
  port on every address of this machine: the host's dockerd pushes through 127.0.0.1 (a loopback
  registry is insecure-allowed by default), node containers pull through their network's gateway
  (their dockerd is started with `--insecure-registry <gateway>:<port>`: see
  `DockerNodes(insecure_registries=...)`). Stopped on close.
- `example_images(registry)` builds example/web/ on the cached Debian root (realnodes.base_root)
  with the host's docker: `slipway-example/web:1`, `:2` (answers version=2) and `:broken` (its
  health check always fails), pushes them, and returns their references. The base image is
  tagged by the root's content (its dpkg status) and the web images by the build context's, so
  a second run builds nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipway import PROJECT_DIR, realnodes

REGISTRY_BINARY = "docker-registry"  # Debian's package of the same name
STORAGE = realnodes.CACHE_DIR / "registry"
EXAMPLE_WEB = PROJECT_DIR / "example" / "web"
EXAMPLE_REPOSITORY = "slipway-example/web"
BASE_REPOSITORY = "slipway-example/base"
# The example's tags: the build arguments of each.
EXAMPLE_TAGS = {
    "1": {"VERSION": "1", "HEALTHY": "yes"},
    "2": {"VERSION": "2", "HEALTHY": "yes"},
    "broken": {"VERSION": "broken", "HEALTHY": "no"},
}
# What the web service does not need from the root: a smaller image, faster on the nodes' vfs.
_BASE_EXCLUDES = (
    "./var/cache/apt/*",
    "./var/lib/apt/lists/*",
    "./usr/share/doc/*",
    "./usr/share/man/*",
    "./usr/share/locale/*",
)
_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {host}:{port}
"""


class RegistryError(RuntimeError):
    """The local registry could not start, or an image could not be built or pushed."""


def registry_available() -> str | None:
    """None when a local registry can run here, else why not."""
    if not shutil.which(REGISTRY_BINARY):
        return f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)"
    return None


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class LocalRegistry:
    """`docker-registry serve` on a free port until `close()`. `push_address` is what this
    machine's docker pushes to; `address(gateway)` is what a node container pulls from."""

    def __init__(
        self,
        *,
        host: str = "0.0.0.0",
        port: int | None = None,
        storage: Path = STORAGE,
        ready_timeout: float = 30,
    ) -> None:
        self.host = host
        self.port = port
        self.storage = storage
        self.ready_timeout = ready_timeout
        self._process: subprocess.Popen | None = None
        self._log: Any = None  # the registry's stderr, a temporary file
        self._config: Path | None = None
        self._lock = threading.Lock()

    @property
    def push_address(self) -> str:
        return f"127.0.0.1:{self.port}" if self.host in ("0.0.0.0", "127.0.0.1") else f"{self.host}:{self.port}"

    def address(self, host: str | None = None) -> str:
        """host:port of the registry as seen from `host`'s side (a node network's gateway)."""
        return f"{host or self.host}:{self.port}"

    def start(self) -> LocalRegistry:
        reason = registry_available()
        if reason:
            raise RegistryError(reason)
        with self._lock:
            if self._process and self._process.poll() is None:
                return self
            self.storage.mkdir(parents=True, exist_ok=True)
            fixed = self.port
            for attempt in range(3):  # a free port may be taken between the probe and the bind
                port = fixed or _free_port(self.host)
                handle, name = tempfile.mkstemp(prefix="slipway-registry-", suffix=".yml")
                with os.fdopen(handle, "w") as config:
                    config.write(_CONFIG.format(storage=self.storage, host=self.host, port=port))
                self._config = Path(name)
                process = subprocess.Popen(
                    [shutil.which(REGISTRY_BINARY) or REGISTRY_BINARY, "serve", name],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=(log := tempfile.TemporaryFile()),  # noqa: SIM115 (kept open while it runs; not a pipe)
                )
                self._log = log
                self.port = port
                self._process = process
                if self._wait_ready():
                    atexit.register(self.close)  # should the caller never get to close it
                    return self
                error = self._stop()
                self.port = fixed
                if not fixed and attempt < 2 and "address already in use" in error:
                    continue
                raise RegistryError(f"{REGISTRY_BINARY} did not start on {self.host}:{port}: {error[-1500:]}")
        raise RegistryError("unreachable")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://{self.push_address}/v2/", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return True
            time.sleep(0.1)
        return False

    def _stop(self) -> str:
        process, self._process = self._process, None
        error = ""
        if process and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.seek(0)
            error = self._log.read().decode(errors="replace")
            self._log.close()
            self._log = None
        if self._config:
            self._config.unlink(missing_ok=True)
            self._config = None
        return error

    def close(self) -> None:
        """Stop the registry (its storage stays in .cache/). Idempotent."""
        with self._lock:
            self._stop()
        atexit.unregister(self.close)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def tags(self, repository: str) -> list[str]:
        import json

        with urllib.request.urlopen(f"http://{self.push_address}/v2/{repository}/tags/list", timeout=10) as answer:
            return sorted(json.load(answer).get("tags") or [])


# --- the example images ------------------------------------------------------------------------


def host_docker(*args: str, timeout: float = 600, stdin=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
        env=os.environ | {"DOCKER_BUILDKIT": "0"},  # the legacy builder: no buildx needed
    )
    if result.returncode != 0:
        raise RegistryError(f"docker {' '.join(args[:2])} failed: {(result.stderr or result.stdout).strip()[-1500:]}")
    return result


def _content_key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part + b"\0")
    return digest.hexdigest()[:16]


def base_image(*, log: Callable[[str], object] = lambda line: None) -> str:
    """`slipway-example/base:<key>`: the cached Debian root imported (python3, no docs), keyed by
    the root's package list and the excludes, so it is imported once per root."""
    root = realnodes.base_root()
    key = _content_key((root / "var/lib/dpkg/status").read_bytes(), "\n".join(_BASE_EXCLUDES).encode())
    image = f"{BASE_REPOSITORY}:{key}"
    if realnodes.image_exists(image):
        return image
    started = time.monotonic()
    excludes = [f"--exclude={pattern}" for pattern in _BASE_EXCLUDES]
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--numeric-owner", *excludes, "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        imported = subprocess.run(
            ["docker", "import", "--change", 'CMD ["python3"]', "-", image],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        assert tar.stdout and tar.stderr
        tar.stdout.close()
        tar_err = tar.stderr.read().decode(errors="replace")
        tar.stderr.close()
        tar.wait()
    if tar.returncode != 0 or imported.returncode != 0:
        raise RegistryError(f"docker import of {root} failed: {tar_err[-800:]} {imported.stderr[-800:]}")
    log(f"example: imported {image} in {time.monotonic() - started:.0f}s")
    return image


def context_key(context: Path = EXAMPLE_WEB) -> str:
    """A hash of the build context (every file's path and bytes)."""
    parts = []
    for path in sorted(context.rglob("*")):
        if path.is_file():
            parts += [str(path.relative_to(context)).encode(), path.read_bytes()]
    return _content_key(*parts)


def example_images(registry: LocalRegistry, *, log: Callable[[str], object] = lambda line: None) -> dict[str, str]:
    """Build (once per content) and push example/web's images; returns {tag: "<push address>/
    slipway-example/web:<tag>"}. A node refers to the same images as
    `registry.address(gateway)/slipway-example/web:<tag>`."""
    with _builds_lock():  # several test workers may start real nodes at once: one builds, the rest wait
        base = base_image(log=log)
        key = _content_key(base.encode(), context_key().encode())
        for tag, build_args in EXAMPLE_TAGS.items():
            local = f"{EXAMPLE_REPOSITORY}:{tag}-{key}"
            if not realnodes.image_exists(local):
                started = time.monotonic()
                args = ["build", "-q", "--build-arg", f"BASE={base}", "-t", local]
                for name, value in build_args.items():
                    args += ["--build-arg", f"{name}={value}"]
                host_docker(*args, str(EXAMPLE_WEB))
                log(f"example: built {local} in {time.monotonic() - started:.1f}s")
    pushed = {}
    for tag in EXAMPLE_TAGS:
        local = f"{EXAMPLE_REPOSITORY}:{tag}-{key}"
        remote = f"{registry.push_address}/{EXAMPLE_REPOSITORY}:{tag}"
        host_docker("tag", local, remote)
        host_docker("push", remote)
        host_docker("rmi", remote)  # only the name: the content-keyed image stays for the next run
        pushed[tag] = remote
    # Builds of an earlier content of example/web (or of the root) are not needed any more.
    stale = [name for name in _local_tags(EXAMPLE_REPOSITORY) if not name.endswith(f"-{key}")]
    stale += [name for name in _local_tags(BASE_REPOSITORY) if name != base]
    realnodes.remove_images(stale)
    return pushed


@contextlib.contextmanager
def _builds_lock():
    """Hold .cache/example-images.lock (across processes) while the example's images are made."""
    import fcntl

    realnodes.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(realnodes.CACHE_DIR / "example-images.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _local_tags(repository: str) -> list[str]:
    found = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repository],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [name for name in found.stdout.split() if not name.endswith(":<none>")]


def remove_example_images() -> int:
    """Remove every local image of the example (web and base): the next run builds them again."""
    return realnodes.remove_images(_local_tags(EXAMPLE_REPOSITORY) + _local_tags(BASE_REPOSITORY))
