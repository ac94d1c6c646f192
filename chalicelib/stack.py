"""The repository's Compose file: read as docker compose reads it, made into what `docker stack deploy`
takes, refused with every problem at once (one line each, naming the file, the key and what to do),
or prepared for `docker stack deploy` with safe update defaults. Pure: the environment's variables
and the commit's files come in as arguments; no I/O but reading the schemas vendored in
chalicelib/schemas/.

`read` runs, in order:
1. the YAML, as go.yaml.in/yaml/v3 (docker's reader) reads it: `22:22` is a string, not the base-60
   number YAML 1.1 makes of it; only true/false are booleans; dates stay strings; a key given twice
   is refused; within compose_yaml.MAX_BYTES and MAX_VALUES once aliases are expanded (alias bombs);
2. `${VAR}` as docker compose interpolates it (interpolation.py, compose-go's template), from the
   environment's variables (SSM Parameter Store, /slipway/<environment>/vars/<NAME>) over the `.env`
   beside the file; a variable neither set nor defaulted is a problem naming the parameter to create;
3. the Compose Specification's schema (compose-spec.json, what docker compose validates against):
   no `version:` needed, every service's first error;
4. what the file reads from the commit (stack_sources.py): env files, configs from files, inline
   or from a variable, read-only bind mounts of a file; secrets from a file are refused;
5. the keys Swarm has no place for made its own or dropped, each a warning (compose_spec.py);
6. docker/cli's own schema (cli/compose/schema/data/config_schema_v3.13.json, at the commit named in
   chalicelib/schemas/README.md), which docker stack deploy validates against, with `build` left to
   Slipway (builds.py), and the keys its loader ignores (cli/compose/types/types.go) as warnings;
7. Slipway's own rules (stack_rules.py): a top-level secret `external: true` is a Slipway secret, its
   value in SSM Parameter Store at /slipway/<environment>/secrets/<key>; no named volume on the local
   driver unless SLIPWAY_LOCAL_VOLUMES=allow (nodes are replaced whenever the node image changes, and
   their data with them); anonymous volumes and binds of a node's path are warnings.
`stored` is the document read, kept for the run's later states, which `parse` reads back as the same
stack with neither the variables nor the commit.

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
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

from chalicelib import compose_schema, compose_spec, compose_yaml, dotenv, interpolation, stack_rules, stack_sources
from chalicelib.durations import format_duration, parse_duration
from chalicelib.errors import StackInvalid

RENDER_MIN_VERSION = "3.7"
MIN_MONITOR_NS = 30 * 10**9
VARIABLES_HOME = "/slipway/<environment>/vars"
MAX_PROBLEMS = 50


@dataclass(frozen=True)
class Stack:
    """A stack file that passed: `document` is what docker stack deploy would load (variables put in,
    files of the repository read, made into what Swarm takes; read-only); `secrets` are the Slipway
    secrets its services use (top-level keys)."""

    path: str
    services: tuple[str, ...]
    secrets: tuple[str, ...]
    warnings: tuple[str, ...]
    document: Mapping[str, Any] = field(hash=False, repr=False)
    builds: tuple[str, ...] = ()  # the services built from the repository (chalicelib/builds.py)
    build_secrets: tuple[str, ...] = ()  # the Slipway secrets their builds mount (never a service's)
    configs: Mapping[str, str] = field(default_factory=dict, hash=False)  # config key -> sha256 of its bytes
    config_data: Mapping[str, bytes] = field(default_factory=dict, hash=False, repr=False)  # sha256 -> bytes
    variables: tuple[str, ...] = ()  # the environment's variables it uses (names: never a value)


@dataclass(frozen=True)
class Reading:
    """What `read` found: the stack (None when a problem stops the reading early), every problem,
    and the warnings."""

    stack: Stack | None
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def content_key(data: bytes) -> str:
    """Where a stack file is stored in the bake bucket: named by its content."""
    return f"stacks/{hashlib.sha256(data).hexdigest()}.yml"


def config_key(digest: str) -> str:
    """Where a config's bytes are stored in the bake bucket (the manager fetches them to deploy)."""
    return f"configs/{digest}"


def parse(
    text: str | bytes,
    *,
    path: str,
    local_volumes: bool = False,
    variables: Mapping[str, str] | None = None,
    files: stack_sources.RepositoryFiles | None = None,
    variables_home: str = VARIABLES_HOME,
) -> Stack:
    """The stack file `text` (found at `path` in the repository, named in every message), checked as
    the module docstring says; StackInvalid, with every problem, if docker or Slipway would refuse it."""
    reading = read(
        text, path=path, local_volumes=local_volumes, variables=variables, files=files, variables_home=variables_home
    )
    if reading.problems or reading.stack is None:
        raise StackInvalid(describe_problems(path, reading.problems))
    return reading.stack


def read(
    text: str | bytes,
    *,
    path: str,
    local_volumes: bool = False,
    variables: Mapping[str, str] | None = None,
    files: stack_sources.RepositoryFiles | None = None,
    variables_home: str = VARIABLES_HOME,
) -> Reading:
    """Every problem and warning of the stack file at once (a YAML that cannot be read stops at that).
    `variables` are the environment's (a `.env` beside the file gives defaults under them, as in
    docker compose); `files` the commit's, for env files, configs and read-only bind mounts."""
    document = compose_yaml.load(text, path)
    base = posixpath.dirname(path)
    problems: list[str] = []
    findings = interpolation.Findings()
    defaults = _dotenv_defaults(base, files, variables or {}, problems, findings)
    given = {**defaults, **(variables or {})}
    lookup = given.get
    document = interpolation.interpolate(document, lookup, findings)
    problems += findings.problems
    document, warnings = compose_spec.docker_only(document)
    spec_problems = compose_schema.schema_problems(document, compose_schema.SPEC)
    if spec_problems:
        problems += spec_problems + interpolation.unset_problems(findings, variables_home)
        return Reading(None, tuple(interpolation.redacted(problems, given, findings.used)), ())
    sources = stack_sources.resolve(document, base, files, lookup, findings)
    problems += sources.problems
    warnings += sources.warnings
    normalized = compose_spec.normalize(sources.document, profiles=_profiles(given.get("COMPOSE_PROFILES")))
    problems += normalized.problems
    warnings += normalized.warnings
    document = normalized.document
    services = document.get("services") or {}
    warnings += compose_yaml.ignored(services)
    unbuilt = {name: {**s, "build": "."} if "build" in s else s for name, s in services.items()}
    problems += compose_schema.schema_problems({**document, "services": unbuilt}, compose_schema.DEFAULT_VERSION)
    check = stack_rules.check(document, local_volumes, path)
    problems += check.problems + interpolation.unset_problems(findings, variables_home)
    warnings += check.warnings
    problems, warnings = (
        interpolation.redacted(problems, given, findings.used),
        interpolation.redacted(warnings, given, findings.used),
    )
    warnings = sorted(dict.fromkeys(warnings))
    stack = Stack(
        path=path,
        services=tuple(sorted(services)),
        secrets=check.secrets,
        warnings=tuple(warnings),
        document=_freeze(document),
        builds=check.builds,
        build_secrets=check.build_secrets,
        configs=dict(sources.configs),
        config_data=dict(sources.data),
        variables=tuple(sorted(findings.used & set(given))),
    )
    return Reading(stack, tuple(dict.fromkeys(problems)), tuple(warnings))


def _profiles(value: str | None) -> tuple[str, ...]:
    """COMPOSE_PROFILES, as docker compose reads it from the environment or `.env`: names, comma-separated."""
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _dotenv_defaults(
    base: str,
    files: stack_sources.RepositoryFiles | None,
    variables: Mapping[str, str],
    problems: list[str],
    findings: interpolation.Findings,
) -> dict[str, str]:
    """The `.env` beside the Compose file, as docker compose reads it for `${VAR}`: its values are
    defaults, under the environment's variables; a variable it needs and lacks is reported as the
    file's own are."""
    if files is None:
        return {}
    where = posixpath.join(base, ".env") if base else ".env"
    if files.kind(where) not in ("file", "executable"):
        return {}
    data = files.read(where) or b""
    try:
        parsed = dotenv.parse(data.decode("utf-8", "replace"), variables.get)
    except dotenv.DotenvError as exc:
        problems.append(f"{where} cannot be read as an env file: {exc}")
        return {}
    for variable, keys in parsed.unset.items():
        findings.used.add(variable)
        findings.unset.setdefault(variable, []).extend(f"{where} ({key})" for key in keys)
    problems += [f"{where} ({key}) has a $ that starts no variable: write $$ for a literal $" for key in parsed.invalid]
    return parsed.values


def describe_problems(path: str, problems: Sequence[str]) -> str:
    """The refusal: its first line names the file, the count and the first problem (what a commit
    status shows); then every problem, one per line."""
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    shown = list(problems[:MAX_PROBLEMS])
    more = [f"and {len(problems) - MAX_PROBLEMS} more"] if len(problems) > MAX_PROBLEMS else []
    return f"{path}: {len(problems)} problems; the first: {problems[0]}\n" + "\n".join(f"- {p}" for p in shown + more)


def stored(stack: Stack) -> bytes:
    """The stack as the bake bucket keeps it for the run's later states: the document `read` made
    (variables put in, every `$` kept literal), which `parse` reads back as the same stack without
    the variables or the repository."""
    return dump(_escape(_thaw(stack.document)))


def render(
    stack: Stack,
    secret_names: Mapping[str, str],
    images: Mapping[str, str] | None = None,
    configs: Mapping[str, str] | None = None,
) -> bytes:
    """The YAML to deploy: `stack` with the update defaults, each Slipway secret named after the swarm
    secret `secret_names[key]` holding its value, every `$` kept literal (docker stack deploy
    interpolates again) and the lowest `version` that has every key it uses."""
    return dump(rendered(stack, secret_names, images, configs))


def rendered(
    stack: Stack,
    secret_names: Mapping[str, str],
    images: Mapping[str, str] | None = None,
    configs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What `render` writes, as a document (to change further before `dump`): each service built
    from the repository runs `images[service]` (its build dropped), a secret only builds mount is
    left out (no service takes it from the swarm), and each config read from the commit
    (`configs`: key -> sha256, stack.configs as 'Read the stack file' kept it) is created by
    docker stack deploy from `configs/<sha256>` beside the file, under its content's name."""
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
    for key, digest in (configs or stack.configs).items():
        spec = {k: v for k, v in document["configs"][key].items() if k not in ("external", "name")}
        document["configs"][key] = {**spec, "name": stack_sources.config_name(key, digest), "file": config_key(digest)}
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
