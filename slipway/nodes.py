"""Emulated swarm nodes: what an instance would answer to the commands Slipway sends through SSM.

moto's SendCommand reports Success and prints nothing, so a health gate could never fail and a
swarm token could never be read. This small model answers Slipway's own scripts (init, join,
health, node list, promote, retire, prune) the way Docker does, and keeps what matters for a
deployment to be judged: each node's swarm and role, and the Raft rule that a manager operation
needs more than half of the managers up (a terminated or broken manager counts as down). It is a
stand-in, not Docker: `slipway demo` says which parts were emulated.

A script is recognised by the marker its first line carries (chalicelib/plans.py MARKERS), never
by its wording; a script without a known marker raises UnknownScript, so whatever sent it fails
saying so.
"""

from __future__ import annotations

import re
import secrets
import shlex
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from slipway import PROJECT_DIR

if str(PROJECT_DIR) not in sys.path:  # chalicelib sits beside slipway, not installed with it
    sys.path.insert(0, str(PROJECT_DIR))
from chalicelib import plans

_JOIN = re.compile(r"docker swarm join --token (\S+)")
_JOIN_THROUGH = re.compile(r"^for manager in (.*); do$", re.MULTILINE)
_PROMOTE = re.compile(r"^(?:again )?docker node promote (.+)$", re.MULTILINE)
_RETIRE = re.compile(r"^retire (.+)$", re.MULTILINE)
_DEMOTE = re.compile(r"^demote_surplus (.+)$", re.MULTILINE)

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
    """A script the emulated nodes cannot answer: its first line is no marker of plans.MARKERS,
    the marker's kind has no emulation here, or the script lacks what its kind must say. Raised,
    not answered with a failed invocation, so the test or the Lambda that sent it fails naming it."""


@dataclass(frozen=True)
class Machine:
    """What EC2 knows of an instance: its host name, private address, and whether it runs."""

    hostname: str
    private_ip: str
    running: bool


@dataclass
class Swarm:
    token: str
    worker_token: str = ""
    roles: dict[str, str] = field(default_factory=dict)  # instance id -> "manager" | "worker"
    drained: set[str] = field(default_factory=set)

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
    def __init__(self, directory: Callable[[], dict[str, Machine]] | None = None) -> None:
        self._lock = threading.Lock()
        self._directory = directory or (lambda: {})
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
        return bool(swarm) and self._quorum(swarm, self._directory())

    # --- SSM's side ------------------------------------------------------------------------

    def run(self, instance_id: str, commands: list[str]) -> Result:
        """What the instance answers to a Slipway script, chosen by the script's marker."""
        answer = self._answers.get(plans.command_kind(commands) or "")
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
        through = _needs(_JOIN_THROUGH, script, "swarm-join", "for manager in <address:2377...>; do")
        addresses = [a.rsplit(":", 1)[0] for a in shlex.split(through)]
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

    def _managed(self, instance_id: str) -> tuple[Swarm | None, dict[str, Machine], Result | None]:
        """The swarm a manager operation run on this node acts on, or the error Docker gives."""
        machines = self._directory()
        swarm = self._swarm_of(instance_id)
        if swarm is None or swarm.roles.get(instance_id) != "manager":
            return None, machines, Result(1, stderr=NOT_A_MANAGER)
        if not self._quorum(swarm, machines):
            return None, machines, Result(1, stderr=NO_QUORUM)
        return swarm, machines, None

    def _promote(self, instance_id: str, script: str) -> Result:
        swarm, machines, error = self._managed(instance_id)
        if error:
            return error
        out = []
        for host in shlex.split(_needs(_PROMOTE, script, "promote", "docker node promote <hosts>")):
            node = self._by_hostname(swarm, host, machines)
            if node is None:
                return Result(1, "\n".join(out), f"Error response from daemon: node {host} not found")
            swarm.roles[node] = "manager"
            out.append(f"Node {host} promoted to a manager in the swarm.")
        self.history.append((instance_id, f"docker node promote {' '.join(out)}"))
        return Result(0, "\n".join(out) + "\n")

    def _retire(self, instance_id: str, script: str) -> Result:
        swarm, machines, error = self._managed(instance_id)
        if error:
            return error
        out = []
        for line in _RETIRE.findall(script):
            host = shlex.split(line)[0]
            node = self._by_hostname(swarm, host, machines)
            if node is None:
                out.append(f"{host}: not in the swarm")
                continue
            if node == instance_id:
                return Result(
                    1,
                    "\n".join(out),
                    "Error response from daemon: rpc error: code = "
                    "FailedPrecondition desc = node is the manager "
                    "this command runs on",
                )
            if not self._quorum(swarm, machines):
                return Result(1, "\n".join(out), NO_QUORUM)
            swarm.drained.add(node)
            if swarm.roles[node] == "manager":
                error = self._demote(swarm, node, machines)
                if error:
                    return Result(1, "\n".join(out), error)
                out.append(f"Manager {host} demoted in the swarm.")
            del swarm.roles[node]
            swarm.drained.discard(node)
            out.append(f"retired {host}")
            self.history.append((instance_id, f"docker node rm {host}"))
        for line in _DEMOTE.findall(script):
            host = shlex.split(line)[0]
            node = self._by_hostname(swarm, host, machines)
            if node is None:
                return Result(1, "\n".join(out), f"Error response from daemon: node {host} not found")
            error = NO_QUORUM if not self._quorum(swarm, machines) else self._demote(swarm, node, machines)
            if error:
                return Result(1, "\n".join(out), error)
            out.append(f"demoted {host}")
            self.history.append((instance_id, f"docker node demote {host}"))
        return Result(0, "\n".join(out) + "\n")

    def _demote(self, swarm, node: str, machines) -> str | None:
        """`docker node demote` on a manager: refused for the last one, and it needs the quorum
        of the managers left. The error Docker would print, or None."""
        if len(swarm.managers()) == 1:
            return (
                "Error response from daemon: rpc error: code = FailedPrecondition desc = "
                "attempting to demote the last manager of the swarm"
            )
        swarm.roles[node] = "worker"
        return None if self._quorum(swarm, machines) else NO_QUORUM

    def _node_list(self, instance_id: str, script: str) -> Result:
        swarm, machines, error = self._managed(instance_id)
        if error:
            return error
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

    # --- the rules ---------------------------------------------------------------------------

    def _up(self, instance_id: str, machines: dict[str, Machine]) -> bool:
        machine = machines.get(instance_id)
        return bool(machine and machine.running) and instance_id not in self.broken

    def _quorum(self, swarm: Swarm, machines: dict[str, Machine]) -> bool:
        managers = swarm.managers()
        return sum(self._up(i, machines) for i in managers) * 2 > len(managers)

    @staticmethod
    def _by_hostname(swarm: Swarm, host: str, machines: dict[str, Machine]) -> str | None:
        return next((i for i in swarm.roles if i in machines and machines[i].hostname == host), None)

    def _swarm_of(self, instance_id: str) -> Swarm | None:
        return next((s for s in self._swarms if instance_id in s.roles), None)


def _unknown(instance_id: str, commands: list[str]) -> str:
    """Why an emulated node refuses this script, naming the markers it knows."""
    first = commands[0].split("\n", 1)[0].strip() if commands else ""
    kind = plans.command_kind(commands)
    if kind is not None:
        return (
            f"emulated node {instance_id}: no emulation of {plans.MARKERS[kind]!r} scripts; "
            f"slipway/nodes.py must answer every kind of plans.MARKERS"
        )
    what = "an unknown marker" if first.startswith(plans.MARKER_PREFIX) else "no Slipway marker"
    return (
        f"emulated node {instance_id} cannot run a script with {what}: its first line must be "
        f"one of plans.MARKERS ({', '.join(plans.MARKERS.values())}), not {first!r}"
    )


def _needs(pattern: re.Pattern[str], script: str, kind: str, line: str) -> str:
    """The first group of `pattern` in a script of this kind, or UnknownScript naming the line."""
    found = pattern.search(script)
    if found is None:
        raise UnknownScript(
            f"a {plans.MARKERS[kind]!r} script without a '{line}' line: the emulated nodes cannot tell what it does"
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
