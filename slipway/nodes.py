"""Emulated swarm nodes: what an instance would answer to the commands Slipway sends through SSM.

moto's SendCommand reports Success and prints nothing, so a health gate could never fail and a
swarm token could never be read. This small model answers Slipway's own scripts (init, join,
health, retire, prune) the way Docker does, keeps each node's swarm state, and can be told to
break a node. It is a stand-in, not Docker: `slipway demo` says which parts were emulated.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field

_JOIN = re.compile(r"docker swarm join --token '?(SWMTKN-[A-Za-z0-9-]+)'?")
_NODE_RM = re.compile(r"docker node rm --force '?([A-Za-z0-9.-]+)'?")


@dataclass
class Swarm:
    token: str
    worker_token: str = ""
    members: set[str] = field(default_factory=set)
    roles: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    code: int
    stdout: str = ""
    stderr: str = ""


class EmulatedNodes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}  # instance id -> swarm state
        self._swarms: list[Swarm] = []
        self.broken: set[str] = set()  # instances whose dockerd "is stopped"
        self.reclaimable: dict[str, int] = {}  # bytes a prune would free, per instance
        self.history: list[tuple[str, str]] = []  # (instance id, first line of meaning)

    def state(self, instance_id: str) -> str:
        return self._state.get(instance_id, "inactive")

    def role(self, instance_id: str) -> str | None:
        swarm = self._swarm_of(instance_id)
        return swarm.roles.get(instance_id) if swarm else None

    def run(self, instance_id: str, commands: list[str], hostname: str = "") -> Result:
        script = "\n".join(commands)
        with self._lock:
            if instance_id in self.broken:
                self.history.append((instance_id, "docker unavailable"))
                return Result(1, stderr="Cannot connect to the Docker daemon at "
                                        "unix:///var/run/docker.sock. Is the docker daemon running?")
            if "docker swarm init" in script:
                return self._init(instance_id)
            if "docker swarm join" in script:
                return self._join(instance_id, script)
            if "docker node rm" in script:
                return self._remove(instance_id, script)
            if "docker system prune" in script:
                return self._prune(instance_id)
            if "LocalNodeState" in script:
                self.history.append((instance_id, "docker info"))
                return Result(0, self.state(instance_id) + "\n")
            return Result(127, stderr=f"emulated node does not know how to run: {commands[:1]}")

    def _init(self, instance_id: str) -> Result:
        swarm = self._swarm_of(instance_id)
        if swarm is None:
            cluster = secrets.token_hex(25)
            swarm = Swarm(token=f"SWMTKN-1-{cluster}-{secrets.token_hex(12)}",
                          worker_token=f"SWMTKN-1-{cluster}-{secrets.token_hex(12)}")
            swarm.members.add(instance_id)
            swarm.roles[instance_id] = "manager"
            self._swarms.append(swarm)
            self._state[instance_id] = "active"
        self.history.append((instance_id, "docker swarm init"))
        return Result(0, f"manager_token={swarm.token}\nworker_token={swarm.worker_token}\n")

    def _join(self, instance_id: str, script: str) -> Result:
        match = _JOIN.search(script)
        token = match.group(1) if match else None
        swarm = next((s for s in self._swarms if token in (s.token, s.worker_token)), None)
        if swarm is None:
            return Result(1, stderr="Error response from daemon: invalid join token")
        swarm.members.add(instance_id)
        swarm.roles[instance_id] = "manager" if token == swarm.token else "worker"
        self._state[instance_id] = "active"
        self.history.append((instance_id, "docker swarm join"))
        return Result(0, f"This node joined a swarm as a {swarm.roles[instance_id]}.\n")

    def _remove(self, instance_id: str, script: str) -> Result:
        removed = _NODE_RM.findall(script)
        self.history.append((instance_id, f"docker node rm {' '.join(removed)}"))
        return Result(0, "".join(f"{host}\n" for host in removed))

    def _prune(self, instance_id: str) -> Result:
        freed = self.reclaimable.pop(instance_id, 0)
        self.history.append((instance_id, "docker system prune"))
        return Result(0, f"Total reclaimed space: {_human(freed)}\n")

    def _swarm_of(self, instance_id: str) -> Swarm | None:
        return next((s for s in self._swarms if instance_id in s.members), None)


def _human(size: int) -> str:
    """Docker's own rendering of a size (go-units HumanSize: decimal units, 4 significant digits)."""
    units = ["B", "kB", "MB", "GB", "TB"]
    value = float(size)
    unit = 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    return f"{value:.4g}{units[unit]}"
