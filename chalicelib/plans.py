"""Pure decisions of the pipeline, as frozen dataclasses and plain functions tested by equality.

Nothing here calls AWS: the steps (chalicelib/steps/) gather the facts, asks these functions, and executes the answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shlex
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from chalicelib.errors import InvalidInput

_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_TOKEN_LINE = re.compile(r"^(manager|worker)_token=(SWMTKN-[A-Za-z0-9-]+)$", re.MULTILINE)
TERMINAL_BAD_BUILD = {"FAILED", "FAULT", "STOPPED", "TIMED_OUT"}


IMAGE_FOLDERS = ("ansible", "packer")


def validate_commit(commit: str) -> str:
    if not _COMMIT.match(commit or ""):
        raise InvalidInput(f"commit must be 7-40 lower-case hex characters, got {commit!r}")
    return commit


def image_key(trees: dict[str, str]) -> str:
    """The content address of a node image: a digest of the git tree ids of the folders that shape
    it. Two commits with the same ansible/ and packer/ have the same key, so the second never bakes."""
    missing = [folder for folder in IMAGE_FOLDERS if folder not in trees]
    if missing:
        raise InvalidInput(f"the commit has no {' or '.join(f + '/' for f in missing)} folder")
    identity = "\n".join(f"{folder} {trees[folder]}" for folder in IMAGE_FOLDERS)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def image_source(archive: BinaryIO) -> bytes:
    """The bake's source from a commit's archive as GitHub gives it (every file under one folder
    named after the commit): only the image folders, at the root where packer/buildspec.yml
    expects them, with fixed timestamps so the same content gives the same bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            parts = info.filename.split("/", 1)
            if len(parts) < 2 or info.is_dir() or parts[1].split("/", 1)[0] not in IMAGE_FOLDERS:
                continue
            copy = zipfile.ZipInfo(parts[1], (1980, 1, 1, 0, 0, 0))
            copy.external_attr = info.external_attr
            dst.writestr(copy, src.read(info), zipfile.ZIP_DEFLATED)
        names = dst.namelist()
    missing = [f for f in IMAGE_FOLDERS if not any(n.startswith(f + "/") for n in names)]
    if missing:
        raise InvalidInput(f"the commit's archive has no {' or '.join(f + '/' for f in missing)} files")
    return out.getvalue()


def source_key(image_key: str) -> str:
    return f"sources/{image_key}.zip"


@dataclass(frozen=True)
class NodePlan:
    launch: int
    current: tuple[str, ...]
    old: tuple[str, ...]


UP = ("pending", "running")


class NodeFacts(Protocol):
    """What the plans read of a node (chalicelib.aws.ec2.Node has it; plans import no adapter)."""

    @property
    def instance_id(self) -> str: ...
    @property
    def image_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def deployment(self) -> str: ...
    @property
    def swarm_role(self) -> str: ...


class CommandResult(Protocol):
    """What the plans read of one node's SSM command result (chalicelib.aws.ssm.Invocation)."""

    @property
    def instance_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def response_code(self) -> int: ...
    @property
    def output(self) -> str: ...


def plan_nodes(nodes: Sequence[NodeFacts], image_id: str, desired: int, deployment: str = "") -> NodePlan:
    """Keep up to `desired` nodes that are up, run the image and are in the swarm (or are this
    deployment's own, launched by an earlier attempt of its step), launch the shortfall, mark the
    rest for retirement: another image, stopped, more than `desired`, or launched by a run that
    ended before they joined (stopped from the console, timed out), which would fail the health
    gate for ever, or workers left of a swarm whose managers are all gone. Scaling down keeps
    managers before workers (a worker leaves without touching the Raft quorum), otherwise the
    earliest listed."""
    up = [
        n
        for n in nodes
        if n.image_id == image_id and n.state in UP and (n.swarm_role or (deployment and n.deployment == deployment))
    ]
    # Workers whose swarm has no manager running any more (every manager died) cannot serve nor
    # join another: they are replaced too (the new nodes start a swarm of their own).
    if not any(n.swarm_role == "manager" and n.state == "running" for n in nodes):
        up = [n for n in up if not n.swarm_role]
    keep = {n.instance_id for n in sorted(up, key=lambda n: n.swarm_role != "manager")[:desired]}
    current = tuple(n.instance_id for n in up if n.instance_id in keep)
    old = tuple(n.instance_id for n in nodes if n.instance_id not in keep)
    return NodePlan(launch=max(0, desired - len(current)), current=current, old=old)


def spread(launch: int, per_subnet: dict[str, int]) -> dict[str, int]:
    """How many of `launch` new nodes go to each subnet: always to the one with fewest nodes,
    ties to the first listed, so zones stay balanced."""
    counts = dict(per_subnet)
    placed = {subnet: 0 for subnet in per_subnet}
    for _ in range(launch):
        subnet = min(counts, key=lambda s: (counts[s], list(counts).index(s)))
        counts[subnet] += 1
        placed[subnet] += 1
    return {subnet: n for subnet, n in placed.items() if n}


@dataclass(frozen=True)
class SwarmStep:
    action: str  # "init", "join" or "none"
    targets: tuple[str, ...]
    managers: tuple[str, ...] = ()  # addresses to join through, tried in this order
    role: str = "manager"  # what the targets become


def managers_wanted(node_count: int) -> int:
    """Raft managers for a swarm of this size: an odd number, so a majority survives a loss
    (1 below three nodes, 3 up to nine, then 5); the other nodes are workers."""
    return 1 if node_count < 3 else 3 if node_count < 10 else 5


def plan_swarm(
    new: list[str],
    joined: list[str],
    new_managers: list[str],
    manager_addresses: list[str],
    tokens_known: bool,
    node_count: int,
    established: bool,
) -> SwarmStep:
    """Next swarm step for this deployment's new nodes.

    `manager_addresses` are private addresses of managers already in the swarm (nodes that were
    there before this deployment, then this deployment's own). `established` says whether such
    earlier managers exist. New nodes join an established swarm as workers only: should the
    deployment fail, removing them cannot cost the swarm its Raft quorum; the health gate passed,
    `plan_promotion` makes managers of them. In a swarm this deployment initialised, they join as
    managers until there are enough, then as workers. With no token or no manager, the first
    pending node initialises a new swarm and the rest join on the next rounds.
    """
    pending = tuple(n for n in new if n not in joined)
    if not pending:
        return SwarmStep("none", ())
    if not (tokens_known and manager_addresses):
        return SwarmStep("init", pending[:1])
    need = 0 if established else managers_wanted(node_count) - len(new_managers)
    if need > 0:
        return SwarmStep("join", pending[:need], tuple(manager_addresses), "manager")
    return SwarmStep("join", pending, tuple(manager_addresses), "worker")


def plan_promotion(current: list[str], roles: dict[str, str], node_count: int, retiring: int = 0) -> tuple[str, ...]:
    """Which of the nodes that stay (`current`, new ones first) to promote so that, once the old
    nodes are gone, the swarm has `managers_wanted` managers. `roles` maps id to swarm role;
    `retiring` counts the managers the retire command will demote.

    While old managers leave, at least two managers stay: each demotion then shrinks a Raft
    membership of three or more, whose remaining members elect a leader by the old membership's
    majority. Demoting the leader of a two-member membership can leave the other member waiting
    for a commit it never hears of, with no leader for good (Docker: "The swarm does not have a
    leader"); a retire through a single new manager did so under load. The extra manager is
    demoted after the retirements (`surplus_managers`), never the leader."""
    wanted = managers_wanted(node_count)
    if retiring:
        wanted = max(wanted, min(2, len(current)))
    need = wanted - sum(1 for i in current if roles.get(i) == "manager")
    return tuple(i for i in current if roles.get(i) != "manager")[: max(0, need)]


# --- the scripts sent to the nodes -------------------------------------------------------------
# Every script's first line is the marker of its kind: a shell comment, so a node runs it as a
# no-op, and what the emulated nodes (slipway/nodes.py) dispatch on, never the script's wording.
# (The teardown's leave is a retire script.) The prune's EventBridge rule in app.py matches its
# `docker system prune` line by prefix: EventBridge tries a pattern on each element of an array.
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
    again after a lost answer) is waited for, not repeated (Docker would refuse it)."""
    addresses = " ".join(shlex.quote(a + ":2377") for a in manager_addresses)
    return [
        MARKERS["swarm-join"],
        "set -eu",
        f"state=$({_STATE})",
        f'n=0; while [ "$state" = pending ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); state=$({_STATE}); done',
        'if [ "$state" = active ]; then exit 0; fi',
        f"for manager in {addresses}; do",
        f'  if docker swarm join --token {shlex.quote(token)} "$manager"; then exit 0; fi',
        "  docker swarm leave --force >/dev/null 2>&1 || true",
        "done",
        "exit 1",
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


def heal_execution_name(commit: str, window: int) -> str:
    """A heal's execution name: the commit it deploys again and the window of the events that
    started it, so every event of one failure (and each repeat of one) names the same execution."""
    return f"heal-{commit[:12]}-{window}"


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


def surplus_managers(managers: list[str], node_count: int, through: str) -> tuple[int, tuple[str, ...]]:
    """How many managers among the nodes that stay are beyond what a swarm of `node_count` wants
    (scaling down from three nodes to two leaves two managers, where one would do and two double
    the chance of losing the quorum; so does `plan_promotion`'s extra manager), and the managers
    the retire script may demote, in the order it tries them: the last listed first, `through`,
    the manager the command runs on, last. The script passes over the leader."""
    surplus = max(0, len(managers) - managers_wanted(node_count))
    if not surplus:
        return 0, ()
    return surplus, tuple(m for m in reversed(managers) if m != through) + ((through,) if through in managers else ())


_DEMOTED = re.compile(r"^demoted (\S+)$", re.MULTILINE)


def demoted(output: str) -> set[str]:
    """Host names the retire script's output reports demoted (now workers)."""
    return set(_DEMOTED.findall(output))


_LEFT = re.compile(r"^(?:retired (\S+)|(\S+): not in the swarm)$", re.MULTILINE)


def left_swarm(output: str) -> set[str]:
    """Host names the retire script's output reports out of the swarm (safe to terminate)."""
    return {a or b for a, b in _LEFT.findall(output)}


def images_to_remove(images: list[dict[str, Any]], in_use: set[str], keep: int) -> list[str]:
    """Image ids beyond the newest `keep`, except those a live node runs."""
    newest_first = sorted(images, key=lambda i: i.get("CreationDate", ""), reverse=True)
    return [i["ImageId"] for i in newest_first[keep:] if i["ImageId"] not in in_use]


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


def next_wait(checks: int, first: int, cap: int) -> int:
    """The wait before poll number `checks` + 1: `first` seconds, doubling, never above `cap`."""
    if cap <= 0:
        return 0
    return min(cap, max(1, first) << min(checks, 16))


def bake_status(status: str, ami_id: str | None) -> str:
    """IN_PROGRESS, SUCCEEDED, or the reason a bake failed."""
    if status == "SUCCEEDED":
        return "SUCCEEDED" if ami_id else "the build succeeded but exported no AMI_ID"
    if status in TERMINAL_BAD_BUILD:
        return f"the build ended {status}"
    return "IN_PROGRESS"


def runs_ahead(me: tuple[datetime, str], running: list[tuple[datetime, str]]) -> list[str]:
    """The executions that go before `me`: runs of the environment's deploy and teardown state
    machines hold the environment one at a time, in the order they started (ties by ARN, so two
    runs never wait for each other). Returns their ARNs, the earliest first."""
    return [arn for start, arn in sorted(running) if (start, arn) < me]


def newer_deploys(me: tuple[datetime, str], deploys: list[tuple[datetime, str]]) -> list[str]:
    """Deploys that started after `me`, the newest first: any of them that gets under way makes a
    queued `me` pointless, since it would replace whatever `me` deployed as soon as `me` ended.
    (Only asked of a run still queued: one already deploying is never cut short.)"""
    return [arn for _, arn in sorted((run for run in deploys if run > me), reverse=True)]


def status_state(outcome: str) -> str:
    """The commit status state GitHub takes for an outcome: GitHub knows only pending, success,
    failure and error, so a run skipped for a newer one, or stopped before it ended, is an
    `error` ("not deployed")."""
    return "error" if outcome in ("superseded", "stopped") else outcome


def _reason(error: object) -> str:
    """`Error: message` from a state's caught error (a Lambda's Cause is a JSON object)."""
    if not isinstance(error, dict):
        return "unknown error"
    cause = str(error.get("Cause") or "")
    with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object: as it is
        cause = str(json.loads(cause).get("errorMessage", cause))
    name = str(error.get("Error") or "Error")
    first = cause.strip().splitlines()[0] if cause.strip() else ""
    return f"{name}: {first}" if first else name


def status_description(outcome: str, environment: str, state: Mapping[str, Any]) -> str:
    """What the commit status says, from the execution's state at its end."""
    if outcome == "pending":
        return f"Deploying to {environment}"
    if outcome == "stopped":
        how = "timed out" if state.get("status") == "TIMED_OUT" else "stopped"
        return f"Deploy to {environment} {how} before it ended: not deployed; the next deployment cleans up after it"
    if outcome == "superseded":
        newer = (state.get("queue") or {}).get("superseded_by") or {}
        commit = str(newer.get("commit") or "")[:7] or "a newer run"
        return f"Not deployed to {environment}: skipped for {commit}, started after it"
    if outcome == "success":
        nodes = len((state.get("nodes") or {}).get("current") or [])
        image = (state.get("image") or {}).get("ami_id") or "?"
        url = (state.get("ingress") or {}).get("url")
        # With a load balancer, its address says more than the image id (and both do not fit in 140).
        where = (
            f" at {url}: {nodes} node{'s' if nodes != 1 else ''}"
            if url
            else f": {nodes} node{'s' if nodes != 1 else ''} on {image}"
        )
        deployed = f"Deployed to {environment}{where}"
        stack = state.get("stack") or {}
        if not stack.get("present"):
            return f"{deployed}; no stack file ({stack.get('path') or 'stack.yml'}): nodes only"
        services = (state.get("rollout") or {}).get("services") or []
        updated = sum(1 for s in services if s.get("updated"))
        return f"{deployed}; {len(services)} service{'s' if len(services) != 1 else ''}, {updated} updated"
    if outcome == "error":
        if (state.get("error") or {}).get("Error") == "IngressFailed":
            return (
                f"Deployed to {environment}, but the load balancer does not serve the new nodes; the previous "
                f"ones stay registered ({_reason(state.get('error'))})"
            )
        return f"Deployed to {environment}; removing what it replaced failed ({_reason(state.get('error'))})"
    if state.get("undo_error"):
        return (
            f"Deploy to {environment} failed ({_reason(state.get('error'))}) and so did its undo "
            f"({_reason(state.get('undo_error'))}): see the execution"
        )
    return f"Deploy to {environment} failed, the previous state stays: {_reason(state.get('error'))}"
