"""Emulated swarm nodes: what an instance would answer to the commands Slipway sends through SSM.

moto's SendCommand reports Success and prints nothing, so a health gate could never fail and a
swarm token could never be read. This small model answers Slipway's own scripts (init, join,
health, node list, promote, retire, prune) the way Docker does, and keeps what matters for a
deployment to be judged: each node's swarm and role, and the Raft rule that a manager operation
needs more than half of the managers up (a terminated or broken manager counts as down). It is a
stand-in, not Docker: `slipway demo` says which parts were emulated.

A script is recognised by the marker its first line carries (chalicelib/scripts.py MARKERS), never
by its wording; a script without a known marker raises UnknownScript, so whatever sent it fails
saying so.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

from slipway import PROJECT_DIR

if str(PROJECT_DIR) not in sys.path:  # chalicelib sits beside slipway, not installed with it
    sys.path.insert(0, str(PROJECT_DIR))
from chalicelib import scripts

_JOIN = re.compile(r"docker swarm join --token (\S+)")
_JOIN_THROUGH = re.compile(r"^for manager in (.*); do$", re.MULTILINE)
_PROMOTE = re.compile(r"^(?:again )?docker node promote (.+)$", re.MULTILINE)
_RETIRE = re.compile(r"^retire (.+)$", re.MULTILINE)
_DEMOTE = re.compile(r"^demote_surplus (.+)$", re.MULTILINE)
_FORGET = re.compile(r"^forget (.+)$", re.MULTILINE)
_LABEL = re.compile(r"^docker node update --label-add (\S+) (\S+) >/dev/null$", re.MULTILINE)
_IMAGES = re.compile(r"^for image in(.*); do$", re.MULTILINE)
_STACK_NAMESPACE = re.compile(r"label=com\.docker\.stack\.namespace=(\S+)\); do$", re.MULTILINE)
_FETCH = re.compile(r'^slipway-node fetch (\S+) (\S+) "\$work/stack\.yml"$', re.MULTILINE)
_SECRET = re.compile(r"^slipway-node secret (\S+) (\S+)$", re.MULTILINE)
_STACK_DEPLOY = re.compile(r'^docker stack deploy .*--compose-file "\$work/stack\.yml" (\S+)$', re.MULTILINE)
_SERVICE_RM = re.compile(r"^docker service rm (\S+) >/dev/null$", re.MULTILINE)

NOT_A_MANAGER = (
    "Error response from daemon: This node is not a swarm manager. Worker nodes "
    "can't be used to view or modify cluster state."
)
NO_QUORUM = (
    "Error response from daemon: rpc error: code = Unknown desc = The swarm does not "
    "have a leader. It's possible that too few managers are online. Make sure more than "
    "half of the managers are online."
)


class UnknownScript(RuntimeError):
    """A script the emulated nodes cannot answer: its first line is no marker of scripts.MARKERS,
    the marker's kind has no emulation here, or the script lacks what its kind must say. Raised,
    not answered with a failed invocation, so the test or the Lambda that sent it fails naming it."""


@dataclass(frozen=True)
class Machine:
    """What EC2 knows of an instance: its host name, private address, and whether it runs."""

    hostname: str
    private_ip: str
    running: bool


@dataclass(frozen=True)
class Image:
    """An image in the emulated registry: its digest, and whether its healthcheck passes."""

    digest: str
    healthy: bool = True


@dataclass
class Service:
    """A swarm service as the emulated managers keep it."""

    name: str  # <stack>_<service>
    definition: dict  # the Compose definition it was last deployed from
    version: int = 1
    updated_at: str = ""
    update_state: str = ""  # "", updating, completed, rollback_completed, paused
    update_message: str = ""
    settling: int = 0  # status listings left that still show the update under way
    failed_tasks: list[dict] = field(default_factory=list)  # most recent first
    previous: dict | None = None


@dataclass
class Swarm:
    token: str
    worker_token: str = ""
    roles: dict[str, str] = field(default_factory=dict)  # instance id -> "manager" | "worker"
    drained: set[str] = field(default_factory=set)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # instance id -> node labels
    services: dict[str, Service] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # swarm secret name -> value
    leader: str | None = None  # the Raft leader: the first manager, then whichever the others elect
    # Every demotion: (instance id, managers then, whether it led). A leader demoted from two
    # managers can leave the swarm with none on real Docker (plans.plan_promotion).
    demotions: list[tuple[str, int, bool]] = field(default_factory=list)

    @property
    def members(self) -> set[str]:
        return set(self.roles)

    def managers(self) -> list[str]:
        return [i for i, role in self.roles.items() if role == "manager"]


@dataclass
class Result:
    code: int
    stdout: str = ""
    stderr: str = ""


class EmulatedNodes:
    def __init__(
        self,
        directory: Callable[[], dict[str, Machine]] | None = None,
        *,
        fetch: Callable[[str, str], bytes] | None = None,
        parameter: Callable[[str], str | None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._directory = directory or (lambda: {})
        # What a node reaches with its instance role: S3 objects (bucket, key) and SSM parameters.
        self._fetch = fetch or _no_object
        self._parameter = parameter or (lambda name: None)
        self.registry: dict[str, Image] = {}  # "repository:tag" -> the image it names now
        self._clock = 0
        self._swarms: list[Swarm] = []
        self.broken: set[str] = set()  # instances whose dockerd "is stopped"
        self.reclaimable: dict[str, int] = {}  # bytes a prune would free, per instance
        self.history: list[tuple[str, str]] = []  # (instance id, first line of meaning)
        self._answers: dict[str, Callable[[str, str], Result]] = {
            "swarm-init": self._init,
            "swarm-join": self._join,
            "health": self._health,
            "node-list": self._node_list,
            "promote": self._promote,
            "retire": self._retire,
            "prune": self._prune,
            "stack-inspect": self._stack_inspect,
            "stack-deploy": self._stack_deploy,
            "stack-status": self._stack_status,
        }

    # --- what a test or the demo asks ------------------------------------------------------

    def state(self, instance_id: str) -> str:
        return "active" if self._swarm_of(instance_id) else "inactive"

    def role(self, instance_id: str) -> str | None:
        swarm = self._swarm_of(instance_id)
        return swarm.roles.get(instance_id) if swarm else None

    def swarm_of(self, instance_id: str) -> Swarm | None:
        return self._swarm_of(instance_id)

    def has_quorum(self, instance_id: str) -> bool:
        """Whether the swarm this node belongs to can still be managed."""
        swarm = self._swarm_of(instance_id)
        return swarm is not None and self._quorum(swarm, self._directory())

    # --- SSM's side ------------------------------------------------------------------------

    def run(self, instance_id: str, commands: list[str]) -> Result:
        """What the instance answers to a Slipway script, chosen by the script's marker."""
        answer = self._answers.get(scripts.command_kind(commands) or "")
        if answer is None:
            raise UnknownScript(_unknown(instance_id, commands))
        script = "\n".join(commands)
        with self._lock:
            if instance_id in self.broken:
                self.history.append((instance_id, "docker unavailable"))
                return Result(
                    1,
                    stderr="Cannot connect to the Docker daemon at "
                    "unix:///var/run/docker.sock. Is the docker daemon running?",
                )
            return answer(instance_id, script)

    def _health(self, instance_id: str, script: str) -> Result:
        self.history.append((instance_id, "docker info"))
        return Result(0, self.state(instance_id) + "\n")

    def _init(self, instance_id: str, script: str) -> Result:
        swarm = self._swarm_of(instance_id)
        if swarm is None:
            cluster = secrets.token_hex(25)
            swarm = Swarm(
                token=f"SWMTKN-1-{cluster}-{secrets.token_hex(12)}",
                worker_token=f"SWMTKN-1-{cluster}-{secrets.token_hex(12)}",
            )
            swarm.roles[instance_id] = "manager"
            self._swarms.append(swarm)
        self.history.append((instance_id, "docker swarm init"))
        return Result(0, f"manager_token={swarm.token}\nworker_token={swarm.worker_token}\n")

    def _join(self, instance_id: str, script: str) -> Result:
        if self._swarm_of(instance_id):
            return Result(0)  # the script skips the join on an active node
        token = shlex.split(_needs(_JOIN, script, "swarm-join", "docker swarm join --token <token>"))[0]
        managers = _needs(_JOIN_THROUGH, script, "swarm-join", "for manager in <address:2377...>; do")
        addresses = [a.rsplit(":", 1)[0] for a in shlex.split(managers)]
        swarm = next((s for s in self._swarms if token in (s.token, s.worker_token)), None)
        if swarm is None:
            return Result(1, stderr="Error response from daemon: invalid join token")
        machines = self._directory()
        errors = []
        for address in addresses:  # the script's loop: each manager in turn until one answers
            through = next((i for i, m in machines.items() if m.private_ip == address), None)
            if through is None or swarm.roles.get(through) != "manager" or not self._up(through, machines):
                errors.append(
                    f"Error response from daemon: Timeout was reached before node joined. "
                    f"The attempt to join the swarm will continue in the background. "
                    f"({address} is not a reachable manager)"
                )
                continue
            if not self._quorum(swarm, machines):
                errors.append(NO_QUORUM)
                continue
            swarm.roles[instance_id] = "manager" if token == swarm.token else "worker"
            self.history.append((instance_id, f"docker swarm join through {address}"))
            return Result(0, f"This node joined a swarm as a {swarm.roles[instance_id]}.\n", "\n".join(errors))
        return Result(1, stderr="\n".join(errors) or "no manager to join through")

    def _managed(self, instance_id: str) -> tuple[Swarm, dict[str, Machine]] | Result:
        """The swarm a manager operation run on this node acts on (and every machine), or the
        error Docker gives."""
        machines = self._directory()
        swarm = self._swarm_of(instance_id)
        if swarm is None or swarm.roles.get(instance_id) != "manager":
            return Result(1, stderr=NOT_A_MANAGER)
        if not self._quorum(swarm, machines):
            return Result(1, stderr=NO_QUORUM)
        return swarm, machines

    def _promote(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        out: list[str] = []
        for host in shlex.split(_needs(_PROMOTE, script, "promote", "docker node promote <hosts>")):
            node = self._by_hostname(swarm, host, machines)
            if node is None:
                return Result(1, "\n".join(out), f"Error response from daemon: node {host} not found")
            swarm.roles[node] = "manager"
            out.append(f"Node {host} promoted to a manager in the swarm.")
        self.history.append((instance_id, f"docker node promote {' '.join(out)}"))
        return Result(0, "\n".join(out) + "\n")

    def _retire(self, instance_id: str, script: str) -> Result:
        """The retire script's three parts in order: forget members that are down, retire the
        named nodes (drain, demote, remove), demote the surplus managers."""
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        out: list[str] = []
        for part in (self._forget_down, self._retire_named, self._demote_surplus):
            error = part(instance_id, script, swarm, machines, out)
            if error:
                return Result(1, "\n".join(out), error)
        return Result(0, "\n".join(out) + "\n")

    def _forget_down(
        self, instance_id: str, script: str, swarm: Swarm, machines: dict[str, Machine], out: list[str]
    ) -> str | None:
        """Members of these names (only those not up, with "down"): demoted, removed."""
        for line in _FORGET.findall(script):  # members of that name (not up, with "down"): demoted, removed
            host, *mode = shlex.split(line)
            for member in [i for i in swarm.roles if i in machines and machines[i].hostname == host]:
                if mode == ["down"] and self._up(member, machines):
                    continue
                if not self._quorum(swarm, machines):
                    return NO_QUORUM
                if swarm.roles[member] == "manager":
                    swarm.roles[member] = "worker"  # demoting an unreachable manager: the others agree
                del swarm.roles[member]
                out.append(f"forgot {host}")
                self.history.append((instance_id, f"docker node rm {host} (down)"))
        return None

    def _retire_named(
        self, instance_id: str, script: str, swarm: Swarm, machines: dict[str, Machine], out: list[str]
    ) -> str | None:
        """Each named node drained, demoted if a manager, removed."""
        for line in _RETIRE.findall(script):
            host = shlex.split(line)[0]
            node = self._by_hostname(swarm, host, machines)
            if node is None:
                out.append(f"{host}: not in the swarm")
                continue
            if node == instance_id:
                return (
                    "Error response from daemon: rpc error: code = "
                    "FailedPrecondition desc = node is the manager "
                    "this command runs on"
                )
            if not self._quorum(swarm, machines):
                return NO_QUORUM
            swarm.drained.add(node)
            if swarm.roles[node] == "manager":
                error = self._demote(swarm, node, machines)
                if error:
                    return error
                out.append(f"Manager {host} demoted in the swarm.")
            del swarm.roles[node]
            swarm.drained.discard(node)
            out.append(f"retired {host}")
            self.history.append((instance_id, f"docker node rm {host}"))
        return None

    def _demote_surplus(
        self, instance_id: str, script: str, swarm: Swarm, machines: dict[str, Machine], out: list[str]
    ) -> str | None:
        """`left` of the hosts demoted, in order, passing over the leader."""
        for line in _DEMOTE.findall(script):  # `left` of the hosts, in order, passing over the leader
            left, *hosts = shlex.split(line)
            for host in hosts:
                if int(left) <= 0:
                    break
                node = self._by_hostname(swarm, host, machines)
                if node is None:
                    return f"Error response from daemon: node {host} not found"
                if not self._quorum(swarm, machines):
                    return NO_QUORUM
                if node == self._leader(swarm, machines):
                    continue
                error = self._demote(swarm, node, machines)
                if error:
                    return error
                out.append(f"demoted {host}")
                self.history.append((instance_id, f"docker node demote {host}"))
                left = str(int(left) - 1)
        return None

    def _demote(self, swarm, node: str, machines) -> str | None:
        """`docker node demote` on a manager: refused for the last one, and it needs the quorum
        of the managers left. The error Docker would print, or None."""
        if len(swarm.managers()) == 1:
            return (
                "Error response from daemon: rpc error: code = FailedPrecondition desc = "
                "attempting to demote the last manager of the swarm"
            )
        swarm.demotions.append((node, len(swarm.managers()), node == self._leader(swarm, machines)))
        swarm.roles[node] = "worker"
        return None if self._quorum(swarm, machines) else NO_QUORUM

    def _node_list(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        lines = [
            f"{machines[i].hostname if i in machines else i} "
            f"{'Ready' if self._up(i, machines) else 'Down'} "
            f"{'Drain' if i in swarm.drained else 'Active'}"
            for i in swarm.roles
        ]
        self.history.append((instance_id, "docker node ls"))
        return Result(0, "".join(line + "\n" for line in lines))

    def _prune(self, instance_id: str, script: str) -> Result:
        freed = self.reclaimable.pop(instance_id, 0)
        self.history.append((instance_id, "docker system prune"))
        return Result(0, f"Total reclaimed space: {_human(freed)}\n")

    # --- the registry and the stack -----------------------------------------------------------

    def push(self, reference: str, *, healthy: bool = True) -> str:
        """Put an image in the emulated registry under `repository:tag` (a new digest each time,
        as a rebuilt image has); returns the digest."""
        digest = "sha256:" + secrets.token_hex(32)
        self.registry[reference] = Image(digest, healthy)
        return digest

    def services(self, instance_id: str) -> dict[str, Service]:
        """The services of the swarm this node belongs to (what a test inspects)."""
        swarm = self._swarm_of(instance_id)
        return dict(swarm.services) if swarm else {}

    def _tick(self) -> str:
        self._clock += 1
        return (
            f"2026-12-01T00:00:{self._clock:02d}.000000000Z"
            if self._clock < 60
            else f"2026-12-01T00:{self._clock // 60:02d}:{self._clock % 60:02d}.000000000Z"
        )

    def _image(self, reference: str) -> Image | None:
        """The registry's image for a reference (`repo:tag`, or pinned `repo:tag@sha256:...`)."""
        name, _, digest = reference.partition("@")
        image = self.registry.get(name if ":" in name.rsplit("/", 1)[-1] else name + ":latest")
        if digest:
            known = [
                i for ref, i in self.registry.items() if ref.split(":")[0] == name.split(":")[0] and i.digest == digest
            ]
            return known[0] if known else None
        return image

    def _eligible(self, swarm: Swarm, definition: dict, machines: dict[str, Machine]) -> list[str]:
        """The up, active members a service's placement constraints (`node.labels.x == y`) allow."""
        constraints = ((definition.get("deploy") or {}).get("placement") or {}).get("constraints") or []
        nodes = [i for i in swarm.roles if self._up(i, machines) and i not in swarm.drained]
        for constraint in constraints:
            key, _, value = (part.strip() for part in constraint.partition("=="))
            if key.startswith("node.labels."):
                label = key.removeprefix("node.labels.")
                nodes = [i for i in nodes if swarm.labels.get(i, {}).get(label) == value]
            elif key == "node.role":
                nodes = [i for i in nodes if swarm.roles.get(i) == value]
        return nodes

    def _service_lines(self, stack: str, swarm: Swarm, machines: dict[str, Machine]) -> list[str]:
        lines = []
        for service in sorted(swarm.services.values(), key=lambda s: s.name):
            if not service.name.startswith(stack + "_"):
                continue
            definition = service.definition
            deploy = definition.get("deploy") or {}
            replicated = (deploy.get("mode") or "replicated") == "replicated"
            replicas = int(deploy.get("replicas", 1)) if replicated else None
            labels = deploy.get("labels") or {}
            updating = service.settling > 0
            shown_state = "updating" if updating else service.update_state
            lines.append(
                "service "
                + json.dumps(
                    {
                        "name": service.name,
                        "spec": labels.get("slipway.spec", ""),
                        "image": definition["image"],
                        "updated_at": service.updated_at,
                        "update": {"State": shown_state, "Message": service.update_message} if shown_state else None,
                        "mode": {"Replicated": {"Replicas": replicas}} if replicated else {"Global": {}},
                    }
                )
            )
            if updating:
                service.settling -= 1
            eligible = self._eligible(swarm, definition, machines)
            image = self._image(definition["image"])
            healthy = bool(image and image.healthy)
            wanted = replicas if replicas is not None else len(eligible)
            running = wanted if (eligible and healthy and not updating) else 0
            shown = [definition["image"], (service.previous or definition)["image"]][updating]
            tasks = [
                {
                    "name": f"{service.name}.{n}",
                    "image": shown,
                    "desired": "Running",
                    "current": "Running 5 seconds ago",
                    "error": "",
                }
                for n in range(1, (wanted if updating and service.previous else running) + 1)
            ]
            if not updating and not running and wanted:
                why = (
                    "no suitable node (scheduling constraints not satisfied)"
                    if not eligible
                    else (
                        f"No such image: {definition['image']}" if image is None else "dockerexec: unhealthy container"
                    )
                )
                tasks.append(
                    {
                        "name": f"{service.name}.1",
                        "image": definition["image"],
                        "desired": "Running",
                        "current": "Pending" if not eligible else "Failed 2 seconds ago",
                        "error": why,
                    }
                )
            tasks += service.failed_tasks
            lines += ["task " + json.dumps(t) for t in tasks[:8]]
        return lines

    def _stack_inspect(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        stack = _needs(
            _STACK_NAMESPACE, script, "stack-inspect", "for id in $(docker service ls ... namespace=<stack>); do"
        )
        for label, host in _LABEL.findall(script):
            node = self._by_hostname(swarm, shlex.split(host)[0], machines)
            if node is None:
                return Result(1, stderr=f"Error response from daemon: node {host} not found")
            key, _, value = shlex.split(label)[0].partition("=")
            swarm.labels.setdefault(node, {})[key] = value
        out = self._service_lines(stack, swarm, machines)
        for reference in shlex.split(_needs(_IMAGES, script, "stack-inspect", "for image in <images>; do")):
            image = self._image(reference)
            if image is None:
                out.append(
                    f"pull-failed {reference} Error response from daemon: manifest for {reference} not found: "
                    "manifest unknown: manifest unknown"
                )
            else:
                out.append(f"image {reference} {json.dumps([reference.rsplit(':', 1)[0] + '@' + image.digest])}")
        self.history.append((instance_id, f"stack inspect {stack}"))
        return Result(0, "".join(line + "\n" for line in out))

    def _stack_deploy(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        _needs(_FETCH, script, "stack-deploy", 'slipway-node fetch <bucket> <key> "$work/stack.yml"')
        fetched = _FETCH.search(script)
        assert fetched is not None  # _needs has refused a script without it
        bucket, key = fetched.groups()
        try:
            document = yaml.safe_load(self._fetch(shlex.split(bucket)[0], shlex.split(key)[0]))
        except Exception as exc:  # noqa: BLE001  # what the node tool prints for any failed GetObject
            return Result(1, stderr=f"slipway-node: cannot fetch s3://{bucket}/{key}: {exc}")
        for name, parameter in _SECRET.findall(script):
            name, parameter = shlex.split(name)[0], shlex.split(parameter)[0]
            if name in swarm.secrets:
                continue
            value = self._parameter(parameter)
            if value is None:
                return Result(1, stderr=f"slipway-node: cannot read parameter {parameter}: ParameterNotFound")
            swarm.secrets[name] = value
        stack = shlex.split(_needs(_STACK_DEPLOY, script, "stack-deploy", "docker stack deploy ... <stack>"))[0]
        top_secrets = document.get("secrets") or {}
        out: list[str] = []
        for key_name, service_def in (document.get("services") or {}).items():
            for ref in service_def.get("secrets") or []:
                source = ref.get("source") if isinstance(ref, dict) else ref
                name = (top_secrets.get(source) or {}).get("name", f"{stack}_{source}")
                if name not in swarm.secrets:
                    return Result(
                        1,
                        "\n".join(out),
                        f"failed to create service {stack}_{key_name}: "
                        f"Error response from daemon: secret not found: {name}",
                    )
        for key_name, definition in (document.get("services") or {}).items():
            full = f"{stack}_{key_name}"
            service = swarm.services.get(full)
            now = self._tick()
            if service is None:
                swarm.services[full] = Service(full, definition, updated_at=now)
                out.append(f"Creating service {full}")
                continue
            out.append(f"Updating service {full} (id: {full})")
            service.version += 1
            service.updated_at = now  # swarmkit stamps every ServiceUpdate, changed or not
            if definition == service.definition:
                continue
            image = self._image(definition["image"])
            update = (definition.get("deploy") or {}).get("update_config") or {}
            service.previous, service.definition = service.definition, definition
            service.settling = 1
            if image is not None and image.healthy and self._eligible(swarm, definition, machines):
                service.update_state, service.update_message = "completed", "update completed"
                continue
            why = f"No such image: {definition['image']}" if image is None else "dockerexec: unhealthy container"
            service.failed_tasks.insert(
                0,
                {
                    "name": f"{full}.1",
                    "image": definition["image"],
                    "desired": "Shutdown",
                    "current": "Failed 3 seconds ago",
                    "error": f"task: non-zero exit (1): {why}" if image else why,
                },
            )
            if update.get("failure_action", "pause") == "rollback":
                service.definition, service.previous = service.previous, definition
                service.update_state, service.update_message = "rollback_completed", "rollback completed"
            else:
                service.update_state, service.update_message = (
                    "paused",
                    f"update paused due to failure or early termination of task {full}.1",
                )
        for name in _SERVICE_RM.findall(script):
            swarm.services.pop(shlex.split(name)[0], None)
            out.append(f"Removing service {name}")
        self.history.append((instance_id, f"docker stack deploy {stack}"))
        return Result(0, "".join(line + "\n" for line in out))

    def _stack_status(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        stack = _needs(
            _STACK_NAMESPACE, script, "stack-status", "for id in $(docker service ls ... namespace=<stack>); do"
        )
        self.history.append((instance_id, f"stack status {stack}"))
        return Result(0, "".join(line + "\n" for line in self._service_lines(stack, swarm, machines)))

    # --- the rules ---------------------------------------------------------------------------

    def _up(self, instance_id: str, machines: dict[str, Machine]) -> bool:
        machine = machines.get(instance_id)
        return bool(machine and machine.running) and instance_id not in self.broken

    def _leader(self, swarm: Swarm, machines: dict[str, Machine]) -> str | None:
        """The swarm's leader: the one it had while that is a manager and up, else the first
        manager up (an election)."""
        if swarm.leader not in swarm.managers() or not self._up(swarm.leader, machines):
            swarm.leader = next((i for i in swarm.managers() if self._up(i, machines)), None)
        return swarm.leader

    def _quorum(self, swarm: Swarm, machines: dict[str, Machine]) -> bool:
        managers = swarm.managers()
        return sum(self._up(i, machines) for i in managers) * 2 > len(managers)

    @staticmethod
    def _by_hostname(swarm: Swarm, host: str, machines: dict[str, Machine]) -> str | None:
        return next((i for i in swarm.roles if i in machines and machines[i].hostname == host), None)

    def _swarm_of(self, instance_id: str) -> Swarm | None:
        return next((s for s in self._swarms if instance_id in s.roles), None)


def _no_object(bucket: str, key: str) -> bytes:
    """What a node without S3 gets for any object: none (a test's EmulatedNodes without `fetch`)."""
    raise KeyError(f"NoSuchKey: s3://{bucket}/{key}")


def _unknown(instance_id: str, commands: list[str]) -> str:
    """Why an emulated node refuses this script, naming the markers it knows."""
    first = commands[0].split("\n", 1)[0].strip() if commands else ""
    kind = scripts.command_kind(commands)
    if kind is not None:
        return (
            f"emulated node {instance_id}: no emulation of {scripts.MARKERS[kind]!r} scripts; "
            f"slipway/emulator/nodes.py must answer every kind of scripts.MARKERS"
        )
    what = "an unknown marker" if first.startswith(scripts.MARKER_PREFIX) else "no Slipway marker"
    return (
        f"emulated node {instance_id} cannot run a script with {what}: its first line must be "
        f"one of scripts.MARKERS ({', '.join(scripts.MARKERS.values())}), not {first!r}"
    )


def _needs(pattern: re.Pattern[str], script: str, kind: str, line: str) -> str:
    """The first group of `pattern` in a script of this kind, or UnknownScript naming the line."""
    found = pattern.search(script)
    if found is None:
        raise UnknownScript(
            f"a {scripts.MARKERS[kind]!r} script without a '{line}' line: the emulated nodes cannot tell what it does"
        )
    return found.group(1)


def _human(size: int) -> str:
    """Docker's own rendering of a size (go-units HumanSize: decimal units, 4 significant digits)."""
    units = ["B", "kB", "MB", "GB", "TB"]
    value = float(size)
    unit = 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    return f"{value:.4g}{units[unit]}"
