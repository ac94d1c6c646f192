"""The repository's Compose stack file: refused early with a sentence naming the file and the problem,
or prepared for `docker stack deploy` with safe update defaults. Pure: no I/O but reading the schemas
vendored in chalicelib/schemas/.

`parse` mirrors what `docker stack deploy` does with the file, read in docker/cli at the commit named
in chalicelib/schemas/README.md: cli/command/stack/loader.go (loadComposeFile) reads the YAML,
cli/compose/loader/loader.go (Load) picks the schema by `version` (cli/compose/schema/schema.go:
absent, "" or "3" mean the newest, 3.13; any other value must name a schema file), refuses the
ForbiddenProperties, interpolates `${VAR}` (cli/compose/interpolation, cli/compose/template), validates
against data/config_schema_v<version>.json, and loadComposeFile then prints the services' keys in
GetUnsupportedProperties and GetDeprecatedProperties as "Ignoring ..." (the lists are in
cli/compose/types/types.go) and refuses a service without an image (Slipway takes `build` instead:
chalicelib/builds.py). The YAML is read as
go.yaml.in/yaml/v3 (vendored there) reads it: `22:22` is a string, not the base-60 number YAML 1.1
makes of it; only true/false are booleans; dates stay strings; a key given twice is refused.
chalicelib/compose_yaml.py holds those steps up to the validation (with the size limits and the
`${VAR}` and `file:` rules below), chalicelib/compose_schema.py the validation, chalicelib/durations.py
Go's durations; this module runs them in order and holds the rest of Slipway's rules and `render`.

Slipway's own rules on top: at most compose_yaml.MAX_BYTES and MAX_VALUES values once aliases are
expanded (alias bombs); no `${VAR}` without a default (the manager deploys with an empty environment);
no secret or config read from a `file:` (it would have to be in the repository and never reaches the
manager); a top-level secret `external: true` is a Slipway secret, its value in SSM Parameter Store at
/slipway/<environment>/secrets/<key>; no named volume on the local driver unless
SLIPWAY_LOCAL_VOLUMES=allow (nodes are replaced whenever the node image changes, and their data with
them); anonymous volumes and bind mounts are warnings.

`render` adds to each service but a job, key by key where it has not set them, `deploy.update_config` `order:
start-first` (stop-first for a service publishing a port in host mode: the new task could not bind
it while the old one holds it), `failure_action: rollback` and a `monitor`, and the same `order` in
`deploy.rollback_config`. The monitor is how long Swarm watches an updated task for failure (its
default, 5 s, ends before most health checks could fail): start_period + retries x (interval +
timeout), the longest a health check can take to call a task unhealthy (moby daemon/health.go waits
`interval` from the end of one probe to the start of the next, and a probe may run for `timeout`),
with Docker's defaults for what the file leaves out (interval 30 s, timeout 30 s, retries 3,
start_period 0 s; a service without a healthcheck may have one in its image, so it gets them all),
and never below MIN_MONITOR_NS, 30 s: with the health check disabled a crash soon after start is the
only failure signal, and 30 s lets one that comes after a few seconds of start-up show. The rendered
`version` is the lowest vendored one, not below the file's own nor 3.7 (rollback_config's first),
under which the rendered document validates: a manager with an older Docker (Ubuntu 24.04's docker.io
24.0 knows up to 3.11) still reads it, which writing the newest would break.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

from chalicelib import compose_schema, compose_yaml, stack_rules
from chalicelib.durations import format_duration, parse_duration
from chalicelib.errors import StackInvalid

RENDER_MIN_VERSION = "3.7"
MIN_MONITOR_NS = 30 * 10**9


@dataclass(frozen=True)
class Stack:
    """A stack file that passed: `document` is what docker stack deploy would load (interpolated,
    read-only); `secrets` are the Slipway secrets its services use (top-level keys)."""

    path: str
    services: tuple[str, ...]
    secrets: tuple[str, ...]
    warnings: tuple[str, ...]
    document: Mapping[str, Any] = field(hash=False, repr=False)
    builds: tuple[str, ...] = ()  # the services built from the repository (chalicelib/builds.py)
    build_secrets: tuple[str, ...] = ()  # the Slipway secrets their builds mount (never a service's)


def content_key(data: bytes) -> str:
    """Where a stack file is stored in the bake bucket: named by its content."""
    return f"stacks/{hashlib.sha256(data).hexdigest()}.yml"


def parse(text: str | bytes, *, path: str, local_volumes: bool = False) -> Stack:
    """The stack file `text` (found at `path` in the repository, named in every message), checked as
    the module docstring says; StackInvalid if docker stack deploy or Slipway would refuse it."""
    document = compose_yaml.load(text, path)
    version = compose_yaml.version(document, path)
    services = document.get("services")
    services = services if isinstance(services, dict) else {}
    compose_yaml.refuse(path, compose_yaml.forbidden(services) + compose_yaml.file_sources(document))
    ignored = compose_yaml.ignored(services)
    problems: list[str] = []
    document = compose_yaml.interpolate(document, (), "", problems)
    compose_yaml.refuse(path, problems)
    compose_yaml.refuse(path, [problem] if (problem := compose_schema.schema_problem(document, version)) else [])
    check = stack_rules.check(document, local_volumes, path)
    compose_yaml.refuse(path, check.problems)
    return Stack(
        path=path,
        services=tuple(sorted(document["services"])),
        secrets=check.secrets,
        warnings=tuple(ignored + check.warnings),
        document=_freeze(document),
        builds=check.builds,
        build_secrets=check.build_secrets,
    )


def render(stack: Stack, secret_names: Mapping[str, str], images: Mapping[str, str] | None = None) -> bytes:
    """The YAML to deploy: `stack` with the update defaults, each Slipway secret named after the swarm
    secret `secret_names[key]` holding its value, every `$` kept literal (docker stack deploy
    interpolates again) and the lowest `version` that has every key it uses."""
    return dump(rendered(stack, secret_names, images))


def rendered(stack: Stack, secret_names: Mapping[str, str], images: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `render` writes, as a document (to change further before `dump`): each service built
    from the repository runs `images[service]` (its build dropped), and a secret only builds
    mount is left out (no service takes it from the swarm)."""
    missing = [key for key in stack.secrets if key not in secret_names]
    if missing:
        raise ValueError(f"no swarm secret name for {', '.join(missing)} (the secrets {stack.path} uses)")
    unbuilt = [name for name in stack.builds if name not in (images or {})]
    if unbuilt:
        raise ValueError(f"no built image for {', '.join(unbuilt)} (the services {stack.path} builds)")
    document = _thaw(stack.document)
    for name in stack.builds:
        service = document["services"][name]
        service.pop("build", None)
        service["image"] = (images or {})[name]
    for key in stack.build_secrets:
        if key not in stack.secrets:
            del document["secrets"][key]
    if "secrets" in document and not document["secrets"]:
        del document["secrets"]
    document["services"] = {name: with_update_defaults(s) for name, s in document["services"].items()}
    for key in stack.secrets:
        spec = {k: v for k, v in document["secrets"][key].items() if k not in ("external", "name")}
        document["secrets"][key] = {**spec, "external": True, "name": secret_names[key]}
    document = _escape(document)
    version = _render_version(document, stack.path)
    return {"version": version, **{k: v for k, v in document.items() if k != "version"}}


def dump(document: Mapping[str, Any]) -> bytes:
    """YAML for a stack document that yaml.v3 (docker) reads back as the same values: a string it
    would take for a number or a boolean is quoted."""
    text: str = yaml.dump(_thaw(document), Dumper=compose_yaml.Dumper, sort_keys=False, allow_unicode=True, width=120)
    return text.encode()


def with_update_defaults(service: Mapping[str, Any]) -> dict[str, Any]:
    """`service` with Slipway's update and rollback defaults wherever it has not set its own; a job
    (`deploy.mode` replicated-job or global-job) takes none: Swarm has no updates of jobs (docker/cli
    cli/command/service/opts.go: "update and rollback configuration is not supported for jobs")."""
    if str((service.get("deploy") or {}).get("mode", "")).endswith("-job"):
        return dict(service)
    order = "stop-first" if _publishes_host_ports(service) else "start-first"
    deploy = dict(service.get("deploy") or {})
    update = dict(deploy.get("update_config") or {})
    update.setdefault("order", order)
    update.setdefault("failure_action", "rollback")
    update.setdefault("monitor", format_duration(update_monitor(service.get("healthcheck"))))
    rollback = dict(deploy.get("rollback_config") or {})
    rollback.setdefault("order", order)
    return {**service, "deploy": {**deploy, "update_config": update, "rollback_config": rollback}}


def update_monitor(healthcheck: Mapping[str, Any] | None) -> int:
    """Nanoseconds Swarm should watch an updated task: see the module docstring."""
    if healthcheck is not None and (healthcheck.get("disable") is True or healthcheck.get("test") == ["NONE"]):
        return MIN_MONITOR_NS
    check = healthcheck or {}
    interval = _duration_or(check.get("interval"), 30 * 10**9)
    timeout = _duration_or(check.get("timeout"), 30 * 10**9)
    start_period = _duration_or(check.get("start_period"), 0)
    retries = check.get("retries")
    count = int(retries) if isinstance(retries, int | float) and not isinstance(retries, bool) and retries > 0 else 3
    return max(MIN_MONITOR_NS, start_period + count * (interval + timeout))


def _duration_or(value: Any, default: int) -> int:
    """A healthcheck duration; moby's timeoutWithDefault takes zero (or none) for the default."""
    ns = parse_duration(value) if isinstance(value, str) else 0
    return ns if ns > 0 else default


def published_ports(document: Mapping[str, Any]) -> list[int]:
    """The TCP ports the stack's services publish on the nodes (short syntax `[ip:]published:target[/tcp]`,
    ranges included, or long syntax's `published`), in order, each once."""
    found: list[int] = []
    for service in (document.get("services") or {}).values():
        for port in (service or {}).get("ports") or []:
            if isinstance(port, Mapping):
                if str(port.get("protocol") or "tcp").lower() == "tcp" and port.get("published") not in (None, ""):
                    found += _published_range(str(port["published"]))
                continue
            spec, _, protocol = str(port).partition("/")
            parts = spec.rsplit(":", 2)
            if (protocol or "tcp").lower() == "tcp" and len(parts) >= 2 and parts[-2]:
                found += _published_range(parts[-2])
    return list(dict.fromkeys(p for p in found if 1 <= p <= 65535))


def _published_range(text: str) -> list[int]:
    low, _, high = text.strip().partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        return []
    return list(range(first, min(last, first + 1024) + 1))


def _publishes_host_ports(service: Mapping[str, Any]) -> bool:
    return any(isinstance(p, Mapping) and p.get("mode") == "host" for p in service.get("ports") or [])


# --- rendering ------------------------------------------------------------------------------------


def _render_version(document: dict[str, Any], path: str) -> str:
    current = compose_yaml.version(document, path) if "version" in document else RENDER_MIN_VERSION
    floor = max(compose_schema.VERSIONS.index(current), compose_schema.VERSIONS.index(RENDER_MIN_VERSION))
    problem = None
    for version in compose_schema.VERSIONS[floor:]:
        problem = compose_schema.schema_problem({**document, "version": version}, version)
        if problem is None:
            return version
    raise StackInvalid(f"{path}: the stack with Slipway's defaults fits no Compose file version: {problem}")


def _escape(value: Any) -> Any:
    """Every `$` in a value doubled: docker stack deploy interpolates the rendered file again."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value
