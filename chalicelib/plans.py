"""Pure decisions of the pipeline, as frozen dataclasses and plain functions tested by equality.

Nothing here calls AWS: steps.py gathers the facts, asks these functions, and executes the answer.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass

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


@dataclass(frozen=True)
class NodePlan:
    launch: int
    current: tuple[str, ...]
    old: tuple[str, ...]


def plan_nodes(nodes, image_id: str, desired: int) -> NodePlan:
    """Keep nodes already running the image, launch the shortfall, mark the rest for retirement."""
    current = tuple(n.instance_id for n in nodes if n.image_id == image_id)
    old = tuple(n.instance_id for n in nodes if n.image_id != image_id)
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
    manager_address: str | None = None
    role: str = "manager"  # what the targets become


def managers_wanted(node_count: int) -> int:
    """Raft managers for a swarm of this size: an odd number, so a majority survives a loss
    (1 below three nodes, 3 up to nine, then 5); the other nodes are workers."""
    return 1 if node_count < 3 else 3 if node_count < 10 else 5


def plan_swarm(new: list[str], joined: list[str], new_managers: list[str],
               manager_addresses: list[str], tokens_known: bool, node_count: int) -> SwarmStep:
    """Next swarm step for this deployment's new nodes.

    `manager_addresses` are private addresses of managers already in the swarm (the previous
    image's, then this deployment's). With stored tokens and a manager, pending nodes join: as
    managers until this image's nodes have enough of them, then as workers. With neither, the
    first pending node initialises a new swarm and the rest join on the next rounds.
    """
    pending = tuple(n for n in new if n not in joined)
    if not pending:
        return SwarmStep("none", ())
    if not (tokens_known and manager_addresses):
        return SwarmStep("init", pending[:1])
    need = managers_wanted(node_count) - len(new_managers)
    if need > 0:
        return SwarmStep("join", pending[:need], manager_addresses[0], "manager")
    return SwarmStep("join", pending, manager_addresses[0], "worker")


def init_script() -> list[str]:
    return [
        "set -eu",
        "state=$(docker info --format '{{.Swarm.LocalNodeState}}')",
        'if [ "$state" != active ]; then docker swarm init --advertise-addr "$(hostname -I | cut -d" " -f1)" >/dev/null; fi',
        'echo "manager_token=$(docker swarm join-token -q manager)"',
        'echo "worker_token=$(docker swarm join-token -q worker)"',
    ]


def join_script(token: str, manager_address: str) -> list[str]:
    return [
        "set -eu",
        "state=$(docker info --format '{{.Swarm.LocalNodeState}}')",
        f'if [ "$state" != active ]; then docker swarm join --token {shlex.quote(token)} '
        f"{shlex.quote(manager_address + ':2377')}; fi",
    ]


def parse_tokens(output: str) -> dict[str, str]:
    """{"manager": token, "worker": token} from the init script's output (whatever it found)."""
    return dict(_TOKEN_LINE.findall(output))


HEALTH_SCRIPT = ["docker info --format '{{.Swarm.LocalNodeState}}'"]


def health_verdict(invocations) -> dict[str, str]:
    """Map of instance id to the reason it is unhealthy; empty when every node passed."""
    problems = {}
    for inv in invocations:
        state = inv.output.strip()
        if inv.status != "Success":
            problems[inv.instance_id] = f"health command {inv.status} (exit {inv.response_code})"
        elif state != "active":
            problems[inv.instance_id] = f"swarm state is {state or 'empty'!r}, expected 'active'"
    return problems


def retire_script(hostnames: list[str]) -> list[str]:
    """Run on a healthy new manager: drain old nodes (their tasks move to the new ones), demote
    them so the managers keep their quorum, then remove them, before they are terminated."""
    lines = ["set -u"]
    for host in hostnames:
        quoted = shlex.quote(host)
        lines.append(f"docker node update --availability drain {quoted} || true")
        lines.append(f"docker node demote {quoted} || true")
        lines.append(f"docker node rm --force {quoted} || true")
    return lines


def images_to_remove(images: list[dict], in_use: set[str], keep: int) -> list[str]:
    """Image ids beyond the newest `keep`, except those a live node runs."""
    newest_first = sorted(images, key=lambda i: i.get("CreationDate", ""), reverse=True)
    return [i["ImageId"] for i in newest_first[keep:] if i["ImageId"] not in in_use]


def prune_script(filter_expression: str, volumes: bool = False) -> list[str]:
    """Safe on a serving node: only stopped containers, unused networks, dangling images and build
    cache older than the filter. No --all: an image a stopped service task needs stays."""
    extra = " --volumes" if volumes else ""
    return [f"docker system prune --force{extra} --filter {shlex.quote(filter_expression)}"]


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


def prune_results(invocations) -> list[NodePrune]:
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


def bake_status(status: str, ami_id: str | None) -> str:
    """IN_PROGRESS, SUCCEEDED, or the reason a bake failed."""
    if status == "SUCCEEDED":
        return "SUCCEEDED" if ami_id else "the build succeeded but exported no AMI_ID"
    if status in TERMINAL_BAD_BUILD or status == "NOT_FOUND":
        return f"the build ended {status}"
    return "IN_PROGRESS"
