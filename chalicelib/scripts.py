"""The shell scripts Slipway sends to its nodes through SSM Run Command, and the parsers of what
they print.

Every script's first line is the marker of its kind: a shell comment, so a node runs it as a
no-op, and what the emulated nodes (slipway/emulator/nodes.py) dispatch on, never the script's wording.
(The teardown's leave is a retire script.) The prune's EventBridge rule in app.py matches its
`docker system prune` line by prefix: EventBridge tries a pattern on each element of an array.
The stack scripts live beside the rollout decisions (chalicelib/rollout.py)
and carry markers from here. What to run, where and when is decided in chalicelib/plans.py.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

_TOKEN_LINE = re.compile(r"^(manager|worker)_token=(SWMTKN-[A-Za-z0-9-]+)$", re.MULTILINE)


class CommandResult(Protocol):
    """What the parsers read of one node's SSM command result (chalicelib.aws.ssm.Invocation)."""

    @property
    def instance_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def response_code(self) -> int: ...
    @property
    def output(self) -> str: ...


MARKER_PREFIX = "# slipway:"
MARKERS: dict[str, str] = {
    kind: MARKER_PREFIX + kind
    for kind in (
        "swarm-init",
        "swarm-join",
        "health",
        "node-list",
        "promote",
        "retire",
        "prune",
        "stack-inspect",
        "stack-deploy",
        "stack-status",
    )
}


def command_kind(commands: list[str]) -> str | None:
    """The kind (a key of MARKERS) the marker on a script's first line names; None when the
    first line is no known marker."""
    first = commands[0].split("\n", 1)[0].strip() if commands else ""
    kind = first.removeprefix(MARKER_PREFIX)
    return kind if first.startswith(MARKER_PREFIX) and kind in MARKERS else None


def init_script() -> list[str]:
    return [
        MARKERS["swarm-init"],
        "set -eu",
        "state=$(docker info --format '{{.Swarm.LocalNodeState}}')",
        'if [ "$state" != active ]; then '
        'docker swarm init --advertise-addr "$(hostname -I | cut -d" " -f1)" >/dev/null; fi',
        'echo "manager_token=$(docker swarm join-token -q manager)"',
        'echo "worker_token=$(docker swarm join-token -q worker)"',
    ]


_STATE = "docker info --format '{{.Swarm.LocalNodeState}}'"


def join_script(token: str, *manager_addresses: str) -> list[str]:
    """Join unless already in the swarm, through each manager in turn until one answers (a manager
    that is down must not block the deployment that replaces it; a failed attempt is cancelled
    with `swarm leave` before the next). A join still in progress ("pending": the same command sent
    again after a lost answer) is waited for, not repeated (Docker would refuse it). While the
    managers elect a leader (one of them just went down: "does not have a leader", "lost leader"),
    every manager refuses a join: the round is tried again, 2 s later, up to 30 rounds; any other
    refusal by every manager fails the command at once."""
    addresses = " ".join(shlex.quote(a + ":2377") for a in manager_addresses)
    return [
        MARKERS["swarm-join"],
        "set -eu",
        f"state=$({_STATE})",
        f'n=0; while [ "$state" = pending ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); state=$({_STATE}); done',
        'if [ "$state" = active ]; then exit 0; fi',
        "rounds=0",
        "while :; do",
        "election=no",
        f"for manager in {addresses}; do",
        f'  if out=$(docker swarm join --token {shlex.quote(token)} "$manager" 2>&1); then',
        "    printf '%s\\n' \"$out\"; exit 0",
        "  fi",
        "  printf '%s\\n' \"$out\" >&2",
        "  docker swarm leave --force >/dev/null 2>&1 || true",
        '  case "$out" in *"does not have a leader"*|*"lost leader"*) election=yes ;; esac',
        "done",
        "rounds=$((rounds+1))",
        'if [ "$election" = no ] || [ $rounds -ge 30 ]; then exit 1; fi',
        'sleep "${SWARM_RETRY_SECONDS:-2}"',
        "done",
    ]


def parse_tokens(output: str) -> dict[str, str]:
    """{"manager": token, "worker": token} from the init script's output (whatever it found)."""
    return dict(_TOKEN_LINE.findall(output))


HEALTH_SCRIPT = [MARKERS["health"], _STATE]


def health_verdict(invocations: Iterable[CommandResult]) -> dict[str, str]:
    """Map of instance id to the reason it is unhealthy; empty when every node passed."""
    problems: dict[str, str] = {}
    for inv in invocations:
        state = inv.output.strip()
        if inv.status != "Success":
            problems[inv.instance_id] = f"health command {inv.status} (exit {inv.response_code})"
        elif state != "active":
            problems[inv.instance_id] = f"swarm state is {state or 'empty'!r}, expected 'active'"
    return problems


# A swarm command, retried while the managers elect a leader ("node lost leader status", "does not
# have a leader": a moment after a leader is demoted; on a loaded host that took more than 30 s, so
# up to 45 tries, 2 s apart); "No such node" is final (exit 3).
AGAIN = [
    "again() {",
    "  n=0",
    '  until out=$("$@" 2>&1); do',
    '    case "$out" in *"No such node"*) echo "$out" >&2; return 3 ;; esac',
    '    n=$((n+1)); if [ $n -ge 45 ]; then echo "$out" >&2; return 1; fi',
    '    sleep "${SWARM_RETRY_SECONDS:-2}"',
    "  done",
    "  printf '%s\\n' \"$out\"",
    "}",
]


def promote_script(hostnames: list[str]) -> list[str]:
    """Run on a manager: make managers of nodes that passed the health gate."""
    return [
        MARKERS["promote"],
        "set -eu",
        *AGAIN,
        "again docker node promote " + " ".join(shlex.quote(h) for h in hostnames),
    ]


NODE_LIST_SCRIPT = [MARKERS["node-list"], "docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}'"]


def swarm_view_verdict(invocation: CommandResult, hostnames: dict[str, str]) -> dict[str, str]:
    """Map of instance id to why the manager's `docker node ls` (NODE_LIST_SCRIPT) says the node
    cannot take work: not listed, or not Ready and Active. `hostnames` maps id to host name."""
    if invocation.status != "Success":
        why = (
            f"the manager {invocation.instance_id} could not list the swarm: {invocation.status}"
            f" (exit {invocation.response_code})"
        )
        return dict.fromkeys(hostnames, why)
    listed: dict[str, list[str]] = {}
    for line in invocation.output.splitlines():
        parts = line.split()
        if len(parts) == 3:
            listed.setdefault(parts[0], []).append(f"{parts[1]}/{parts[2]}")
    problems = {}
    for instance_id, host in hostnames.items():
        seen = listed.get(host, [])
        if not seen:
            problems[instance_id] = f"the swarm does not list {host}"
        elif "Ready/Active" not in seen:
            problems[instance_id] = f"the swarm lists {host} as {', '.join(seen)}, expected Ready/Active"
    return problems


def gone_members(invocation: CommandResult, keep: Iterable[str], live: Iterable[str]) -> list[str]:
    """What the retire command forgets (`retire_script`'s `forget`): members whose instance is gone.
    From the manager's `docker node ls` (NODE_LIST_SCRIPT): a host name no live instance has
    (`live`: terminated between pushes; Swarm may still list it Ready for a few heartbeats), as
    "<host>" (every entry of it goes); and a host listed Down that the run does not keep, or Down
    beside a Ready entry of the same name (a new instance took the dead one's address), as
    "<host> down" (only its entries not Ready go). Nodes the run keeps or retires are handled by
    name elsewhere."""
    if invocation.status != "Success":
        return []
    states: dict[str, set[str]] = {}
    for line in invocation.output.splitlines():
        parts = line.split()
        if len(parts) == 3:
            states.setdefault(parts[0], set()).add(parts[1])
    kept, alive = set(keep), set(live)
    gone = [host for host in states if host not in alive]
    gone += [
        f"{host} down"
        for host, seen in states.items()
        if host in alive and "Down" in seen and (host not in kept or "Ready" in seen)
    ]
    return sorted(gone)


def retire_script(
    hostnames: Sequence[str], demote: Sequence[str] = (), forget: Sequence[str] = (), surplus: int | None = None
) -> list[str]:
    """Run on a manager that stays: drain each node (its tasks move elsewhere), demote it if it is
    a manager (one at a time, so the managers keep their quorum), then remove it, before it is
    terminated. Only a node the swarm does not know ("No such node") is skipped; a leader election
    (after a leader is demoted) is waited out; any other failure fails the command. Each node done is printed
    ("retired <host>" or "<host>: not in the swarm"), so a command that fails half-way says which
    nodes may be terminated all the same (`left_swarm`). Then `surplus` (default: all) of the
    managers in `demote`, nodes that stay, become workers ("demoted <host>"), tried in order and
    never the leader: a smaller swarm wants fewer managers, and a leader demoted from a membership
    of two can leave the other manager without one (`plan_promotion`). First, the
    members in `forget` (their instances are gone: `gone_members`; "<host>" for every entry of the
    name, "<host> down" for those not Ready) are demoted if they were managers and removed, by node
    id ("forgot <host>"), so the member list is the live nodes again and the lost managers' places
    can be taken."""
    return (
        [
            MARKERS["retire"],
            "set -eu",
            *AGAIN,
            "retire() {",
            "  set +e; role=$(again docker node inspect --format '{{.Spec.Role}}' \"$1\"); rc=$?; set -e",
            '  if [ $rc = 3 ]; then echo "$1: not in the swarm"; return 0; fi',
            "  if [ $rc != 0 ]; then return 1; fi",
            '  again docker node update --availability drain "$1" >/dev/null',
            '  if [ "$role" = manager ]; then again docker node demote "$1"; fi',
            '  again docker node rm --force "$1" >/dev/null',
            '  echo "retired $1"',
            "}",
            "demote_surplus() {",
            "  left=$1; shift",
            '  for host in "$@"; do',
            '    [ "$left" -gt 0 ] || return 0',
            "    leader=$(again docker node inspect --format '{{.ManagerStatus.Leader}}' \"$host\")",
            '    [ "$leader" != true ] || continue',
            '    again docker node demote "$host" >/dev/null',
            '    echo "demoted $host"',
            "    left=$((left-1))",
            "  done",
            "}",
        ]
        + (
            [
                "forget() {",
                "  again docker node ls --format '{{.ID}} {{.Hostname}} {{.Status}} {{.ManagerStatus}}' |",
                "  while read -r id host status manager; do",
                '    [ "$host" = "$1" ] || continue',
                '    if [ "${2:-}" = down ] && [ "$status" = Ready ]; then continue; fi',
                '    if [ -n "$manager" ]; then again docker node demote "$id" >/dev/null; fi',
                '    again docker node rm --force "$id" >/dev/null',
                '    echo "forgot $1"',
                "  done",
                "}",
            ]
            + [f"forget {' '.join(shlex.quote(part) for part in entry.split())}" for entry in forget]
            if forget
            else []
        )
        + [f"retire {shlex.quote(host)}" for host in hostnames]
        + (
            [f"demote_surplus {len(demote) if surplus is None else surplus} {' '.join(map(shlex.quote, demote))}"]
            if demote
            else []
        )
    )


_DEMOTED = re.compile(r"^demoted (\S+)$", re.MULTILINE)


def demoted(output: str) -> set[str]:
    """Host names the retire script's output reports demoted (now workers)."""
    return set(_DEMOTED.findall(output))


_LEFT = re.compile(r"^(?:retired (\S+)|(\S+): not in the swarm)$", re.MULTILINE)


def left_swarm(output: str) -> set[str]:
    """Host names the retire script's output reports out of the swarm (safe to terminate)."""
    return {a or b for a, b in _LEFT.findall(output)}


def prune_script(filter_expression: str, volumes: bool = False) -> list[str]:
    """Safe on a serving node: only stopped containers, unused networks, dangling images and build
    cache older than the filter. No --all: an image a stopped service task needs stays."""
    extra = " --volumes" if volumes else ""
    return [MARKERS["prune"], f"docker system prune --force{extra} --filter {shlex.quote(filter_expression)}"]


_RECLAIMED = re.compile(r"Total reclaimed space:\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGTP]?B)\b")
# Docker prints sizes with go-units' HumanSize: decimal (SI) units, "kB" lower-case.
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}


def reclaimed_bytes(output: str) -> int | None:
    """Bytes from Docker's "Total reclaimed space: 503.7kB" line; None if the line is missing."""
    matches = _RECLAIMED.findall(output)
    if not matches:
        return None
    number, unit = matches[-1]
    return round(float(number) * _UNITS[unit.upper()])


@dataclass(frozen=True)
class NodePrune:
    instance_id: str
    status: str
    reclaimed_bytes: int | None
    error: str | None


def prune_results(invocations: Iterable[CommandResult]) -> list[NodePrune]:
    results = []
    for inv in invocations:
        ok = inv.status == "Success"
        reclaimed = reclaimed_bytes(inv.output) if ok else None
        error = None
        if not ok:
            error = f"{inv.status} (exit {inv.response_code}): {inv.output.strip()[-500:]}"
        elif reclaimed is None:
            error = "no 'Total reclaimed space' line in the output"
        results.append(NodePrune(inv.instance_id, inv.status, reclaimed, error))
    return results
