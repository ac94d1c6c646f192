"""Real swarm nodes for the local run: the node image baked with our own Ansible role, each
instance a container running its own dockerd, and SSM commands run in it for real.

The pieces, for the emulator to wire in:

- `docker_available()` says whether this machine can do it (root, the docker CLI, a dockerd that
  answers), or why not.
- `bake_image(tag)` builds `slipway-node:<tag>`: the cached Debian 12 root (debootstrap, once, in
  .cache/debian-12-root), copied, converged with ansible/swarm_node.yml through the chroot
  connection (as tests/infra/test_swarm_node_role.py does), kept in .cache/node-root-<tag>, and
  imported with `docker import`. An existing image, or converged root, is reused; a second image
  key of the same root is committed from the first image (same files, its own labels).
- `DockerNodes` answers what `slipway.nodes.EmulatedNodes` answers (`run`, `state`, `role`), plus
  the lifecycle: `launch` a container per instance on a user-defined bridge network whose subnet
  is the VPC's CIDR (so each container has the instance's private address and host name),
  `terminate`, `stop_docker`/`start_docker`, and `close`, which removes every container, the
  network and the images it baked.
- For real stacks (tests/realnodes/test_stack_real.py): `start_aws_endpoint()` serves this
  process's moto on the network's `gateway` and gives every command `run` runs AWS_ENDPOINT_URL,
  AWS_REGION and fake credentials (the instance role and IMDS, on EC2); `insecure_registries`
  lets the nodes' dockerds pull from a `slipway.registry.LocalRegistry` over HTTP;
  `published_ports` publishes node ports on this machine's loopback (`host_port` says where).
- For a load balancer in front (slipway/forwarder.py): `mesh` (published port -> task port) runs
  slipway/mesh.py, a stand-in for Swarm's ingress routing mesh, in every node (`start_mesh`), and
  keeps each node's list of peers (`set_mesh_peers`) the live nodes' addresses as nodes are
  launched and terminated: every node answers on the published port, whichever runs the task.

Everything this module creates carries the label `slipway.emulator=<run id>`; `cleanup()`
removes what a crashed run left behind.

Node containers need capabilities, not `--privileged` (which fails on some kernels with "unable
to apply caps"): SYS_ADMIN, SYS_PTRACE (for `docker exec` and health checks in nested
containers), NET_ADMIN, MKNOD, no seccomp or AppArmor profile, and the host's cgroup tree. Their
dockerd runs with --iptables=false (this kernel has no IPVS, so Swarm's routing mesh and service
VIPs cannot work with or without iptables: publish ports with `mode: host`, use
`endpoint_mode: dnsrr`); its /var/lib/docker is a volume, so it uses overlay2.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from slipway import PROJECT_DIR
from slipway.nodes import Result

CACHE_DIR = PROJECT_DIR / ".cache"
BASE_ROOT = CACHE_DIR / "debian-12-root"
MIRROR = os.environ.get("SLIPWAY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PLAYBOOK = PROJECT_DIR / "ansible" / "swarm_node.yml"

IMAGE_REPOSITORY = "slipway-node"
LABEL = "slipway.emulator"  # value: the run id
ROLE_LABEL = "slipway.role"  # "node-image", "node", "network"
ROOT_LABEL = "slipway.root"  # on a node image: the converged root it was made from
INSTANCE_LABEL = "slipway.instance"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CONVERGED_MARK = ".slipway-converged"

# What a node container needs so that a dockerd runs in it (and a swarm forms), without
# --privileged. /sys/fs/cgroup from the host gives the inner dockerd a cgroup tree to use.
# SYS_PTRACE: runc's `exec` into a nested container opens its namespaces through /proc/<pid>/ns;
# without it every `docker exec` there, and so every HEALTHCHECK, fails with "error executing
# setns process: exit status 1" (a task of a service with a health check never gets healthy).
NODE_RUN_OPTIONS = (
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "SYS_PTRACE",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "MKNOD",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup",
)
# A node container's PID 1 is docker-init (--init), then `sleep`: the container outlives its
# dockerd, so a test may stop dockerd and the node answers "Cannot connect to the Docker
# daemon", as a real node whose dockerd died would. dockerd is started with `docker exec -d`.
NODE_COMMAND = ["sleep", "infinity"]
DOCKERD = "/usr/sbin/dockerd --iptables=false"
DOCKERD_LOG = "/var/log/slipway-dockerd.log"
# The fake credentials a node's commands get with `aws_endpoint` (the instance role's, on EC2).
NODE_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The bridges the node's dockerd makes, made first with interface indexes above eth0's. On EC2,
# eth0 comes first and `hostname -I | cut -d" " -f1` (the init script) is the private address;
# in a container, eth0 keeps the host's (large) index and a docker0 made inside would come
# before it: the swarm would advertise 172.17.0.1.
_LATE_BRIDGES = (("docker0", 60001), ("docker_gwbridge", 60002))
# The routing-mesh stand-in in a node: the program (a copy of slipway/mesh.py), the peers file
# every mesh process of the node reads, its log and readiness file per published port.
MESH_SOURCE = Path(__file__).with_name("mesh.py")
MESH_DIR = "/run/slipway-mesh"
MESH_PROGRAM = f"{MESH_DIR}/mesh.py"
MESH_PEERS = f"{MESH_DIR}/peers"
MESH_READY_SECONDS = 15
# The rest of the ingress stand-in: `docker` in the node rewriting a stack's ingress ports to the
# mesh's task ports (slipway/ingress_shim.py), with the PyYAML it reads stack files with.
INGRESS_SHIM = Path(__file__).with_name("ingress_shim.py")


class DockerUnavailable(RuntimeError):
    """Real nodes were asked for but this machine cannot run them; the message says why."""


class NodeError(RuntimeError):
    """A node container could not be started or did not become ready."""


# --- the docker CLI ----------------------------------------------------------------------------


def _docker(
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


def _write_in(name: str, path: str, text: str, *, mode: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Write `text` to `path` in the container `name`, atomically (a temporary file renamed), its
    folder made first; `mode` (e.g. "755") sets its permissions."""
    folder = path.rsplit("/", 1)[0] or "/"
    chmod = f" && chmod {mode} {path}.tmp" if mode else ""
    return _docker(
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


# --- the bake ----------------------------------------------------------------------------------


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
    return _docker("image", "inspect", image, check=False, timeout=30).returncode == 0


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
    if not _TAG.match(tag):
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
    found = _docker("images", "-q", "--no-trunc", "--filter", f"label={ROOT_LABEL}={root}", check=False)
    base = next(iter(found.stdout.split()), None)
    if base is None:
        return False
    made = _docker("create", base, check=False)
    if made.returncode != 0:
        return False
    container = made.stdout.strip()
    try:
        args = ["commit"]
        for change in changes:
            args += ["--change", change]
        return _docker(*args, container, image, check=False, timeout=300).returncode == 0
    finally:
        _docker("rm", "-f", container, check=False)


# --- the nodes ---------------------------------------------------------------------------------


class DockerNodes:
    """Each instance a container running its own dockerd; SSM commands run in it for real.

    Same questions as `slipway.nodes.EmulatedNodes` (`run`, `state`, `role`), plus the lifecycle
    the emulator drives from EC2 calls: `launch`, `terminate`, `close`. Thread-safe: `run` may be
    called from any thread, `launch`/`terminate` from others, `close` from a signal handler.
    """

    def __init__(
        self,
        subnet: str = "10.42.0.0/16",
        *,
        run_id: str | None = None,
        remove_images: bool = True,
        ready_timeout: float = 60,
        command_timeout: float = 600,
        log: Callable[[str], object] | None = None,
        aws_endpoint: str | None = None,
        aws_region: str = "us-east-1",
        insecure_registries: Sequence[str] = (),
        published_ports: Sequence[int] = (),
        mesh: Mapping[int, int] | None = None,
    ) -> None:
        """`aws_endpoint` (e.g. a ThreadedMotoServer on `gateway`): every command `run` runs
        gets AWS_ENDPOINT_URL, AWS_REGION and fake credentials, as the instance role and IMDS
        give them on EC2. `insecure_registries`: host:port registries the nodes' dockerds pull
        from over plain HTTP (a `registry.LocalRegistry` on `gateway`). `published_ports`: the
        node ports (a swarm's published ports) each node container publishes on this machine's
        loopback (`host_port` tells where). `mesh` (published port -> the tasks' host-mode port):
        `launch` starts the routing-mesh stand-in for each in the new node, and `launch` and
        `terminate` keep every node's peers the live nodes' addresses."""
        self.subnet = str(ipaddress.ip_network(subnet))
        self.aws_endpoint = aws_endpoint
        self.aws_region = aws_region
        self.insecure_registries = tuple(insecure_registries)
        self.published_ports = tuple(int(port) for port in published_ports)
        self.mesh = {int(listen): int(task) for listen, task in (mesh or {}).items()}
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.network = f"slipway-{self.run_id}"
        self.remove_images = remove_images
        self.ready_timeout = ready_timeout
        self.command_timeout = command_timeout
        self.log = log or (lambda message: None)
        self._lock = threading.RLock()  # re-entrant: close() may interrupt the thread holding it
        self._containers: dict[str, str] = {}  # instance id -> container name
        self._addresses: dict[str, str] = {}  # instance id -> private address, once ready
        self._meshes: dict[str, set[int]] = {}  # instance id -> the ports its mesh processes listen on
        self._mesh_peers: list[str] | None = None  # what set_mesh_peers wrote last
        self._mesh_lock = threading.RLock()  # one peers update at a time: the last one written is current
        self._host_ports: dict[tuple[str, int], int] = {}  # (container, port) -> its port on 127.0.0.1
        self._images: set[str] = set()  # images this object baked (close removes them)
        self._network_ready = False
        self._closed = False
        self._aws_server: Any = None  # a moto.server.ThreadedMotoServer (start_aws_endpoint)
        self.history: list[tuple[str, str]] = []  # (instance id, first command line: its scripts.MARKERS marker)

    # --- labels and names --------------------------------------------------------------------

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.run_id}

    def _label_args(self, role: str, **extra: str) -> list[str]:
        args = []
        for key, value in {**self.labels, ROLE_LABEL: role, **extra}.items():
            args += ["--label", f"{key}={value}"]
        return args

    @property
    def gateway(self) -> str:
        """This machine's address on the node network (its first address, as on a VPC's router):
        where node containers reach services of this machine (moto, a registry). It exists once
        the network does (`ensure_network`)."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def dockerd_command(self) -> str:
        """How a node's dockerd is started (a shell command line, logging to DOCKERD_LOG)."""
        flags = "".join(f" --insecure-registry {shlex.quote(r)}" for r in self.insecure_registries)
        return f"{DOCKERD}{flags} >>{DOCKERD_LOG} 2>&1"

    def container(self, instance_id: str) -> str | None:
        with self._lock:
            return self._containers.get(instance_id)

    def instances(self) -> list[str]:
        with self._lock:
            return list(self._containers)

    # --- the bake ----------------------------------------------------------------------------

    def bake(
        self,
        tag: str,
        *,
        log: Callable[[str], object] | None = None,
        playbook: Path = PLAYBOOK,
        root_tag: str | None = None,
    ) -> str:
        """`bake_image`, remembering the image if this call created it (close removes it)."""
        existed = _TAG.match(tag) is not None and image_exists(image_name(tag))
        image = bake_image(tag, log=log or self.log, labels=self.labels, playbook=playbook, root_tag=root_tag)
        if not existed:
            with self._lock:
                self._images.add(image)
        return image

    # --- lifecycle ---------------------------------------------------------------------------

    def start_aws_endpoint(self, port: int = 0) -> str:
        """Serve this process's moto on the node network's gateway (a `ThreadedMotoServer`: it
        shares the state of `mock_aws` in the same process) and point every command `run` runs
        at it (`aws_endpoint`). Returns the endpoint URL; `close` stops the server."""
        from moto.server import ThreadedMotoServer

        gateway = self.ensure_network()
        with self._lock:
            if self._aws_server is not None:
                return self.aws_endpoint or ""
            server = ThreadedMotoServer(ip_address=gateway, port=port, verbose=False)
            server.start()
            self._aws_server = server
            self.aws_endpoint = f"http://{gateway}:{server.get_host_and_port()[1]}"
            return self.aws_endpoint

    def ensure_network(self) -> str:
        """Create the node network now (launch does it anyway); returns its gateway address."""
        self._ensure_network()
        return self.gateway

    def _ensure_network(self) -> None:
        with self._lock:
            if self._network_ready:
                return
            if self._closed:
                raise NodeError("these nodes are closed")
            existing = _docker("network", "inspect", self.network, check=False, timeout=30)
            if existing.returncode != 0:
                created = _docker(
                    "network",
                    "create",
                    "--driver",
                    "bridge",
                    "--subnet",
                    self.subnet,
                    "--gateway",
                    self.gateway,
                    *self._label_args("network"),
                    self.network,
                    check=False,
                    timeout=60,
                )
                if created.returncode != 0:
                    message = created.stderr.strip()
                    if "overlap" in message:
                        message += (
                            f"\n{self.subnet} is already used by a Docker network: "
                            f"{_networks_using(self.subnet) or '?'} (a crashed run's? "
                            f"python -m slipway.realnodes cleanup removes those)"
                        )
                    raise NodeError(f"cannot create the node network {self.network}: {message}")
            self._network_ready = True

    def launch(self, instance_id: str, *, image: str, hostname: str, ip: str) -> str:
        """Start the instance's node container (its host name, its private address) and wait
        until its dockerd answers. Returns the container's name."""
        require_docker()
        if ipaddress.ip_address(ip) not in ipaddress.ip_network(self.subnet):
            raise NodeError(f"{ip} is not in the node network {self.subnet}")
        self._ensure_network()
        name = f"slipway-{self.run_id}-{instance_id}"
        with self._lock:
            if self._closed:
                raise NodeError("these nodes are closed")
            if instance_id in self._containers:
                return self._containers[instance_id]
            self._containers[instance_id] = name
        try:
            volume = self._storage_volume(name, instance_id)
        except BaseException:
            with self._lock:
                self._containers.pop(instance_id, None)
            _remove_node_container(name)
            raise
        started = _docker(
            "run",
            "-d",
            "--init",
            "--pull",
            "never",
            "--name",
            name,
            "--hostname",
            hostname,
            "--network",
            self.network,
            "--ip",
            ip,
            *self._label_args("node", **{INSTANCE_LABEL: instance_id}),
            *[arg for port in self.published_ports for arg in ("-p", f"127.0.0.1::{port}")],
            "--mount",
            f"type=volume,src={volume},dst=/var/lib/docker",
            *NODE_RUN_OPTIONS,
            image,
            *NODE_COMMAND,
            check=False,
            timeout=120,
        )
        if started.returncode != 0:
            with self._lock:
                self._containers.pop(instance_id, None)
            _remove_node_container(name)
            raise NodeError(f"cannot start the node container for {instance_id}: {started.stderr.strip()[-1500:]}")
        try:
            with self._lock:
                if self._closed:  # closed while the container started: close() may have missed it
                    raise NodeError("these nodes were closed while launching")
            self._prepare_network_namespace(name)
            _docker("exec", "-d", name, "sh", "-c", self.dockerd_command, timeout=30)
            self.wait_ready(instance_id)
            with self._lock:
                self._addresses[instance_id] = ip
            if self.mesh:
                self.install_ingress(instance_id)
            for listen_port, task_port in self.mesh.items():
                self.start_mesh(instance_id, listen_port, task_port)
            if self.mesh:
                self._refresh_mesh_peers()
        except BaseException:
            with self._lock:
                self._containers.pop(instance_id, None)
                self._addresses.pop(instance_id, None)
                self._meshes.pop(instance_id, None)
            _remove_node_container(name)
            raise
        self.log(f"node {instance_id}: container {name} ({hostname}, {ip}) ready")
        return name

    def _storage_volume(self, name: str, instance_id: str) -> str:
        """The node's /var/lib/docker: a volume (ext4, this machine's), so the node's dockerd
        uses overlay2; on the container's own overlay root it could only pick vfs, which copies
        every image layer whole for each layer and each container (seconds per task start)."""
        _docker(
            "volume",
            "create",
            *self._label_args("node-storage", **{INSTANCE_LABEL: instance_id}),
            name,
            timeout=60,
        )
        return name

    @staticmethod
    def _prepare_network_namespace(name: str) -> None:
        pid = _docker("inspect", "--format", "{{.State.Pid}}", name, timeout=30).stdout.strip()
        for bridge, index in _LATE_BRIDGES:
            made = subprocess.run(
                [
                    "nsenter",
                    "-t",
                    pid,
                    "-n",
                    "ip",
                    "link",
                    "add",
                    "name",
                    bridge,
                    "index",
                    str(index),
                    "type",
                    "bridge",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if made.returncode != 0 and "exists" not in made.stderr:
                raise NodeError(f"cannot make {bridge} in {name}: {made.stderr.strip()}")

    def wait_ready(self, instance_id: str, timeout: float | None = None) -> None:
        """Wait until the node's dockerd answers `docker info`; NodeError with its log if not."""
        name = self._name(instance_id)
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            probe = _docker("exec", name, "docker", "info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
            if probe.returncode == 0 and probe.stdout.strip():
                return
            if time.monotonic() > deadline:
                tail = _docker("exec", name, "tail", "-n", "30", DOCKERD_LOG, check=False, timeout=30)
                raise NodeError(
                    f"the dockerd of {instance_id} ({name}) did not answer within "
                    f"{timeout or self.ready_timeout:.0f}s: {probe.stderr.strip()}\n"
                    f"{tail.stdout or tail.stderr}"
                )
            time.sleep(0.25)

    def terminate(self, instance_id: str) -> None:
        """The instance is gone: remove its container (no error if there is none). With `mesh`,
        the other nodes stop sending to it first (their peers no longer list it)."""
        with self._lock:
            gone = self._addresses.pop(instance_id, None)
            self._meshes.pop(instance_id, None)
        if gone and self.mesh:
            self._refresh_mesh_peers()
        with self._lock:
            name = self._containers.pop(instance_id, None)
        if name:
            _remove_node_container(name)
            self.log(f"node {instance_id}: container {name} removed")

    def stop_docker(self, instance_id: str) -> None:
        """Stop the node's dockerd (the container stays): its docker commands fail from now on."""
        name = self._name(instance_id)
        _docker(
            "exec",
            name,
            "sh",
            "-c",
            "kill $(cat /var/run/docker.pid) && "
            "while [ -e /var/run/docker.pid ] && kill -0 $(cat /var/run/docker.pid) 2>/dev/null;"
            " do sleep 0.2; done",
            check=False,
            timeout=60,
        )

    def start_docker(self, instance_id: str) -> None:
        """Start the node's dockerd again (after `stop_docker`) and wait until it answers."""
        name = self._name(instance_id)
        _docker("exec", "-d", name, "sh", "-c", self.dockerd_command, timeout=30)
        self.wait_ready(instance_id)

    # --- the routing mesh's stand-in ---------------------------------------------------------

    def mesh_peers(self) -> list[str]:
        """The live nodes' private addresses (launched, ready, not terminated), in launch order."""
        with self._lock:
            return list(self._addresses.values())

    def install_ingress(self, instance_id: str) -> None:
        """Put slipway/ingress_shim.py in the node as /usr/local/bin/docker, the mesh's ports in
        MESH_DIR/ports, and this process's PyYAML (its pure-Python modules) in MESH_DIR/yaml."""
        import yaml

        name = self._name(instance_id)
        ports = "".join(f"{listen}:{task}\n" for listen, task in self.mesh.items())
        _write_in(name, f"{MESH_DIR}/ports", ports)
        _write_in(name, "/usr/local/bin/docker", INGRESS_SHIM.read_text(), mode="755")
        package = Path(yaml.__file__).parent
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            for module in sorted(package.glob("*.py")):
                tar.add(module, arcname=f"yaml/{module.name}")
        _docker(
            "exec",
            "-i",
            name,
            "sh",
            "-c",
            f"base64 -d | tar -xz -C {MESH_DIR}",
            input=base64.b64encode(archive.getvalue()).decode(),
            timeout=30,
        )

    def start_mesh(self, instance_id: str, listen_port: int, task_port: int) -> None:
        """Run slipway/mesh.py in the node: it listens on 0.0.0.0:`listen_port` and forwards each
        connection to `task_port` of a peer (a node) that accepts. The node's peers file is written
        first if the node has none (what `set_mesh_peers` wrote last, else the live nodes). Returns
        once the program listens; NodeError with its log if it does not. Idempotent per port."""
        name = self._name(instance_id)
        with self._lock:
            if listen_port in self._meshes.get(instance_id, set()):
                return
        _write_in(name, MESH_PROGRAM, MESH_SOURCE.read_text())
        with self._mesh_lock:
            if _docker("exec", name, "test", "-e", MESH_PEERS, check=False, timeout=30).returncode != 0:
                peers = self._mesh_peers if self._mesh_peers is not None else self.mesh_peers()
                self._write_mesh_peers(name, peers)
        ready, pid, log = (f"{MESH_DIR}/{listen_port}.{kind}" for kind in ("ready", "pid", "log"))
        command = (
            f"echo $$ > {pid} && exec python3 {MESH_PROGRAM} --listen {int(listen_port)} "
            f"--task-port {int(task_port)} --peers {MESH_PEERS} --ready-file {ready} >>{log} 2>&1"
        )
        _docker("exec", name, "rm", "-f", ready, pid, timeout=30)
        _docker("exec", "-d", name, "sh", "-c", command, timeout=30)
        # One exec waits in the node: until the program says it listens, or its process is gone.
        wait = (
            f"i=0; while [ ! -e {ready} ]; do "
            f'if [ -e {pid} ] && ! kill -0 "$(cat {pid})" 2>/dev/null; then exit 2; fi; '
            f"i=$((i+1)); [ $i -gt {MESH_READY_SECONDS * 10} ] && exit 1; sleep 0.1; done"
        )
        waited = _docker("exec", name, "sh", "-c", wait, check=False, timeout=MESH_READY_SECONDS + 30)
        if waited.returncode != 0:
            tail = _docker("exec", name, "tail", "-n", "20", log, check=False, timeout=30)
            raise NodeError(
                f"the mesh of {instance_id} on port {listen_port} "
                f"{'exited' if waited.returncode == 2 else 'did not listen'}: {(tail.stdout or tail.stderr).strip()}"
            )
        with self._lock:
            self._meshes.setdefault(instance_id, set()).add(listen_port)
        self.log(f"node {instance_id}: mesh on port {listen_port} -> task port {task_port}")

    def set_mesh_peers(self, ips: Sequence[str]) -> None:
        """Write the peers file (one address a line, replaced atomically) in every node that runs
        the mesh; a node whose mesh starts later gets the same list."""
        peers = [str(ipaddress.ip_address(ip)) for ip in ips]
        with self._mesh_lock:
            self._mesh_peers = peers
            with self._lock:
                running = [(i, self._containers[i]) for i in self._meshes if i in self._containers]
            for instance_id, name in running:
                written = self._write_mesh_peers(name, peers, check=False)
                if written.returncode != 0 and self.container(instance_id) is not None:
                    raise NodeError(f"cannot write the mesh peers of {instance_id}: {written.stderr.strip()}")

    def _refresh_mesh_peers(self) -> None:
        with self._mesh_lock:  # computed under the lock: the last list written is the current one
            self.set_mesh_peers(self.mesh_peers())

    @staticmethod
    def _write_mesh_peers(name: str, peers: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
        return _write_in(name, MESH_PEERS, "".join(f"{ip}\n" for ip in peers), check=check)

    def close(self, *, remove_images: bool | None = None) -> None:
        """Remove every container of this run, its network, and (unless told not to) the images
        it baked. Idempotent; safe in a finally block or a signal handler."""
        with self._lock:
            self._closed = True
            self._containers.clear()
            self._addresses.clear()
            self._meshes.clear()
            images = set(self._images) if (self.remove_images if remove_images is None else remove_images) else set()
            self._images -= images
            server, self._aws_server = self._aws_server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        cleanup(self.run_id, images=sorted(images))
        with self._lock:
            self._network_ready = False

    def __enter__(self) -> DockerNodes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- SSM's side --------------------------------------------------------------------------

    def _name(self, instance_id: str) -> str:
        name = self.container(instance_id)
        if name is None:
            raise KeyError(f"no node container for {instance_id}")
        return name

    def run(self, instance_id: str, commands: list[str]) -> Result:
        """Run the commands (as one `sh` script, like AWS-RunShellScript) in the instance's
        container: the real exit code, stdout and stderr. Any script runs, marked or not (the
        marker chalicelib/scripts.py puts first is a shell comment)."""
        name = self.container(instance_id)
        script = "\n".join(commands)
        with self._lock:
            self.history.append((instance_id, next((c for c in commands if c != "set -eu"), "")))
        if name is None:
            return Result(1, stderr=f"no node container for {instance_id} (not launched, or terminated)")
        try:
            done = _docker(
                "exec", *self._exec_environment(), name, "sh", "-c", script, check=False, timeout=self.command_timeout
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            return Result(124, out, f"command timed out after {self.command_timeout:.0f}s")
        return Result(done.returncode, done.stdout, done.stderr)

    def _exec_environment(self) -> list[str]:
        if not self.aws_endpoint:
            return []
        environment = {
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_REGION": self.aws_region,
            "AWS_DEFAULT_REGION": self.aws_region,
            **NODE_AWS_CREDENTIALS,
        }
        return [arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")]

    def host_port(self, instance_id: str, port: int) -> int:
        """The port on 127.0.0.1 where this machine reaches the node's `port` (one of
        `published_ports`)."""
        if port not in self.published_ports:
            raise NodeError(f"port {port} is not published by the node containers ({self.published_ports})")
        name = self._name(instance_id)
        with self._lock:  # a container's published ports are fixed for its life: asked once
            known = self._host_ports.get((name, port))
        if known is not None:
            return known
        found = _docker("port", name, f"{port}/tcp", timeout=30).stdout
        for line in found.splitlines():
            host, _, number = line.strip().rpartition(":")
            if host == "127.0.0.1":
                with self._lock:
                    self._host_ports[(name, port)] = int(number)
                return int(number)
        raise NodeError(f"{instance_id}: no loopback port for {port}: {found.strip()}")

    def state(self, instance_id: str) -> str:
        """The node's Swarm.LocalNodeState (inactive, pending, active, error, locked), or the
        error docker gave."""
        result = self.run(instance_id, ["docker info --format '{{.Swarm.LocalNodeState}}'"])
        return result.stdout.strip() if result.code == 0 else f"error: {result.stderr.strip()}"

    def role(self, instance_id: str) -> str | None:
        """ "manager" or "worker" while the node is in a swarm, else None."""
        result = self.run(instance_id, ["docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'"])
        parts = result.stdout.split()
        if result.code != 0 or len(parts) != 2 or parts[0] != "active":
            return None
        return "manager" if parts[1] == "true" else "worker"

    def nodes(self, instance_id: str) -> list[dict]:
        """`docker node ls` as seen from this node (a manager): one dict per node, with
        Hostname, Status, Availability, ManagerStatus."""
        result = self.run(instance_id, ["docker node ls --format '{{json .}}'"])
        if result.code != 0:
            raise NodeError(f"docker node ls on {instance_id}: {result.stderr.strip()}")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _remove_node_container(name: str) -> None:
    """The container and its storage volume (named as the container)."""
    _docker("rm", "-f", "-v", name, check=False, timeout=120)
    _docker("volume", "rm", "-f", name, check=False, timeout=120)


def _networks_using(subnet: str) -> list[str]:
    listed = _docker("network", "ls", "-q", check=False, timeout=30).stdout.split()
    if not listed:
        return []
    inspected = _docker("network", "inspect", *listed, check=False, timeout=30)
    try:
        networks = json.loads(inspected.stdout or "[]")
    except json.JSONDecodeError:
        return []
    wanted = ipaddress.ip_network(subnet)
    found = []
    for network in networks:
        for config in (network.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if ipaddress.ip_network(config["Subnet"]).overlaps(wanted):
                    found.append(network["Name"])
    return found


def cleanup(run_id: str | None = None, *, images: list[str] | None = None, all_images: bool = False) -> dict[str, int]:
    """Remove the containers and networks labelled slipway.emulator (of one run, or of every
    run), and the given images (or, with all_images, every labelled node image). Never raises."""
    counts = {"containers": 0, "networks": 0, "images": 0}
    if shutil.which("docker") is None:
        return counts
    label = f"{LABEL}={run_id}" if run_id else LABEL
    try:
        containers = _docker("ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
        if containers:
            _docker("rm", "-f", "-v", *containers, check=False, timeout=300)
            counts["containers"] = len(containers)
        volumes = _docker("volume", "ls", "-q", "--filter", f"label={label}", check=False).stdout.split()
        if volumes:
            _docker("volume", "rm", "-f", *volumes, check=False, timeout=300)
        networks = _docker("network", "ls", "-q", "--filter", f"label={label}", check=False).stdout.split()
        for network in networks:
            if _docker("network", "rm", network, check=False).returncode == 0:
                counts["networks"] += 1
        doomed = list(images or [])
        if all_images:
            doomed += node_images()
        counts["images"] = remove_images(doomed)
    except (OSError, subprocess.SubprocessError):
        pass
    return counts


def node_images() -> list[str]:
    """The ids of every node image on this machine (labelled node-image by bake_image)."""
    found = _docker("images", "-q", "--no-trunc", "--filter", f"label={ROLE_LABEL}=node-image", check=False)
    return found.stdout.split()


def remove_images(images: list[str]) -> int:
    """Remove these images (and nothing else: no container, no network). Returns how many went."""
    removed, left = 0, list(dict.fromkeys(images))
    while left:  # an image made from another (`_derive`) goes first: its base has a child till then
        kept = [image for image in left if _docker("rmi", "-f", image, check=False, timeout=300).returncode != 0]
        removed += len(left) - len(kept)
        if len(kept) == len(left):
            break
        left = kept
    return removed


def main(argv: list[str] | None = None) -> int:
    """python -m slipway.realnodes check | bake TAG | cleanup [--images]"""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("check", "bake", "cleanup"):
        print(main.__doc__)
        return 2
    if args[0] == "check":
        reason = bake_available()
        print(reason or "real nodes can run here")
        return 1 if reason else 0
    if args[0] == "bake":
        if len(args) != 2:
            print("usage: python -m slipway.realnodes bake TAG")
            return 2
        print(bake_image(args[1]))
        return 0
    counts = cleanup(all_images="--images" in args)
    print(", ".join(f"{n} {what} removed" for what, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
