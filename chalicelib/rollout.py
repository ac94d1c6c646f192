"""Pure decisions of the stack rollout: the scripts a manager runs, what their output says, which
services a push changes, and whether the swarm has converged on them.

The rollout is three commands on one manager, each sent by a step and read by the next:

1. `inspect_script`: label the nodes with their image, list the stack's services as they run
   (with the `slipway.spec` label each carries), and pull every image the stack names, printing
   the digest the registry has for it now.
2. `deploy_script`, only when something changed: fetch the file to deploy (only the changed
   services, images pinned to those digests) from the bake bucket with the node's role, create
   the secrets it names from SSM, `docker stack deploy` it, remove the services the file dropped.
3. `status_script`, until `verdict` says converged or failed: every service and its recent tasks.

Why Slipway decides what changed instead of `docker stack deploy --resolve-image always` on the
whole file: stack deploy sends a ServiceUpdate for every service it lists, changed or not, which
moves each one's UpdatedAt and overwrites its PreviousSpec (what `docker service rollback` goes
back to). A service whose definition and image digest are the same as the running one's is not
in the file Slipway deploys at all, so nothing about it changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib import scripts

SPEC_LABEL = "slipway.spec"  # on each service: the identity of the definition it was deployed from
IMAGE_LABEL = "slipway.image"  # on each node: the key of the node image it runs
# How much of a command's output GetCommandInvocation returns (StandardOutputContent).
OUTPUT_LIMIT = 24000
TASKS_PER_SERVICE = 8  # recent tasks listed per service: enough to name the latest error

_SERVICE_FORMAT = (
    "service "
    '{"name":{{json .Spec.Name}},'
    '"spec":{{json (index .Spec.Labels "' + SPEC_LABEL + '")}},'
    '"image":{{json .Spec.TaskTemplate.ContainerSpec.Image}},'
    '"updated_at":{{json .UpdatedAt}},'
    '"update":{{json .UpdateStatus}},'
    '"mode":{{json .Spec.Mode}}}'
)
_TASK_FORMAT = (
    "task "
    '{"name":{{json .Name}},"image":{{json .Image}},"desired":{{json .DesiredState}},'
    '"current":{{json .CurrentState}},"error":{{json .Error}}}'
)


def _list_services(stack: str, *, tasks: bool) -> list[str]:
    lines = [
        f"for id in $(docker service ls -q --filter label=com.docker.stack.namespace={shlex.quote(stack)}); do",
        f'  docker service inspect --format {shlex.quote(_SERVICE_FORMAT)} "$id"',
    ]
    if tasks:
        lines.append(
            f'  docker service ps --no-trunc --format {shlex.quote(_TASK_FORMAT)} "$id" | head -n {TASKS_PER_SERVICE}'
        )
    return [*lines, "done"]


def inspect_script(stack: str, images: Sequence[str], labels: Mapping[str, str]) -> list[str]:
    """Run on a manager: label each node (host name -> image key), list the stack's services,
    and pull each image, printing `image <name> <RepoDigests as JSON>` or `pull-failed <name>
    <docker's message>`. Changes nothing a service runs."""
    return [
        scripts.MARKERS["stack-inspect"],
        "set -eu",
        *(
            f"docker node update --label-add {shlex.quote(f'{IMAGE_LABEL}={key}')} {shlex.quote(host)} >/dev/null"
            for host, key in sorted(labels.items())
        ),
        *_list_services(stack, tasks=True),
        f"for image in {' '.join(shlex.quote(i) for i in images)}; do" if images else "for image in; do",
        '  if err=$(docker pull --quiet "$image" 2>&1 >/dev/null); then',
        '    printf \'image %s %s\\n\' "$image" "$(docker image inspect --format \'{{json .RepoDigests}}\' "$image")"',
        "  else",
        "    printf 'pull-failed %s %s\\n' \"$image\" \"$(printf '%s' \"$err\" | tr '\\n' ' ')\"",
        "  fi",
        "done",
    ]


def deploy_script(
    stack: str,
    bucket: str,
    key: str,
    secrets: Mapping[str, str],
    removed: Sequence[str],
    config_files: Sequence[str] = (),
) -> list[str]:
    """Run on a manager: fetch the file to deploy and the configs read from the commit
    (`config_files`, keys of the bucket the file names relative to itself) from S3 and each secret
    from SSM with the node's own role (`slipway-node`, installed by the swarm_node role), so neither
    the file nor a secret's value is ever in the command; then deploy (docker stack deploy creates
    each config from its file under its content's name), and remove the services the stack
    dropped, and the stack's configs no service uses. `secrets` maps each swarm secret's name to its
    SSM parameter."""
    folders = sorted({posixpath.dirname(f) for f in config_files if posixpath.dirname(f)})
    return [
        scripts.MARKERS["stack-deploy"],
        "set -eu",
        "work=$(mktemp -d); trap 'rm -rf \"$work\"' EXIT",
        f'slipway-node fetch {shlex.quote(bucket)} {shlex.quote(key)} "$work/stack.yml"',
        *(f'mkdir -p "$work/"{shlex.quote(folder)}' for folder in folders),
        *(f'slipway-node fetch {shlex.quote(bucket)} {shlex.quote(f)} "$work/"{shlex.quote(f)}' for f in config_files),
        *(f"slipway-node secret {shlex.quote(name)} {shlex.quote(secrets[name])}" for name in sorted(secrets)),
        # --detach=true where the flag exists (Docker 26 and later): never wait in the command.
        "detach=; if docker stack deploy --help 2>/dev/null | grep -q -- --detach; then detach=--detach=true; fi",
        "docker stack deploy $detach --resolve-image never --with-registry-auth "
        f'--compose-file "$work/stack.yml" {shlex.quote(stack)}',
        *(f"docker service rm {shlex.quote(f'{stack}_{name}')} >/dev/null" for name in removed),
        # The stack's configs no service uses any more (an earlier content of a changed file): Swarm
        # refuses to remove one a task still uses, so this removes only the unused ones.
        f"docker config ls --quiet --filter label=com.docker.stack.namespace={shlex.quote(stack)} "
        "| xargs -r docker config rm >/dev/null 2>&1 || true",
    ]


def status_script(stack: str) -> list[str]:
    return [scripts.MARKERS["stack-status"], "set -eu", *_list_services(stack, tasks=True)]


# --- what the output says ---------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    image: str
    desired: str
    current: str
    error: str


@dataclass(frozen=True)
class RunningService:
    name: str  # without the stack's prefix
    spec: str  # its SPEC_LABEL, "" if it has none
    image: str
    updated_at: str
    update_state: str  # "" when never updated
    update_message: str
    replicas: int | None  # None for a global service
    tasks: tuple[Task, ...] = ()


@dataclass(frozen=True)
class Inspection:
    services: dict[str, RunningService]
    digests: dict[str, str]  # image as the stack names it -> name@sha256:...
    pull_errors: dict[str, str] = field(default_factory=dict)


def _json_line(line: str) -> dict[str, Any]:
    value = json.loads(line.split(" ", 1)[1])
    if not isinstance(value, dict):
        raise ValueError(f"not an object: {line[:200]!r}")
    return value


def parse_services(output: str, stack: str) -> dict[str, RunningService]:
    """The services (and their tasks, when listed) from `service`/`task` lines."""
    services: dict[str, RunningService] = {}
    current: dict[str, Any] | None = None
    tasks: list[Task] = []

    def close() -> None:
        if current is not None:
            update = current.get("update") or {}
            mode = current.get("mode") or {}
            replicated = mode.get("Replicated")
            name = str(current["name"]).removeprefix(f"{stack}_")
            services[name] = RunningService(
                name=name,
                spec=str(current.get("spec") or ""),
                image=str(current.get("image") or ""),
                updated_at=str(current.get("updated_at") or ""),
                update_state=str(update.get("State") or ""),
                update_message=str(update.get("Message") or ""),
                replicas=int(replicated.get("Replicas", 1)) if isinstance(replicated, dict) else None,
                tasks=tuple(tasks),
            )

    for line in output.splitlines():
        if line.startswith("service "):
            close()
            current, tasks = _json_line(line), []
        elif line.startswith("task ") and current is not None:
            task = _json_line(line)
            tasks.append(Task(**{k: str(task.get(k) or "") for k in ("name", "image", "desired", "current", "error")}))
    close()
    return services


def _repository(image: str) -> str:
    """`registry:5000/team/web:1` -> `registry:5000/team/web` (a tag's colon follows the last slash)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _docker_hub_short(repository: str) -> str:
    """How `docker image inspect` writes a Docker Hub repository in RepoDigests (`nginx`, not
    `docker.io/library/nginx`)."""
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/"):
        if repository.startswith(prefix):
            return repository.removeprefix(prefix)
    return repository.removeprefix("library/")


def parse_inspection(output: str, stack: str) -> Inspection:
    digests: dict[str, str] = {}
    errors: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("image "):
            _, image, found = line.split(" ", 2)
            repository = _docker_hub_short(_repository(image))
            repo_digests = json.loads(found) or []
            match = [d for d in repo_digests if _docker_hub_short(d.split("@", 1)[0]) == repository]
            if match:
                digests[image] = str(match[0]).split("@", 1)[1]
            else:
                errors[image] = f"the registry gave no digest for it (RepoDigests {repo_digests})"
        elif line.startswith("pull-failed "):
            parts = line.split(" ", 2)
            errors[parts[1]] = parts[2].strip() if len(parts) > 2 else "docker pull failed"
    return Inspection(parse_services(output, stack), digests, errors)


# --- which services change ----------------------------------------------------------------------


def references(service: Mapping[str, Any], kind: str) -> set[str]:
    """The top-level secrets or configs (`kind`) a service refers to (short syntax: the key; long: its source)."""
    return {str(r.get("source") if isinstance(r, dict) else r) for r in service.get(kind) or []}


def identity(service: Mapping[str, Any], document: Mapping[str, Any] | None = None) -> str:
    """What a service definition is, as a short digest: its canonical JSON without its own label,
    with the top-level secrets and configs it refers to (a secret's new version is a new name)."""
    definition = copy.deepcopy(dict(service))
    if document is not None:
        for kind in ("secrets", "configs"):
            top = document.get(kind) or {}
            definition[f"slipway:{kind}"] = {key: top.get(key) for key in sorted(references(service, kind))}
    labels = (definition.get("deploy") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(SPEC_LABEL, None)
    elif isinstance(labels, list):
        definition["deploy"]["labels"] = [x for x in labels if not str(x).startswith(SPEC_LABEL + "=")]
    return hashlib.sha256(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def pin(document: Mapping[str, Any], digests: Mapping[str, str], image_key: str) -> dict[str, Any]:
    """The stack to deploy: each image pinned to the digest the registry has now, each service
    placed on nodes of this deployment's image (so a new node image moves every task to the new
    nodes by a rolling update, health-gated, before the old nodes are drained), and labelled with
    its identity."""
    pinned = copy.deepcopy(dict(document))
    for service in (pinned.get("services") or {}).values():
        image = service["image"]
        if image in digests:
            service["image"] = f"{image.split('@', 1)[0]}@{digests[image]}"
        deploy = service.setdefault("deploy", {})
        placement = deploy.setdefault("placement", {})
        constraints = [c for c in placement.get("constraints", []) if not c.startswith(f"node.labels.{IMAGE_LABEL}")]
        placement["constraints"] = [*constraints, f"node.labels.{IMAGE_LABEL} == {image_key}"]
        labels = deploy.get("labels")
        if isinstance(labels, list):  # the list form, "key=value": made a mapping to add ours
            labels = dict(str(x).partition("=")[::2] for x in labels)
        labels = dict(labels or {})
        labels.pop(SPEC_LABEL, None)
        deploy["labels"] = labels
        labels[SPEC_LABEL] = identity(service, pinned)
    return pinned


@dataclass(frozen=True)
class Changes:
    changed: tuple[str, ...]  # services whose definition or digest differs from the running one, or new
    removed: tuple[str, ...]  # running services the stack no longer has

    @property
    def any(self) -> bool:
        return bool(self.changed or self.removed)


def changes(pinned: Mapping[str, Any], running: Mapping[str, RunningService]) -> Changes:
    services = pinned.get("services") or {}
    changed = tuple(
        sorted(
            name
            for name, service in services.items()
            if name not in running or running[name].spec != service["deploy"]["labels"][SPEC_LABEL]
        )
    )
    return Changes(changed, tuple(sorted(set(running) - set(services))))


def config_files(document: Mapping[str, Any]) -> list[str]:
    """The files the stack's configs are created from (stack.rendered: `configs/<sha256>`, relative
    to the stack file), each once."""
    configs = document.get("configs") or {}
    return sorted({str(c["file"]) for c in configs.values() if isinstance(c, Mapping) and c.get("file")})


def subset(pinned: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The stack file with only these services: `docker stack deploy` leaves the others alone."""
    document = copy.deepcopy(dict(pinned))
    document["services"] = {n: s for n, s in (pinned.get("services") or {}).items() if n in names}
    return document


# --- converged? ---------------------------------------------------------------------------------

SETTLED = ("", "completed")
FAILED = ("rollback_completed", "rollback_paused", "paused")


@dataclass(frozen=True)
class ServiceVerdict:
    name: str
    image: str
    running: int
    desired: int
    state: str  # "converged", "updating", "failed"
    why: str = ""


def _running_on_spec(service: RunningService) -> int:
    return sum(
        1
        for t in service.tasks
        if t.desired == "Running" and t.current.startswith("Running") and t.image == service.image
    )


def _latest_error(service: RunningService) -> str:
    return next((f"{t.name}: {t.error}" for t in service.tasks if t.error), "")


def judge(service: RunningService) -> ServiceVerdict:
    running = _running_on_spec(service)
    desired = (
        service.replicas if service.replicas is not None else sum(1 for t in service.tasks if t.desired == "Running")
    )
    error = _latest_error(service)
    if service.update_state in FAILED:
        why = service.update_message or f"update {service.update_state}"
        return ServiceVerdict(
            service.name, service.image, running, desired, "failed", f"{why}; {error}" if error else why
        )
    if service.update_state in SETTLED and running == desired:
        return ServiceVerdict(service.name, service.image, running, desired, "converged")
    why = error or f"{running}/{desired} tasks running on the new definition"
    return ServiceVerdict(service.name, service.image, running, desired, "updating", why)


def verdict(services: Mapping[str, RunningService], expected: Sequence[str]) -> list[ServiceVerdict]:
    """One verdict per service the stack has (`expected`): missing ones are still being created."""
    found = [judge(services[name]) for name in expected if name in services]
    missing = [ServiceVerdict(n, "", 0, 0, "updating", "not created yet") for n in expected if n not in services]
    return sorted(found + missing, key=lambda v: v.name)
