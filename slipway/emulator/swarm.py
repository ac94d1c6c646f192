"""The emulated swarm's model: each node's swarm and role, the images in the emulated registry,
the services a manager keeps, and the rules Docker applies (a manager operation needs more than
half of the managers up; a terminated or broken manager counts as down). The answers to Slipway's
scripts are built on it: the swarm's in nodes.py, the stack's in stacks.py."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from chalicelib import scripts

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
    configs: dict[str, bytes] = field(default_factory=dict)  # swarm config name -> its bytes
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


class SwarmState:
    """What the emulated nodes know, and the rules every answer applies."""

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
        # References a public registry would not serve (a test's missing image); any other public
        # one is served (stacks.StackAnswers._image), as Docker Hub and the like would.
        self.missing: set[str] = set()
        self._clock = 0
        self._swarms: list[Swarm] = []
        self.broken: set[str] = set()  # instances whose dockerd "is stopped"
        self.reclaimable: dict[str, int] = {}  # bytes a prune would free, per instance
        self.history: list[tuple[str, str]] = []  # (instance id, first line of meaning)

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


def needs_line(pattern: re.Pattern[str], script: str, kind: str, line: str) -> str:
    """The first group of `pattern` in a script of this kind, or UnknownScript naming the line."""
    found = pattern.search(script)
    if found is None:
        raise UnknownScript(
            f"a {scripts.MARKERS[kind]!r} script without a '{line}' line: the emulated nodes cannot tell what it does"
        )
    return found.group(1)


def human_size(size: int) -> str:
    """Docker's own rendering of a size (go-units HumanSize: decimal units, 4 significant digits)."""
    units = ["B", "kB", "MB", "GB", "TB"]
    value = float(size)
    unit = 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    return f"{value:.4g}{units[unit]}"
