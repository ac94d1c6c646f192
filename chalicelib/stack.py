"""The repository's Compose stack file: refused early with a sentence naming the file and the problem,
or prepared for `docker stack deploy` with safe update defaults. Pure: no I/O but reading the schemas
vendored next to this module.

`parse` mirrors what `docker stack deploy` does with the file, read in docker/cli at the commit named
in chalicelib/schemas/README.md: cli/command/stack/loader.go (loadComposeFile) reads the YAML,
cli/compose/loader/loader.go (Load) picks the schema by `version` (cli/compose/schema/schema.go:
absent, "" or "3" mean the newest, 3.13; any other value must name a schema file), refuses the
ForbiddenProperties, interpolates `${VAR}` (cli/compose/interpolation, cli/compose/template), validates
against data/config_schema_v<version>.json, and loadComposeFile then prints the services' keys in
GetUnsupportedProperties and GetDeprecatedProperties as "Ignoring ..." (the lists are in
cli/compose/types/types.go) and refuses a service without an image. The YAML is read as
go.yaml.in/yaml/v3 (vendored there) reads it: `22:22` is a string, not the base-60 number YAML 1.1
makes of it; only true/false are booleans; dates stay strings; a key given twice is refused.

Slipway's own rules on top: at most MAX_BYTES and MAX_VALUES values once aliases are expanded (alias
bombs); no `${VAR}` without a default (the manager deploys with an empty environment); no secret or
config read from a `file:` (it would have to be in the repository and never reaches the manager); a
top-level secret `external: true` is a Slipway secret, its value in SSM Parameter Store at
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

import difflib
import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

import fastjsonschema
import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

from chalicelib.errors import InvalidInput

MAX_BYTES = 1024 * 1024
# Values (scalars, lists, mappings) once every alias is expanded: a real stack has hundreds; yaml.v3
# refuses "excessive aliasing" in the same spirit (go.yaml.in/yaml/v3 decode.go allowedAliasRatio).
MAX_VALUES = 250_000
MAX_DEPTH = 64
SCHEMAS = Path(__file__).parent / "schemas"
# The schema files vendored in SCHEMAS, oldest first; cli/compose/schema/schema.go defaultVersion.
VERSIONS = tuple(f"3.{minor}" for minor in range(14))
DEFAULT_VERSION = "3.13"
RENDER_MIN_VERSION = "3.7"
MIN_MONITOR_NS = 30 * 10**9
SECRETS_HOME = "/slipway/<environment>/secrets"
LOCAL_VOLUMES_OPT_IN = "SLIPWAY_LOCAL_VOLUMES=allow"

# cli/compose/types/types.go, which cli/compose/loader/loader.go reads: docker stack deploy ignores
# UnsupportedProperties and DeprecatedProperties (prints "Ignoring ...") and refuses
# ForbiddenProperties in a service.
UNSUPPORTED_PROPERTIES = (
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
)
DEPRECATED_PROPERTIES = {
    "container_name": "Setting the container name is not supported.",
    "expose": "Exposing ports is unnecessary - services on the same network can access each other's containers "
    "on any port.",
}
FORBIDDEN_PROPERTIES = {
    "extends": "Support for `extends` is not implemented yet.",
    "volume_driver": "Instead of setting the volume driver on the service, define a volume using the top-level "
    "`volumes` option and specify the driver there.",
    "volumes_from": "To share a volume between services, define it using the top-level `volumes` option and "
    "reference it from each service that shares it using the service-level `volumes` option.",
    "cpu_quota": "Set resource limits using deploy.resources",
    "cpu_shares": "Set resource limits using deploy.resources",
    "cpuset": "Set resource limits using deploy.resources",
    "mem_limit": "Set resource limits using deploy.resources",
    "memswap_limit": "Set resource limits using deploy.resources",
}


class StackInvalid(InvalidInput):
    """The stack file cannot be deployed; the message names the file and says why."""


@dataclass(frozen=True)
class Stack:
    """A stack file that passed: `document` is what docker stack deploy would load (interpolated,
    read-only); `secrets` are the Slipway secrets its services use (top-level keys)."""

    path: str
    services: tuple[str, ...]
    secrets: tuple[str, ...]
    warnings: tuple[str, ...]
    document: Mapping[str, Any] = field(hash=False, repr=False)


def content_key(data: bytes) -> str:
    """Where a stack file is stored in the bake bucket: named by its content."""
    return f"stacks/{hashlib.sha256(data).hexdigest()}.yml"


def parse(text: str | bytes, *, path: str, local_volumes: bool = False) -> Stack:
    """The stack file `text` (found at `path` in the repository, named in every message), checked as
    the module docstring says; StackInvalid if docker stack deploy or Slipway would refuse it."""
    document = _load(text, path)
    version = _version(document, path)
    services = document.get("services")
    services = services if isinstance(services, dict) else {}
    _refuse(path, _forbidden(services) + _file_sources(document))
    ignored = _ignored(services)
    problems: list[str] = []
    document = _interpolate(document, (), "", problems)
    _refuse(path, problems)
    _refuse(path, [problem] if (problem := _schema_problem(document, version)) else [])
    check = _check(document, local_volumes)
    _refuse(path, check.problems)
    return Stack(
        path=path,
        services=tuple(sorted(document["services"])),
        secrets=check.secrets,
        warnings=tuple(ignored + check.warnings),
        document=_freeze(document),
    )


def render(stack: Stack, secret_names: Mapping[str, str]) -> bytes:
    """The YAML to deploy: `stack` with the update defaults, each Slipway secret named after the swarm
    secret `secret_names[key]` holding its value, every `$` kept literal (docker stack deploy
    interpolates again) and the lowest `version` that has every key it uses."""
    return dump(rendered(stack, secret_names))


def rendered(stack: Stack, secret_names: Mapping[str, str]) -> dict[str, Any]:
    """What `render` writes, as a document (to change further before `dump`)."""
    missing = [key for key in stack.secrets if key not in secret_names]
    if missing:
        raise ValueError(f"no swarm secret name for {', '.join(missing)} (the secrets {stack.path} uses)")
    document = _thaw(stack.document)
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
    text: str = yaml.dump(_thaw(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
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


# --- durations, as Go's time.ParseDuration and Duration.String (src/time/format.go, time.go) -------

_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_MAX_NS = 1 << 63
_PIECE = re.compile(r"(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?(?P<unit>[^0-9.]*)")


def parse_duration(text: str) -> int:
    """Nanoseconds in a Go duration ("1m30s", "500ms", "-1.5h", "0"); ValueError as Go refuses it."""
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while rest:
        piece = _PIECE.match(rest)
        if piece is None or not (piece["whole"] or piece["fraction"]):
            raise ValueError(f"invalid duration {text!r}")  # no digits before the unit (".s", "s")
        rest = rest[piece.end() :]
        unit, fraction = piece["unit"], piece["fraction"] or ""
        if not unit:
            raise ValueError(f"missing unit in duration {text!r}")
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        total += int(piece["whole"] or "0") * _UNITS[unit]
        if fraction:
            digits = fraction[:18]  # Go stops accumulating precision where a uint64 would overflow
            total += int(int(digits) * (_UNITS[unit] / 10 ** len(digits)))
        if total > _MAX_NS:
            raise ValueError(f"invalid duration {text!r}")
    if not negative and total > _MAX_NS - 1:
        raise ValueError(f"invalid duration {text!r}")
    return -total if negative else total


def format_duration(ns: int) -> str:
    """A duration as Go prints it: "1m30s", "1h0m0s", "1.5s", "250ms", "0s"."""
    if ns == 0:
        return "0s"
    sign, size = ("-" if ns < 0 else ""), abs(ns)
    if size < 10**9:
        unit, scale = next((u, s) for u, s in (("ms", 10**6), ("µs", 10**3), ("ns", 1)) if size >= s)
        return sign + _decimal(size, scale) + unit
    hours, rest = divmod(size, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    return f"{sign}{minutes}m{seconds}" if minutes else sign + seconds


def _decimal(value: int, scale: int) -> str:
    whole, fraction = divmod(value, scale)
    digits = f"{fraction:0{len(str(scale)) - 1}d}".rstrip("0") if fraction else ""
    return f"{whole}.{digits}" if digits else str(whole)


# --- reading the YAML ---------------------------------------------------------------------------


def _resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    """PyYAML's implicit typing of plain scalars, cut to what yaml.v3 does (resolve.go): no base-60
    numbers, no yes/no/on/off booleans, no timestamps; 0o17 is an int and 1e3 a float, as there."""
    table: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    rules = (
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
        ("int", r"^[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|0[0-7_]*|[1-9][0-9_]*)$", "-+0123456789"),
        (
            "float",
            r"^(?:[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            "-+0123456789.",
        ),
        ("merge", r"^(?:<<)$", "<"),
    )
    for tag, pattern, first in rules:
        for char in first:
            table.setdefault(char, []).append((f"tag:yaml.org,2002:{tag}", re.compile(pattern)))
    return table


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]  # PyYAML is untyped
    yaml_implicit_resolvers = _resolvers()


_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[misc]  # PyYAML is untyped
    """SafeDumper quotes what YAML 1.1 would type; this also quotes what only yaml.v3 would."""


for _tag, _pattern, _first in (
    ("int", r"^[-+]?0o[0-7_]+$", "-+0"),
    ("float", r"^[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$", "-+0123456789."),
):
    _Dumper.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


def _load(text: str | bytes, path: str) -> dict[str, Any]:
    size = len(text) if isinstance(text, bytes) or len(text) > MAX_BYTES else len(text.encode("utf-8", "replace"))
    if size > MAX_BYTES:
        raise StackInvalid(f"{path}: is {size / MAX_BYTES:.1f} MiB; Slipway reads stack files of up to 1 MiB")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StackInvalid(f"{path}: is not UTF-8 text (byte {exc.start})") from exc
    loader = _Loader(text.removeprefix("\ufeff"))
    try:
        root = loader.get_single_node()
        if root is not None:
            _refuse(path, [problem] if (problem := _node_problem(root)) else [])
        document = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StackInvalid(f"{path}: is not valid YAML{where}: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise StackInvalid(f"{path}: is not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    if not isinstance(document, dict):
        what = "empty" if document is None else f"a {_json_type(document)}"
        raise StackInvalid(f"{path}: the top level must be a mapping (services:, ...), but the file is {what}")
    return document


def _node_problem(root: Any) -> str | None:
    """Why the composed YAML cannot be read as docker would (yaml.v3 refuses duplicate keys and an
    anchor containing itself; JSON has only string keys), or is too big once aliases are expanded."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliased = False

    def at(node: Any) -> str:
        return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"

    def size(node: Any, depth: int) -> int:
        nonlocal aliased
        if id(node) in sizes:
            aliased = True
            return sizes[id(node)]
        if id(node) in active:
            raise _NodeError(f"the value at {at(node)} contains itself (an anchor used inside its own value)")
        if depth > MAX_DEPTH:
            raise _NodeError(f"nests more than {MAX_DEPTH} levels deep at {at(node)}")
        active.add(id(node))
        total = 1
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                raise _NodeError(f"the YAML tag {node.tag} at {at(node)} is not supported")
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        else:
            seen: dict[tuple[str, str], Any] = {}
            for key, value in node.value:
                if key.tag == _TAG + "merge":
                    total += size(value, depth + 1)
                    continue
                if not isinstance(key, yaml.ScalarNode) or key.tag != _TAG + "str":
                    shown = key.value if isinstance(key, yaml.ScalarNode) else "a list or mapping"
                    raise _NodeError(f"the key {shown} at {at(key)} is not a string (quote it)")
                if (key.tag, key.value) in seen:
                    first = seen[(key.tag, key.value)]
                    raise _NodeError(
                        f"the key {key.value!r} at {at(key)} is already given at line {first.start_mark.line + 1}"
                    )
                seen[(key.tag, key.value)] = key
                total += 1 + size(value, depth + 1)
        active.discard(id(node))
        sizes[id(node)] = total
        return total

    try:
        count = size(root, 0)
    except _NodeError as exc:
        return str(exc)
    if count > MAX_VALUES:
        how = " once its aliases are expanded (an alias bomb?)" if aliased else ""
        return f"has more than {MAX_VALUES} values{how}; Slipway reads smaller stack files"
    return None


class _NodeError(Exception):
    pass


# --- what docker stack deploy does before validating ------------------------------------------------


def _refuse(path: str, problems: Sequence[str]) -> None:
    if problems:
        shown = list(problems[:10]) + ([f"and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise StackInvalid(f"{path}: " + "; ".join(shown))


def _version(document: Mapping[str, Any], path: str) -> str:
    """The schema version, as cli/compose/schema/schema.go Version reads it (fmt "%v" of the value)."""
    if "version" not in document:
        return DEFAULT_VERSION
    raw = document["version"]
    if isinstance(raw, bool):
        text = str(raw).lower()
    elif isinstance(raw, float) and raw.is_integer():
        text = str(int(raw))  # Go prints 3.0 as 3
    else:
        text = "<nil>" if raw is None else str(raw)
    text = DEFAULT_VERSION if text in ("", "3") else text
    if text not in VERSIONS:
        raise StackInvalid(
            f"{path}: version {text!r} is not a Compose file version docker stack deploy reads: it reads "
            f'{VERSIONS[0]} to {VERSIONS[-1]} (write version: "{DEFAULT_VERSION}" or leave version out)'
        )
    return text


def _forbidden(services: Mapping[str, Any]) -> list[str]:
    return [
        f"services.{name}.{key}: docker stack deploy refuses it: {why}"
        for name in sorted(services)
        if isinstance(services[name], dict)
        for key, why in FORBIDDEN_PROPERTIES.items()
        if key in services[name]
    ]


def _ignored(services: Mapping[str, Any]) -> list[str]:
    warnings = []
    for name in sorted(services):
        service = services[name]
        if not isinstance(service, dict):
            continue
        warnings += [
            f"services.{name}.{key}: docker stack deploy ignores it" for key in UNSUPPORTED_PROPERTIES if key in service
        ]
        warnings += [
            f"services.{name}.{key}: docker stack deploy ignores it: {why}"
            for key, why in DEPRECATED_PROPERTIES.items()
            if key in service
        ]
    return warnings


def _file_sources(document: Mapping[str, Any]) -> list[str]:
    """Secrets and configs whose value comes from the checkout (`file:`, or `environment:` as the
    Compose Specification has it; no docker/cli schema does): never on the manager."""
    problems = []
    for section in ("secrets", "configs"):
        entries = document.get(section)
        for key, spec in entries.items() if isinstance(entries, dict) else ():
            for source in ("file", "environment"):
                if isinstance(spec, dict) and source in spec:
                    declare = "declare it" if section == "secrets" else "make it a secret"
                    problems.append(
                        f"{section}.{key}.{source}: Slipway deploys no value from the repository or the deploying "
                        f"shell (it would not reach the swarm's manager); put the value in SSM Parameter Store "
                        f"under {SECRETS_HOME}/{key} and {declare} `external: true`"
                    )
    return problems


# cli/compose/template/template.go defaultPattern: `$$`, `$NAME` or `${NAME}`, NAME optionally
# followed by `:-`, `-`, `:?` or `?` and anything but `}`; a `$` starting none of those is invalid.
_NAME = r"[_a-z][_a-z0-9]*(?::?[-?][^}]*)?"
_TEMPLATE = re.compile(rf"\$(?i:(?P<escaped>\$)|(?P<named>{_NAME})|\{{(?P<braced>{_NAME})\}}|(?P<invalid>))")


def _substitute(template: str, where: str, problems: list[str]) -> str:
    """template.Substitute with an empty environment, as the manager has: `${A:-x}` and `${A-x}` give
    x (tried in template.go's order, so `${A:?a-b}` gives "b" there too); any variable that would
    need a value is a problem (docker would put an empty string, or fail on `?`)."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("named") or match.group("braced")
        if not name:
            problems.append(f"{where} has a $ that starts no variable in {template!r}: write $$ for a literal $")
            return ""
        for separator in (":-", "-"):
            if separator in name:
                return name.partition(separator)[2]
        for separator in (":?", "?"):
            if separator in name:
                variable, _, message = name.partition(separator)
                problems.append(
                    f"{where} requires ${{{variable}}} ({message or 'no message'}), but the manager deploys with "
                    f"an empty environment: write the value itself"
                )
                return ""
        problems.append(
            f"{where} uses {match.group(0)}, which has no default, and the manager deploys with an empty "
            f"environment: write ${{{name}:-value}} or the value itself (a literal $ is $$)"
        )
        return ""

    return _TEMPLATE.sub(replace, template)


def _to_int(value: str) -> Any:
    if not re.fullmatch(r"[-+]?[0-9]+", value):
        raise ValueError("an integer")
    return int(value)


def _to_float(value: str) -> Any:
    if not re.fullmatch(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", value):
        raise ValueError("a number")
    return float(value)


def _to_bool(value: str) -> Any:
    """http://yaml.org/type/bool.html, as cli/compose/loader/interpolate.go toBoolean has it."""
    if value.lower() in ("y", "yes", "true", "on"):
        return True
    if value.lower() in ("n", "no", "false", "off"):
        return False
    raise ValueError("a boolean")


# cli/compose/loader/interpolate.go interpolateTypeCastMapping: an interpolated value at these paths
# ("*" any key, "[]" any list item) is cast, so that `replicas: ${N:-2}` validates as an integer.
_S = ("services", "*")
_CASTS: tuple[tuple[tuple[str, ...], Callable[[str], Any]], ...] = (
    ((*_S, "configs", "[]", "mode"), _to_int),
    ((*_S, "secrets", "[]", "mode"), _to_int),
    ((*_S, "healthcheck", "retries"), _to_int),
    ((*_S, "healthcheck", "disable"), _to_bool),
    ((*_S, "deploy", "replicas"), _to_int),
    ((*_S, "deploy", "update_config", "parallelism"), _to_int),
    ((*_S, "deploy", "update_config", "max_failure_ratio"), _to_float),
    ((*_S, "deploy", "rollback_config", "parallelism"), _to_int),
    ((*_S, "deploy", "rollback_config", "max_failure_ratio"), _to_float),
    ((*_S, "deploy", "restart_policy", "max_attempts"), _to_int),
    ((*_S, "deploy", "placement", "max_replicas_per_node"), _to_int),
    ((*_S, "ports", "[]", "target"), _to_int),
    ((*_S, "ports", "[]", "published"), _to_int),
    ((*_S, "ulimits", "*"), _to_int),
    ((*_S, "ulimits", "*", "hard"), _to_int),
    ((*_S, "ulimits", "*", "soft"), _to_int),
    ((*_S, "privileged"), _to_bool),
    ((*_S, "oom_score_adj"), _to_int),
    ((*_S, "read_only"), _to_bool),
    ((*_S, "stdin_open"), _to_bool),
    ((*_S, "tty"), _to_bool),
    ((*_S, "volumes", "[]", "read_only"), _to_bool),
    ((*_S, "volumes", "[]", "volume", "nocopy"), _to_bool),
    (("networks", "*", "external"), _to_bool),
    (("networks", "*", "internal"), _to_bool),
    (("networks", "*", "attachable"), _to_bool),
    (("volumes", "*", "external"), _to_bool),
    (("secrets", "*", "external"), _to_bool),
    (("configs", "*", "external"), _to_bool),
)


def _cast(parts: tuple[str, ...]) -> Callable[[str], Any] | None:
    for pattern, cast in _CASTS:
        if len(pattern) == len(parts) and all(p in ("*", part) for p, part in zip(pattern, parts, strict=True)):
            return cast
    return None


def _interpolate(value: Any, parts: tuple[str, ...], where: str, problems: list[str]) -> Any:
    """cli/compose/interpolation Interpolate: every string value (never a key), recursively."""
    if isinstance(value, str):
        result = _substitute(value, where, problems)
        cast = _cast(parts) if result != value else None
        if cast is None:
            return result
        try:
            return cast(result)
        except ValueError as exc:
            problems.append(f"{where} is {result!r} once interpolated, which is not {exc}")
            return result
    if isinstance(value, dict):
        return {k: _interpolate(v, (*parts, k), f"{where}.{k}" if where else k, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*parts, "[]"), f"{where}[{i}]", problems) for i, v in enumerate(value)]
    return value


# --- the schema -----------------------------------------------------------------------------------


def _is_ports(value: str) -> bool:
    """cli/compose/schema/schema.go portsFormatChecker: go-connections nat.ParsePortSpec accepts it."""
    parts = value.split(":")
    if len(parts) == 1:
        ip, host, container = "", "", parts[0]
    elif len(parts) == 2:
        ip, host, container = "", parts[0], parts[1]
    else:
        ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
    container, _, proto = container.partition("/")
    if not container or (proto or "tcp").lower() not in ("tcp", "udp", "sctp"):
        return False
    if ip.startswith("["):
        if not (ip.endswith("]") and len(ip) > 2):
            return False
        ip = ip[1:-1]
    if ip:
        if "%" in ip:  # Go's net.ParseIP takes no IPv6 zone; Python's ip_address does
            return False
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return False
    start, end = _port_range(container)
    if start < 0:
        return False
    if host:
        host_start, host_end = _port_range(host)
        if host_start < 0 or (end - start != host_end - host_start and end != start):
            return False
    return True


def _port_range(text: str) -> tuple[int, int]:
    """go-connections nat parsePortRange; (-1, -1) where it fails."""
    first, dash, last = text.partition("-")
    numbers = [int(n) if re.fullmatch(r"[-+]?[0-9]+", n) else -1 for n in (first, last)]
    if not 0 <= numbers[0] <= 65535:
        return -1, -1
    if not dash or first == last:
        return numbers[0], numbers[0]
    if not numbers[0] <= numbers[1] <= 65535:
        return -1, -1
    return numbers[0], numbers[1]


def _is_duration(value: str) -> bool:
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


# docker/cli registers "ports" and "duration" (schema.go init); gojsonschema lets a format it has no
# checker for pass (FormatCheckerChain.IsFormat), so "expose" accepts anything there and here.
_FORMATS: dict[str, Callable[[str], bool]] = {"ports": _is_ports, "duration": _is_duration, "expose": lambda _: True}


def _no_remote(uri: str) -> Any:
    raise ValueError(f"the schema refers to {uri!r}, outside itself")


# fastjsonschema fetches a $ref it cannot resolve in the schema with urllib unless a handler for the
# URI's scheme answers: never from a Lambda (the vendored schemas refer only to themselves).
_HANDLERS: dict[str, Callable[[str], Any]] = dict.fromkeys(("", "file", "http", "https", "ftp"), _no_remote)


@functools.cache
def _schema(version: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"config_schema_v{version}.json").read_text())
    return loaded


@functools.cache
def _validator(version: str) -> Callable[[Any], Any]:
    """fastjsonschema directly, not Powertools' `validate`: that one takes these draft-04 schemas and
    their formats (its `formats=`), but calls fastjsonschema.validate, which compiles the schema anew
    on every call, 0.2 s for one of these; compiled once per version, a check takes well under a
    millisecond. The same library either way. use_default=False: the schemas' `default`s must not be
    written into the document (`version: 3.x` would appear in it)."""
    return fastjsonschema.compile(_schema(version), handlers=_HANDLERS, formats=_FORMATS, use_default=False)


def _schema_problem(document: Mapping[str, Any], version: str) -> str | None:
    try:
        _validator(version)(document)
    except fastjsonschema.JsonSchemaValueException as exc:
        return _explain(exc, version, 0)
    return _numeric_port_problem(document)


def _numeric_port_problem(document: Mapping[str, Any]) -> str | None:
    """The "ports" check gojsonschema also applies to a number (a port given unquoted), which
    fastjsonschema applies to strings only: the number's numerator, as *big.Rat gives it to docker."""
    for name, service in (document.get("services") or {}).items():
        for i, port in enumerate(service.get("ports") or []):
            numeric = isinstance(port, int | float) and not isinstance(port, bool)
            if numeric and not _is_ports(str(Fraction(str(port)).numerator)):
                return f"services.{name}.ports[{i}] is not a port: {port}"
    return None


_HUMAN = {"object": "mapping", "array": "list", "null": "null"}


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


def _explain(exc: fastjsonschema.JsonSchemaValueException, version: str, depth: int) -> str:
    """A sentence for a schema error, naming the key where it is (docker says "services.web Additional
    property imagee is not allowed"): schema.go's toError picks the most specific error; for a
    oneOf this looks inside the one form the value's type can be."""
    where = (exc.name or "data").removeprefix("data").removeprefix(".")
    place = where or "the top level"
    rule, value, spec = exc.rule, exc.value, exc.definition if isinstance(exc.definition, dict) else {}
    if rule == "additionalProperties" and isinstance(value, dict):
        known = spec.get("properties") or {}
        patterns = spec.get("patternProperties") or {}
        extra = [k for k in value if k not in known and not any(re.search(p, k) for p in patterns)]
        key = extra[0] if extra else "?"
        if not known:
            return f"{key!r} under {place} is not a valid name (letters, digits, '.', '_' and '-')"
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        extension = "; extension keys start with x-" if "^x-" in patterns else ""
        return (
            f"{where + '.' if where else ''}{key} is not a key Compose file version {version} has "
            f"{'here' if where else 'at the top level'}{hint}{extension}"
        )
    if rule == "type":
        expected = spec.get("type")
        names = [_HUMAN.get(str(t), str(t)) for t in (expected if isinstance(expected, list) else [expected])]
        expected_text, actual = " or ".join(names), _json_type(value)
        sentence = f"{place} must be {_a(expected_text)}, not {_a(actual)}"
        if where == "version" and isinstance(value, int | float):
            sentence += f' (write it in quotes, version: "{value}"; unquoted it is a number)'
        return sentence
    if rule == "required" and isinstance(value, dict):
        missing = [k for k in spec.get("required", []) if k not in value]
        return f"{place} needs {', '.join(missing)}"
    if rule == "enum":
        return f"{place} must be one of {', '.join(map(str, spec.get('enum', [])))}, not {value!r}"
    if rule == "format":
        what = {
            "duration": "a duration (Go syntax, e.g. 1m30s or 500ms)",
            "ports": "a port or port mapping (e.g. 8080:80)",
        }.get(spec.get("format", ""), str(spec.get("format")))
        return f"{place} is not {what}: {value!r}"
    if rule in ("oneOf", "anyOf") and depth < 5:
        inner = _inside_one_of(exc, version, depth)
        if inner:
            return inner
        return f"{place} has none of the forms Compose file version {version} allows: {value!r}"
    if rule == "uniqueItems":
        return f"{place} lists the same item twice"
    return (exc.message or "").removeprefix("data.").removeprefix("data ") or f"{place} is not valid"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _inside_one_of(exc: fastjsonschema.JsonSchemaValueException, version: str, depth: int) -> str | None:
    """The error of the one form in a oneOf/anyOf whose type the value has (a mapping with a wrong key
    where a string or a mapping may be: the mapping's error)."""
    schema = _schema(version)
    definitions = schema.get("definitions", {})
    forms = [_resolve(form, definitions) for form in (exc.rule_definition or [])]
    fitting = [form for form in forms if _json_type(exc.value) in _types_of(form)]
    if len(fitting) != 1:
        return None
    form = {**fitting[0], "id": schema.get("id", ""), "definitions": definitions}
    try:
        fastjsonschema.compile(form, handlers=_HANDLERS, formats=_FORMATS, use_default=False)(exc.value)
    except fastjsonschema.JsonSchemaValueException as inner:
        inner.name = (exc.name or "data") + (inner.name or "data").removeprefix("data")
        return _explain(inner, version, depth + 1)
    return None


def _resolve(form: Any, definitions: Mapping[str, Any]) -> dict[str, Any]:
    while isinstance(form, dict) and str(form.get("$ref", "")).startswith("#/definitions/"):
        form = definitions.get(form["$ref"].removeprefix("#/definitions/"), {})
    return form if isinstance(form, dict) else {}


def _types_of(form: Mapping[str, Any]) -> set[str]:
    declared = form.get("type")
    names = declared if isinstance(declared, list) else [declared] if declared else ["object", "array", "string"]
    human = {"object": "mapping", "array": "list", "integer": "number", "number": "number"}
    return {human.get(t, t) for t in names}


# --- Slipway's rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Findings:
    problems: list[str]
    warnings: list[str]
    secrets: tuple[str, ...]


def _check(document: Mapping[str, Any], local_volumes: bool) -> _Findings:
    """What the schema cannot say: images, undeclared references, node-local data, Slipway secrets."""
    problems: list[str] = []
    warnings: list[str] = []
    services: Mapping[str, Any] = document.get("services") or {}
    volumes: Mapping[str, Any] = document.get("volumes") or {}
    secrets: Mapping[str, Any] = document.get("secrets") or {}
    configs: Mapping[str, Any] = document.get("configs") or {}
    if not services:
        problems.append("defines no services")
    used: set[str] = set()
    for name in sorted(services):
        service = services[name]
        if not service.get("image"):
            problems.append(
                f"service {name} has no image: docker stack deploy runs images and builds none (`build` is "
                f"ignored), so give it `image:`"
            )
        for i, mount in enumerate(service.get("volumes") or []):
            _check_mount(name, f"services.{name}.volumes[{i}]", mount, volumes, local_volumes, problems, warnings)
        for section, declared in (("secrets", secrets), ("configs", configs)):
            for i, reference in enumerate(service.get(section) or []):
                source = reference if isinstance(reference, str) else reference.get("source")
                if not source:
                    problems.append(f"services.{name}.{section}[{i}] has no source")
                elif source not in declared:
                    problems.append(
                        f"service {name} uses {section[:-1]} {source!r}, which the file does not declare under "
                        f"the top-level {section}"
                    )
                elif section == "secrets":
                    used.add(source)
    for key, spec in volumes.items():
        if isinstance(spec, dict) and spec.get("external"):
            conflicts = [k for k in ("driver", "driver_opts", "labels") if spec.get(k)]
            if conflicts:
                problems.append(f"volumes.{key}: an external volume takes no {conflicts[0]} (docker refuses both)")
    slipway_secrets = []
    for key, spec in secrets.items():
        if spec.get("external"):
            if key in used:
                slipway_secrets.append(key)
            else:
                warnings.append(f"secrets.{key} is declared but no service uses it")
        elif not spec.get("driver"):
            problems.append(
                f"secrets.{key} has no source: declare it `external: true` and put its value in SSM Parameter "
                f"Store under {SECRETS_HOME}/{key}"
            )
    for key, spec in configs.items():
        if not spec.get("external"):
            problems.append(
                f"configs.{key} has no source: declare it `external: true`, or make it a secret (its value in "
                f"SSM Parameter Store under {SECRETS_HOME}/{key})"
            )
    return _Findings(problems, warnings, tuple(sorted(slipway_secrets)))


def _check_mount(
    service: str,
    where: str,
    mount: Any,
    volumes: Mapping[str, Any],
    local_volumes: bool,
    problems: list[str],
    warnings: list[str],
) -> None:
    if isinstance(mount, str):
        kind, source, error = _short_mount(mount)
        if error:
            problems.append(f"{where}: invalid volume spec {mount!r}: {error}")
            return
    else:
        kind, source = str(mount.get("type")), str(mount.get("source") or "")
    if kind == "bind":
        warnings.append(
            f"{where} binds {source} from the node: nodes are replaced whenever the node image changes, so "
            f"only what the node image put there is found"
        )
    elif kind == "volume" and not source:
        warnings.append(f"{where} is an anonymous volume: its data is lost when the task is replaced")
    elif kind == "volume":
        if source not in volumes:
            problems.append(
                f"service {service} mounts volume {source!r}, which the file does not declare under the top-level "
                f"volumes"
            )
        elif _is_local(volumes[source]) and local_volumes:
            warnings.append(
                f"service {service} keeps volume {source!r} on the node ({LOCAL_VOLUMES_OPT_IN}): its data is "
                f"lost when the node is replaced"
            )
        elif _is_local(volumes[source]):
            problems.append(
                f"service {service} mounts volume {source!r}, which uses the local driver: nodes are replaced "
                f"whenever the node image changes, so its data would be lost; give the volume a driver that keeps "
                f"data off the node, or set {LOCAL_VOLUMES_OPT_IN} to accept the loss"
            )


def _is_local(spec: Any) -> bool:
    """No driver given is the local driver; an external volume's driver is unknown, so local too."""
    if not isinstance(spec, dict) or spec.get("external"):
        return True
    return spec.get("driver") in (None, "", "local")


def _short_mount(spec: str) -> tuple[str, str, str | None]:
    """(type, source, error) of a short-syntax volume, as docker/cli internal/volumespec Parse reads
    it: `[source:]target[:mode]`; a source starting with '.', '/' or '~' (or a Windows path) binds."""
    if not spec:
        return "volume", "", "invalid empty volume spec"
    if len(spec) <= 2:
        return "volume", "", None
    source = target = ""
    buffer = ""
    for char in [*spec, None]:
        if char == ":" and len(buffer) == 1 and buffer.isalpha():  # a Windows drive, "c:"
            buffer += char
        elif char in (":", None):
            if not buffer:
                return "volume", source, "empty section between colons"
            if not source and char is None:
                target = buffer
            elif not source:
                source = buffer
            elif not target:
                target = buffer
            elif char == ":":
                return "volume", source, "too many colons"
            buffer = ""
        else:
            buffer += char
    return ("bind" if source and _is_file_path(source) else "volume"), source, None


def _is_file_path(source: str) -> bool:
    if source[0] in "./~":
        return True
    if len(source) == 1:
        return False
    return source.startswith("\\\\") or (source[0].isalpha() and source[1] == ":")


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
    current = _version(document, path) if "version" in document else RENDER_MIN_VERSION
    floor = max(VERSIONS.index(current), VERSIONS.index(RENDER_MIN_VERSION))
    problem = None
    for version in VERSIONS[floor:]:
        problem = _schema_problem({**document, "version": version}, version)
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
