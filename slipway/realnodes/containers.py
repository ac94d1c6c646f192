"""Each instance a container from the node image, running its own dockerd, on a Docker network of
the VPC's CIDR, with the instance's host name and private address; SSM commands run in it for real
(`DockerNodes`, which answers what the emulated nodes answer, plus the lifecycle)."""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import json
import shlex
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from slipway.emulator.nodes import Result
from slipway.realnodes.bake import IMAGE_TAG, NODE_COMMAND, PLAYBOOK, bake_image, image_exists, image_name
from slipway.realnodes.cleanup import cleanup
from slipway.realnodes.dockercli import LABEL, ROLE_LABEL, NodeError, require_docker, run_docker, write_in

INSTANCE_LABEL = "slipway.instance"

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
DOCKERD = "/usr/sbin/dockerd --iptables=false"
DOCKERD_LOG = "/var/log/slipway-dockerd.log"
# The fake credentials a node's commands get with `aws_endpoint` (the instance role's, on EC2).
NODE_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The bridges the node's dockerd makes, made first with interface indexes above eth0's. On EC2,
# eth0 comes first and `hostname -I | cut -d" " -f1` (the init script) is the private address;
# in a container, eth0 keeps the host's (large) index and a docker0 made inside would come
# before it: the swarm would advertise 172.17.0.1.
_LATE_BRIDGES = (("docker0", 60001), ("docker_gwbridge", 60002))
# The routing-mesh stand-in in a node: the program (a copy of slipway/realnodes/mesh.py), the peers file
# every mesh process of the node reads, its log and readiness file per published port.
MESH_SOURCE = Path(__file__).with_name("mesh.py")
MESH_DIR = "/run/slipway-mesh"
MESH_PROGRAM = f"{MESH_DIR}/mesh.py"
MESH_PEERS = f"{MESH_DIR}/peers"
MESH_READY_SECONDS = 15
# The rest of the ingress stand-in: `docker` in the node rewriting a stack's ingress ports to the
# mesh's task ports (slipway/realnodes/ingress_shim.py), with the PyYAML it reads stack files with.
INGRESS_SHIM = Path(__file__).with_name("ingress_shim.py")


class DockerNodes:
    """Each instance a container running its own dockerd; SSM commands run in it for real.

    Same questions as `slipway.emulator.nodes.EmulatedNodes` (`run`, `state`, `role`), plus the lifecycle
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
        existed = IMAGE_TAG.match(tag) is not None and image_exists(image_name(tag))
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
            existing = run_docker("network", "inspect", self.network, check=False, timeout=30)
            if existing.returncode != 0:
                created = run_docker(
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
        started = run_docker(
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
            run_docker("exec", "-d", name, "sh", "-c", self.dockerd_command, timeout=30)
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
        run_docker(
            "volume",
            "create",
            *self._label_args("node-storage", **{INSTANCE_LABEL: instance_id}),
            name,
            timeout=60,
        )
        return name

    @staticmethod
    def _prepare_network_namespace(name: str) -> None:
        pid = run_docker("inspect", "--format", "{{.State.Pid}}", name, timeout=30).stdout.strip()
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
            probe = run_docker(
                "exec", name, "docker", "info", "--format", "{{.ServerVersion}}", check=False, timeout=30
            )
            if probe.returncode == 0 and probe.stdout.strip():
                return
            if time.monotonic() > deadline:
                tail = run_docker("exec", name, "tail", "-n", "30", DOCKERD_LOG, check=False, timeout=30)
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
        run_docker(
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
        run_docker("exec", "-d", name, "sh", "-c", self.dockerd_command, timeout=30)
        self.wait_ready(instance_id)

    # --- the routing mesh's stand-in ---------------------------------------------------------

    def mesh_peers(self) -> list[str]:
        """The live nodes' private addresses (launched, ready, not terminated), in launch order."""
        with self._lock:
            return list(self._addresses.values())

    def install_ingress(self, instance_id: str) -> None:
        """Put slipway/realnodes/ingress_shim.py in the node as /usr/local/bin/docker, the mesh's ports in
        MESH_DIR/ports, and this process's PyYAML (its pure-Python modules) in MESH_DIR/yaml."""
        import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

        name = self._name(instance_id)
        ports = "".join(f"{listen}:{task}\n" for listen, task in self.mesh.items())
        write_in(name, f"{MESH_DIR}/ports", ports)
        write_in(name, "/usr/local/bin/docker", INGRESS_SHIM.read_text(), mode="755")
        package = Path(yaml.__file__).parent
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            for module in sorted(package.glob("*.py")):
                tar.add(module, arcname=f"yaml/{module.name}")
        run_docker(
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
        """Run slipway/realnodes/mesh.py in the node: it listens on 0.0.0.0:`listen_port` and forwards each
        connection to `task_port` of a peer (a node) that accepts. The node's peers file is written
        first if the node has none (what `set_mesh_peers` wrote last, else the live nodes). Returns
        once the program listens; NodeError with its log if it does not. Idempotent per port."""
        name = self._name(instance_id)
        with self._lock:
            if listen_port in self._meshes.get(instance_id, set()):
                return
        write_in(name, MESH_PROGRAM, MESH_SOURCE.read_text())
        with self._mesh_lock:
            if run_docker("exec", name, "test", "-e", MESH_PEERS, check=False, timeout=30).returncode != 0:
                peers = self._mesh_peers if self._mesh_peers is not None else self.mesh_peers()
                self._write_mesh_peers(name, peers)
        ready, pid, log = (f"{MESH_DIR}/{listen_port}.{kind}" for kind in ("ready", "pid", "log"))
        command = (
            f"echo $$ > {pid} && exec python3 {MESH_PROGRAM} --listen {int(listen_port)} "
            f"--task-port {int(task_port)} --peers {MESH_PEERS} --ready-file {ready} >>{log} 2>&1"
        )
        run_docker("exec", name, "rm", "-f", ready, pid, timeout=30)
        run_docker("exec", "-d", name, "sh", "-c", command, timeout=30)
        # One exec waits in the node: until the program says it listens, or its process is gone.
        wait = (
            f"i=0; while [ ! -e {ready} ]; do "
            f'if [ -e {pid} ] && ! kill -0 "$(cat {pid})" 2>/dev/null; then exit 2; fi; '
            f"i=$((i+1)); [ $i -gt {MESH_READY_SECONDS * 10} ] && exit 1; sleep 0.1; done"
        )
        waited = run_docker("exec", name, "sh", "-c", wait, check=False, timeout=MESH_READY_SECONDS + 30)
        if waited.returncode != 0:
            tail = run_docker("exec", name, "tail", "-n", "20", log, check=False, timeout=30)
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
        return write_in(name, MESH_PEERS, "".join(f"{ip}\n" for ip in peers), check=check)

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
            done = run_docker(
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
        found = run_docker("port", name, f"{port}/tcp", timeout=30).stdout
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
    run_docker("rm", "-f", "-v", name, check=False, timeout=120)
    run_docker("volume", "rm", "-f", name, check=False, timeout=120)


def _networks_using(subnet: str) -> list[str]:
    listed = run_docker("network", "ls", "-q", check=False, timeout=30).stdout.split()
    if not listed:
        return []
    inspected = run_docker("network", "inspect", *listed, check=False, timeout=30)
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
