"""Reading a Compose file's YAML as docker reads it (go.yaml.in/yaml/v3), within MAX_BYTES, MAX_VALUES
and MAX_DEPTH; its `version` as docker/cli reads it; the service keys docker stack deploy ignores.
Also `Dumper`, whose YAML yaml.v3 reads back as the same values. A YAML that cannot be read raises
errors.StackInvalid. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
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
# UnsupportedProperties and DeprecatedProperties (prints "Ignoring ..."); its ForbiddenProperties are
# the Compose Specification's, which compose_spec.py makes into what Swarm takes or refuses.
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
            problem = _node_problem(root)
            if problem:
                raise StackInvalid(f"{path}: {problem}")
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
