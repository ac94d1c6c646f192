"""The node image for real nodes: the cached Debian 12 root (debootstrap, once, in
.cache/debian-12-root), copied, converged with ansible/swarm_node.yml through the chroot
connection, kept in .cache/node-root-<tag> and imported as `slipway-node:<tag>`. An existing image
or converged root is reused; a second image key of the same root is committed from the first."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from slipway import PROJECT_DIR
from slipway.realnodes.dockercli import ROLE_LABEL, NodeError, docker_available, require_docker, run_docker

CACHE_DIR = PROJECT_DIR / ".cache"
BASE_ROOT = CACHE_DIR / "debian-12-root"
MIRROR = os.environ.get("SLIPWAY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PLAYBOOK = PROJECT_DIR / "ansible" / "swarm_node.yml"

IMAGE_REPOSITORY = "slipway-node"
ROOT_LABEL = "slipway.root"  # on a node image: the converged root it was made from
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CONVERGED_MARK = ".slipway-converged"
# A node container's PID 1 is docker-init (--init), then `sleep`: the container outlives its
# dockerd, so a test may stop dockerd and the node answers "Cannot connect to the Docker
# daemon", as a real node whose dockerd died would. dockerd is started with `docker exec -d`.
NODE_COMMAND = ["sleep", "infinity"]


def bake_available() -> str | None:
    """None when `bake_image` can build an image here, else why not."""
    reason = docker_available()
    if reason:
        return reason
    if not BASE_ROOT.joinpath("usr", "bin", "python3").exists() and not shutil.which("debootstrap"):
        return "debootstrap is not installed (apt-get install debootstrap)"
    if not ANSIBLE_PLAYBOOK.exists():
        return f"ansible-playbook is not installed next to {sys.executable}"
    return None


def base_root(*, timeout: float = 900) -> Path:
    """A Debian 12 root with python3 and systemd, built once with debootstrap and kept in .cache/.
    Processes that ask at once (the test suite's workers) wait for the one that builds it."""
    if (BASE_ROOT / "usr" / "bin" / "python3").exists():
        return BASE_ROOT
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{BASE_ROOT.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if (BASE_ROOT / "usr" / "bin" / "python3").exists():  # built while this one waited
            return BASE_ROOT
        partial = BASE_ROOT.with_name(BASE_ROOT.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,systemd,systemd-sysv,ca-certificates",
                "bookworm",
                str(partial),
                MIRROR,
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        partial.rename(BASE_ROOT)
    return BASE_ROOT


def prepare_chroot(root: Path) -> None:
    """Services cannot start in a chroot: tell apt's maintainer scripts not to try; give the
    root this machine's resolver so apt can reach the mirror."""
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")


def converge_command(root: Path, playbook: Path = PLAYBOOK) -> list[str]:
    """ansible-playbook converging the swarm_node role on a root through the chroot connection."""
    return [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        f"{root},",
        "-c",
        "community.general.chroot",
        str(playbook),
        "-e",
        "swarm_node_apply_runtime=false",
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
    ]


def converge(root: Path, *, timeout: float = 1200, playbook: Path = PLAYBOOK) -> subprocess.CompletedProcess:
    return subprocess.run(
        converge_command(root, playbook),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )


def working_tree_tag(folders: tuple[str, ...] = ("ansible",)) -> str:
    """A content hash of the working tree's image folders (every file's path and bytes), for a
    bake outside the pipeline (which tags with plans.image_key of the commit's trees)."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted((PROJECT_DIR / folder).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(PROJECT_DIR)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return "wt-" + digest.hexdigest()[:16]


def image_name(tag: str) -> str:
    return f"{IMAGE_REPOSITORY}:{tag}"


def image_exists(image: str) -> bool:
    return run_docker("image", "inspect", image, check=False, timeout=30).returncode == 0


def converged_root(tag: str, *, log: Callable[[str], object] = print, playbook: Path = PLAYBOOK) -> Path:
    """.cache/node-root-<tag>: the Debian root converged with the swarm_node role, built once."""
    root = CACHE_DIR / f"node-root-{tag}"
    if (root / _CONVERGED_MARK).exists():
        log(f"bake: converged root {root.name} found in .cache/")
        return root
    started = time.monotonic()
    had_base = (BASE_ROOT / "usr" / "bin" / "python3").exists()
    if not had_base:
        log("bake: no Debian 12 root in .cache/ yet: debootstrap bookworm (a few minutes)")
    base = base_root()
    if not had_base:
        log(f"bake: Debian 12 root built in {time.monotonic() - started:.0f}s")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(["cp", "-a", str(base), str(partial)], check=True)
    prepare_chroot(partial)
    log("bake: converging ansible/swarm_node.yml on a copy of the root (chroot connection)")
    converging = time.monotonic()
    result = converge(partial, playbook=playbook)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise NodeError(
            "the swarm_node role failed on the node root:\n" + result.stdout[-4000:] + result.stderr[-2000:]
        )
    recap = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    log(
        f"bake: role converged in {time.monotonic() - converging:.0f}s"
        + (f" (ok={recap.group(1)} changed={recap.group(2)})" if recap else "")
    )
    # The image is what boots, not a chroot: services may start there.
    (partial / "usr" / "sbin" / "policy-rc.d").unlink(missing_ok=True)
    (partial / _CONVERGED_MARK).write_text(json.dumps({"tag": tag, "at": time.time()}) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


@contextlib.contextmanager
def _bake_lock(tag: str):
    """One bake per tag at a time, across threads and processes."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"node-root-{tag}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def bake_image(
    tag: str,
    *,
    log: Callable[[str], object] = print,
    labels: dict[str, str] | None = None,
    playbook: Path = PLAYBOOK,
    root_tag: str | None = None,
) -> str:
    """The local image `slipway-node:<tag>` (tag: the node image's content hash), baked with the
    swarm_node role from the cached Debian root; returned at once if it already exists."""
    if not IMAGE_TAG.match(tag):
        raise ValueError(f"not a valid image tag: {tag!r}")
    require_docker()
    image = image_name(tag)
    if image_exists(image):
        log(f"bake: {image} already exists")
        return image
    with _bake_lock(tag):
        if image_exists(image):
            return image
        # The converged root is cached by what was converged (`root_tag`, default `tag`): two
        # image keys of the same role content share one converge.
        if root_tag and root_tag != tag:
            with _bake_lock(root_tag):  # image keys of the same role share this root
                root = converged_root(root_tag, log=log, playbook=playbook)
        else:
            root = converged_root(tag, log=log, playbook=playbook)
        started = time.monotonic()
        changes = [
            f"CMD {json.dumps(NODE_COMMAND)}",
            f"LABEL {ROLE_LABEL}=node-image",
            f"LABEL {ROOT_LABEL}={root.name}",
        ]
        changes += [f"LABEL {key}={shlex.quote(value)}" for key, value in (labels or {}).items()]
        if _derive(root.name, image, changes):
            log(f"bake: {image} made from an image of the same root in {time.monotonic() - started:.0f}s")
            return image
        args = ["docker", "import"]
        for change in changes:
            args += ["--change", change]
        tar = subprocess.Popen(
            [
                "tar",
                "-C",
                str(root),
                "--numeric-owner",
                f"--exclude=./{_CONVERGED_MARK}",
                "--exclude=./var/cache/apt/archives/*.deb",
                "-c",
                ".",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            imported = subprocess.run(
                args + ["-", image], stdin=tar.stdout, capture_output=True, text=True, timeout=900
            )
        finally:
            assert tar.stdout is not None and tar.stderr is not None  # both are PIPE
            tar.stdout.close()
            tar_err = tar.stderr.read().decode(errors="replace")
            tar.stderr.close()
            tar.wait()
        if tar.returncode != 0 or imported.returncode != 0:
            raise NodeError(
                f"docker import of {root} failed: {tar_err.strip()[-1000:]} {imported.stderr.strip()[-1000:]}"
            )
        log(f"bake: imported {image} in {time.monotonic() - started:.0f}s")
        return image


def _derive(root: str, image: str, changes: list[str]) -> bool:
    """Make `image` from a node image already imported from the same converged root: the same
    files (one empty layer on top), its own labels. Importing the root's tar again costs 10 to 30 s
    of disk and CPU per image key; this, a second. False if there is no such image."""
    found = run_docker("images", "-q", "--no-trunc", "--filter", f"label={ROOT_LABEL}={root}", check=False)
    base = next(iter(found.stdout.split()), None)
    if base is None:
        return False
    made = run_docker("create", base, check=False)
    if made.returncode != 0:
        return False
    container = made.stdout.strip()
    try:
        args = ["commit"]
        for change in changes:
            args += ["--change", change]
        return run_docker(*args, container, image, check=False, timeout=300).returncode == 0
    finally:
        run_docker("rm", "-f", container, check=False)


def node_images() -> list[str]:
    """The ids of every node image on this machine (labelled node-image by bake_image)."""
    found = run_docker("images", "-q", "--no-trunc", "--filter", f"label={ROLE_LABEL}=node-image", check=False)
    return found.stdout.split()


def remove_images(images: list[str]) -> int:
    """Remove these images (and nothing else: no container, no network). Returns how many went."""
    removed, left = 0, list(dict.fromkeys(images))
    while left:  # an image made from another (`_derive`) goes first: its base has a child till then
        kept = [image for image in left if run_docker("rmi", "-f", image, check=False, timeout=300).returncode != 0]
        removed += len(left) - len(kept)
        if len(kept) == len(left):
            break
        left = kept
    return removed
