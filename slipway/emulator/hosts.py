"""Where the emulator's EC2 instances run, chosen once when an Emulator is made: as emulated swarm
nodes in this process (EmulatedHost), or as containers with their own dockerd, baked from the
swarm_node role for real, pulling from a local registry, behind a real TCP load balancer
(RealHost, slipway/realnodes/). The services' modules ask the host; none asks which it is.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from slipway.emulator.account import EXAMPLE_IMAGES, REAL_NODE_MESH, REAL_NODE_PORTS, REGION, stage_environment
from slipway.emulator.ec2 import machines
from slipway.emulator.elb import LocalLoadBalancer
from slipway.emulator.nodes import EmulatedNodes, Result

if TYPE_CHECKING:
    from chalicelib.settings import Settings
    from slipway.emulator.core import Emulator

# A target's health as an NLB reports it: (state, reason, description).
TargetState = tuple[str, str | None, str | None]


class Nodes(Protocol):
    """What the pipeline's Run Commands reach, and what a test may ask of any node."""

    def run(self, instance_id: str, commands: list[str]) -> Result: ...

    def state(self, instance_id: str) -> str: ...

    def role(self, instance_id: str) -> str | None: ...


class NodeHost(Protocol):
    """Where instances run; each hook is called by the service whose call it follows."""

    nodes: Any  # a Nodes; tests of one kind of host also reach what only that kind has
    load_balancer: LocalLoadBalancer | None  # a real one on this machine, or None (emulated health)

    def start(self) -> None:
        """Before moto: whatever the instances will need."""

    def serve(self, settings: Settings) -> None:
        """Once moto answers and the settings are read."""

    def launched(self, instances: list[Any]) -> None:
        """RunInstances made these instances."""

    def terminated(self, instance_ids: list[str]) -> None:
        """TerminateInstances ended these."""

    def build(self, bake: dict[str, Any]) -> str:
        """The bake's node image: SUCCEEDED, IN_PROGRESS or FAILED."""

    def build_image(
        self, service: str, target: dict[str, Any], source: zipfile.ZipFile, reference: str, secrets: dict[str, str]
    ) -> tuple[bool, str | None, list[str]]:
        """One service's build (a bake file's target, the commit's files, each build secret's id
        and value): whether it built, the digest pushed (None: ECR's emulated one) and the log."""

    def pushed(self, reference: str, digest: str) -> None:
        """ECR now has `reference` at `digest`."""

    def registered(self, ami_id: str, bake: dict[str, Any]) -> None:
        """The bake's AMI is registered under this id."""

    def target_state(self, port: int, instance_id: str) -> TargetState | None:
        """A target's health as the host sees it; None: the emulated load balancer decides."""

    def targets_changed(self, group: Any) -> None:
        """A target group's registrations changed."""

    def listeners_changed(self, backend: Any) -> None:
        """A load balancer was deleted."""

    def example_stack(self, data: bytes) -> bytes:
        """example/stack.yml as these nodes can run it."""


class EmulatedHost:
    """Emulated swarm nodes (slipway/emulator/nodes.py): no Docker engine runs; the bake builds
    nothing; the load balancer's health is emulated (elb.TargetHealth)."""

    load_balancer: LocalLoadBalancer | None = None

    def __init__(self, emu: Emulator) -> None:
        self.nodes = EmulatedNodes(machines, fetch=emu.node_fetch, parameter=emu.node_parameter)
        for reference in EXAMPLE_IMAGES:  # what example/stack.yml runs (make demo)
            self.nodes.push(reference)

    def start(self) -> None:
        pass

    def serve(self, settings: Settings) -> None:
        pass

    def launched(self, instances: list[Any]) -> None:
        pass

    def terminated(self, instance_ids: list[str]) -> None:
        pass

    def build(self, bake: dict[str, Any]) -> str:
        return "SUCCEEDED"

    def build_image(
        self, service: str, target: dict[str, Any], source: zipfile.ZipFile, reference: str, secrets: dict[str, str]
    ) -> tuple[bool, str | None, list[str]]:
        return True, None, [f"#1 [{service}] emulated build of {target['context']}", f"#2 pushing {reference}"]

    def pushed(self, reference: str, digest: str) -> None:
        from slipway.emulator.swarm import Image

        self.nodes.registry[reference] = Image(digest, True)

    def registered(self, ami_id: str, bake: dict[str, Any]) -> None:
        pass

    def target_state(self, port: int, instance_id: str) -> TargetState | None:
        return None

    def targets_changed(self, group: Any) -> None:
        pass

    def listeners_changed(self, backend: Any) -> None:
        pass

    def example_stack(self, data: bytes) -> bytes:
        return data  # the emulated registry has its images


class RealNodesUnavailable(RuntimeError):
    """`--real-nodes` was asked for where Docker (or the bake's tools) cannot run."""


class RealHost:
    """Each instance a node container (realnodes.DockerNodes) from the image the bake converged
    for real, pulling the stack's images from a local registry, behind a real TCP load balancer
    (elb.LocalLoadBalancer) that follows moto's."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.nodes: Any = None  # DockerNodes, once started
        self.registry: Any = None  # the local registry the nodes pull the stack's images from
        self.load_balancer: LocalLoadBalancer | None = None
        self.images: dict[str, str] = {}  # AMI id -> the local Docker image baked for it

    def start(self) -> None:
        from slipway import realnodes
        from slipway.realnodes import registry

        reason = realnodes.bake_available()
        if reason:
            raise RealNodesUnavailable(f"--real-nodes needs Docker and the bake's tools: {reason}")
        reason = registry.registry_available()
        if reason:
            raise RealNodesUnavailable(f"--real-nodes needs a local registry for the stack's images: {reason}")
        emu = self.emu
        cidr = emu.extra_environment.get("SLIPWAY_VPC_CIDR") or stage_environment().get(
            "SLIPWAY_VPC_CIDR", "10.42.0.0/16"
        )
        self.nodes = realnodes.DockerNodes(
            cidr, log=emu.log, aws_region=REGION, published_ports=REAL_NODE_PORTS, mesh=REAL_NODE_MESH
        )
        emu._stack.callback(self.nodes.close)
        self.registry = registry.LocalRegistry().start()
        emu._stack.callback(self.registry.close)
        # The nodes pull from it over HTTP, through the node network's gateway.
        self.nodes.insecure_registries = (self.registry.address(self.nodes.gateway),)

    def serve(self, settings: Settings) -> None:
        # What a node reaches with its instance role: this process's moto.
        self.nodes.start_aws_endpoint()
        # ECR's registry is the local one: a repository's URI is where the nodes pull from it.
        from unittest import mock

        from moto.ecr.models import Repository

        original = Repository.__init__
        address = self.registry.address(self.nodes.gateway)

        def init(repository, *args, **kwargs):
            original(repository, *args, **kwargs)
            repository.uri = f"{address}/{repository.name}"

        self.emu._stack.enter_context(mock.patch.object(Repository, "__init__", init))
        self.load_balancer = LocalLoadBalancer(self.emu, settings, log=self.emu.log)
        self.emu._stack.callback(self.load_balancer.close)

    def launched(self, instances: list[Any]) -> None:
        """One container per new instance, from the image baked for its AMI, with the instance's
        host name and private address, all started at once."""
        new = [i for i in instances if self.nodes.container(i.id) is None]
        if not new:
            return
        missing = [i.image_id for i in new if i.image_id not in self.images]
        if missing:
            raise RuntimeError(
                f"no local node image for {sorted(set(missing))}: only images "
                "baked by this run can be launched with --real-nodes"
            )

        def launch(instance: Any) -> None:
            hostname = instance.private_dns_name.split(".")[0]
            self.nodes.launch(
                instance.id, image=self.images[instance.image_id], hostname=hostname, ip=instance.private_ip
            )

        with ThreadPoolExecutor(max_workers=min(8, len(new))) as pool:
            list(pool.map(launch, new))

    def terminated(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            self.nodes.terminate(instance_id)

    def build_image(
        self, service: str, target: dict[str, Any], source: zipfile.ZipFile, reference: str, secrets: dict[str, str]
    ) -> tuple[bool, str | None, list[str]]:
        """A real BuildKit build on this machine's dockerd, pushed to the local registry (whose
        address moto's ECR gives as the repository's URI: see `serve`); each build secret's value
        read from Parameter Store, as CodeBuild would."""
        from slipway.realnodes import build

        return build.build_service(self.registry, target, source, reference, secrets, log=self.emu.log)

    def pushed(self, reference: str, digest: str) -> None:
        pass

    def build(self, bake: dict[str, Any]) -> str:
        """Bake the local image in the background, as CodeBuild would, while the state machine
        polls: IN_PROGRESS until it is done."""
        if "thread" not in bake:
            bake["thread"] = threading.Thread(target=self._bake, args=(bake,), name="real-bake", daemon=True)
            bake["thread"].start()
        if bake["thread"].is_alive():
            return "IN_PROGRESS"
        return "FAILED" if "error" in bake else "SUCCEEDED"

    def _bake(self, bake: dict[str, Any]) -> None:
        try:
            tag = bake["variables"].get("PKR_VAR_image_key", "")
            # Converge the role exactly as the build's source has it (the pushed commit's
            # ansible/), cached by that content.
            with (
                tempfile.TemporaryDirectory(prefix="slipway-bake-") as workdir,
                zipfile.ZipFile(io.BytesIO(bake["archive"])) as source,
            ):
                source.extractall(workdir)
                digest = hashlib.sha256()
                for name in sorted(n for n in source.namelist() if n.startswith("ansible/")):
                    digest.update(name.encode() + b"\0" + source.read(name) + b"\0")
                bake["image"] = self.nodes.bake(
                    tag,
                    playbook=Path(workdir) / "ansible" / "swarm_node.yml",
                    root_tag="role-" + digest.hexdigest()[:16],
                )
        except Exception as exc:  # noqa: BLE001 - the build fails with it, as on CodeBuild
            bake["error"] = f"{type(exc).__name__}: {exc}"
            self.emu.log(f"bake failed: {bake['error']}")

    def registered(self, ami_id: str, bake: dict[str, Any]) -> None:
        self.images[ami_id] = bake["image"]

    def target_state(self, port: int, instance_id: str) -> TargetState | None:
        return None if self.load_balancer is None else self.load_balancer.target_state(port, instance_id)

    def targets_changed(self, group: Any) -> None:
        """The local load balancer sends connections to the targets registered now."""
        if self.load_balancer is not None:
            self.load_balancer.sync(group)

    def listeners_changed(self, backend: Any) -> None:
        """A deleted load balancer's ports stop listening on this machine."""
        if self.load_balancer is not None:
            self.load_balancer.sync_listeners(backend)

    def example_stack(self, data: bytes) -> bytes:
        """Its web service with the images built from example/web/ and pushed to the local
        registry, one replica per node at most (the ingress stand-in publishes its tasks' port in
        host mode), and no worker (no image of it is built here)."""
        import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

        from slipway.realnodes import registry

        registry.example_images(self.registry, log=self.emu.log)  # built once per content, pushed
        # Its port stays as written, `80:8080` in ingress mode: the nodes' ingress stand-in
        # (slipway/realnodes/ingress_shim.py, mesh.py) serves it on every node's port 80.
        document = yaml.safe_load(data)
        web = document["services"]["web"]
        web.pop("build", None)  # the example's prebuilt images (example_images), not a build of the run
        web["image"] = f"{self.registry.address(self.nodes.gateway)}/{registry.EXAMPLE_REPOSITORY}:1"
        web["deploy"]["replicas"] = min(int(web["deploy"].get("replicas", 1)), self.emu.node_count)
        document["services"] = {"web": web}
        return yaml.safe_dump(document, sort_keys=False).encode()
