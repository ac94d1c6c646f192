"""Pure decisions of the pipeline, as frozen dataclasses and plain functions tested by equality.

Nothing here calls AWS: the steps (chalicelib/steps/) gather the facts, ask these functions, and
carry out the answer. The scripts that carry it out on the nodes, and the parsers of what they
print, are in chalicelib/scripts.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from chalicelib.errors import InvalidInput

_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
TERMINAL_BAD_BUILD = {"FAILED", "FAULT", "STOPPED", "TIMED_OUT"}


IMAGE_FOLDERS = ("ansible", "packer")
# Where the stack file is when SLIPWAY_STACK_FILE does not say: Slipway's own name first, then the
# names docker compose looks for, in its order (compose-go cli/options.go DefaultFileNames).
STACK_FILE_NAMES = (
    "stack.yml",
    "stack.yaml",
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
)
REGULAR_FILE = 0o100644 << 16  # a zip entry's external attributes for a plain file, rw-r--r--


def validate_commit(commit: str) -> str:
    if not _COMMIT.match(commit or ""):
        raise InvalidInput(f"commit must be 7-40 lower-case hex characters, got {commit!r}")
    return commit


def image_source_of(trees: Mapping[str, str]) -> str:
    """Whose node image a commit deploys on: "commit" when it has packer/ and ansible/ (its own
    override), "installation" when it has neither (Slipway's, uploaded by `slipway bootstrap`);
    one without the other is refused, naming the one missing."""
    present = [folder for folder in IMAGE_FOLDERS if folder in trees]
    if len(present) == len(IMAGE_FOLDERS):
        return "commit"
    if not present:
        return "installation"
    missing = [folder for folder in IMAGE_FOLDERS if folder not in trees]
    raise InvalidInput(
        f"the commit has no {missing[0]}/ folder beside its {present[0]}/: a repository overrides Slipway's node "
        "image with both folders, or deploys on it with neither"
    )


def image_key(trees: Mapping[str, str]) -> str:
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
    data, names = _rezip(archive, lambda path: path.split("/", 1)[0] in IMAGE_FOLDERS)
    missing = [f for f in IMAGE_FOLDERS if not any(n.startswith(f + "/") for n in names)]
    if missing:
        raise InvalidInput(f"the commit's archive has no {' or '.join(f + '/' for f in missing)} files")
    return data


def repository_source(archive: BinaryIO) -> bytes:
    """The builds' source: every file of the commit's archive, at the root (the folder GitHub puts
    them under dropped), with fixed timestamps."""
    return _rezip(archive, lambda path: True)[0]


def _rezip(archive: BinaryIO, keep: Callable[[str], bool]) -> tuple[bytes, list[str]]:
    out = io.BytesIO()
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            parts = info.filename.split("/", 1)
            if len(parts) < 2 or info.is_dir() or not keep(parts[1]):
                continue
            copy = zipfile.ZipInfo(parts[1], (1980, 1, 1, 0, 0, 0))
            # git archive records a Unix mode for executables only; zipfile would write the rest
            # as 0600, which a build's COPY keeps (unreadable to a service's non-root user).
            copy.external_attr = info.external_attr if info.external_attr >> 16 else REGULAR_FILE
            dst.writestr(copy, src.read(info), zipfile.ZIP_DEFLATED)
        names = dst.namelist()
    return out.getvalue(), names


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


def heal_execution_name(commit: str, window: int) -> str:
    """A heal's execution name: the commit it deploys again and the window of the events that
    started it, so every event of one failure (and each repeat of one) names the same execution."""
    return f"heal-{commit[:12]}-{window}"


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


def images_to_remove(images: list[dict[str, Any]], in_use: set[str], keep: int) -> list[str]:
    """Image ids beyond the newest `keep`, except those a live node runs."""
    newest_first = sorted(images, key=lambda i: i.get("CreationDate", ""), reverse=True)
    return [i["ImageId"] for i in newest_first[keep:] if i["ImageId"] not in in_use]


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
    if (state.get("error") or {}).get("Error") == "StackInvalid":
        # Refused before anything changed: the file, the count and the first problem fit in 140 characters
        # better without the error's name (the execution, which the status links, has the whole list).
        return f"Not deployed to {environment}: {_reason(state.get('error')).removeprefix('StackInvalid: ')}"
    return f"Deploy to {environment} failed, the previous state stays: {_reason(state.get('error'))}"
