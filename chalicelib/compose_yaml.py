"""Reading a stack file as docker stack deploy does up to validating it (chalicelib/stack.py's `parse`
calls these in that order): the YAML, as go.yaml.in/yaml/v3 reads it and within MAX_BYTES, MAX_VALUES
and MAX_DEPTH; the `version`; the forbidden and ignored service keys; no secret or config from the
checkout; `${VAR}` interpolated with the manager's empty environment. Also `Dumper`, whose YAML
yaml.v3 reads back as the same values. Every refusal raises errors.StackInvalid. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

from chalicelib.compose_schema import DEFAULT_VERSION, VERSIONS, json_type
from chalicelib.errors import StackInvalid

MAX_BYTES = 1024 * 1024
# Values (scalars, lists, mappings) once every alias is expanded: a real stack has hundreds; yaml.v3
# refuses "excessive aliasing" in the same spirit (go.yaml.in/yaml/v3 decode.go allowedAliasRatio).
MAX_VALUES = 250_000
MAX_DEPTH = 64
SECRETS_HOME = "/slipway/<environment>/secrets"

# cli/compose/types/types.go, which cli/compose/loader/loader.go reads: docker stack deploy ignores
# UnsupportedProperties and DeprecatedProperties (prints "Ignoring ...") and refuses
# ForbiddenProperties in a service.
UNSUPPORTED_PROPERTIES = (  # `build` is too for docker, but Slipway builds it (chalicelib/builds.py)
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


class Dumper(_BaseDumper):  # type: ignore[misc]  # PyYAML is untyped
    """SafeDumper quotes what YAML 1.1 would type; this also quotes what only yaml.v3 would."""


for _tag, _pattern, _first in (
    ("int", r"^[-+]?0o[0-7_]+$", "-+0"),
    ("float", r"^[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$", "-+0123456789."),
):
    Dumper.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


def load(text: str | bytes, path: str) -> dict[str, Any]:
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
            refuse(path, [problem] if (problem := _node_problem(root)) else [])
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
        what = "empty" if document is None else f"a {json_type(document)}"
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


def refuse(path: str, problems: Sequence[str]) -> None:
    if problems:
        shown = list(problems[:10]) + ([f"and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise StackInvalid(f"{path}: " + "; ".join(shown))


def version(document: Mapping[str, Any], path: str) -> str:
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


def forbidden(services: Mapping[str, Any]) -> list[str]:
    return [
        f"services.{name}.{key}: docker stack deploy refuses it: {why}"
        for name in sorted(services)
        if isinstance(services[name], dict)
        for key, why in FORBIDDEN_PROPERTIES.items()
        if key in services[name]
    ]


def ignored(services: Mapping[str, Any]) -> list[str]:
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


def file_sources(document: Mapping[str, Any]) -> list[str]:
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


def interpolate(value: Any, parts: tuple[str, ...], where: str, problems: list[str]) -> Any:
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
        return {k: interpolate(v, (*parts, k), f"{where}.{k}" if where else k, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, (*parts, "[]"), f"{where}[{i}]", problems) for i, v in enumerate(value)]
    return value
