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

import re
import secrets
import shlex
from collections.abc import Callable

from chalicelib import scripts
from slipway.emulator.stacks import StackAnswers
from slipway.emulator.swarm import (
    NO_QUORUM,
    Image,
    Machine,
    Result,
    Service,
    Swarm,
    UnknownScript,
    human_size,
    needs_line,
)

__all__ = ["Image", "Machine", "Result", "Service", "Swarm", "UnknownScript", "EmulatedNodes"]

_JOIN = re.compile(r"docker swarm join --token (\S+)")
_JOIN_THROUGH = re.compile(r"^for manager in (.*); do$", re.MULTILINE)
_PROMOTE = re.compile(r"^(?:again )?docker node promote (.+)$", re.MULTILINE)
_RETIRE = re.compile(r"^retire (.+)$", re.MULTILINE)
_DEMOTE = re.compile(r"^demote_surplus (.+)$", re.MULTILINE)
_FORGET = re.compile(r"^forget (.+)$", re.MULTILINE)


class EmulatedNodes(StackAnswers):
    """Emulated swarm nodes: the swarm's scripts answered here, the stack's in StackAnswers."""

    def __init__(
        self,
        directory: Callable[[], dict[str, Machine]] | None = None,
        *,
        fetch: Callable[[str, str], bytes] | None = None,
        parameter: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__(directory, fetch=fetch, parameter=parameter)
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
        token = shlex.split(needs_line(_JOIN, script, "swarm-join", "docker swarm join --token <token>"))[0]
        managers = needs_line(_JOIN_THROUGH, script, "swarm-join", "for manager in <address:2377...>; do")
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

    def _promote(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        out: list[str] = []
        for host in shlex.split(needs_line(_PROMOTE, script, "promote", "docker node promote <hosts>")):
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
        return Result(0, f"Total reclaimed space: {human_size(freed)}\n")


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
