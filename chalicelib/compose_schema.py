"""The Compose file schemas: docker/cli's own, which docker stack deploy validates a stack file against
(one per version in VERSIONS), and the Compose Specification's (SPEC, compose-go's
schema/compose-spec.json, what docker compose validates against), vendored in chalicelib/schemas/ and
compiled with fastjsonschema and the `ports` and `duration` formats docker/cli registers.
`schema_problem` gives the first error as a sentence naming the key, `schema_problems` one per
service and one for the rest. No I/O but reading those schema files.

compose-spec.json declares JSON Schema draft 2020-12, which fastjsonschema does not know; it uses no
keyword that draft-07 lacks ($defs is only a place its $refs point into), so it is compiled as draft-07
(tests/unit/test_compose_spec.py checks it still uses none)."""

from __future__ import annotations

import copy
import difflib
import functools
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import fastjsonschema

from chalicelib.durations import parse_duration

SCHEMAS = Path(__file__).parent / "schemas"
# The schema files vendored in SCHEMAS, oldest first; cli/compose/schema/schema.go defaultVersion.
VERSIONS = tuple(f"3.{minor}" for minor in range(14))
DEFAULT_VERSION = "3.13"
SPEC = "spec"  # the Compose Specification's schema, beside the versions
SPEC_FILE = "compose-spec.json"


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
    """A schema by version, or the Compose Specification's (SPEC), read as draft-07 (module docstring)."""
    if version == SPEC:
        spec: dict[str, Any] = json.loads((SCHEMAS / SPEC_FILE).read_text())
        return {**spec, "$schema": "http://json-schema.org/draft-07/schema#"}
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"config_schema_v{version}.json").read_text())
    return loaded


def schema(version: str) -> dict[str, Any]:
    """The schema itself (read-only by convention: it is cached)."""
    return _schema(version)


def label(version: str) -> str:
    """How a message names the schema."""
    return "the Compose Specification" if version == SPEC else f"docker stack deploy (Compose file version {version})"


def schema_problems(document: Mapping[str, Any], version: str) -> list[str]:
    """Every service's first error and the first of the rest of the file (a file with three broken
    services is told about all three), or [] if it validates."""
    first = schema_problem(document, version)
    if first is None:
        return []
    head = {k: v for k, v in document.items() if k in ("version",)}
    services = document.get("services")
    found: list[str] = []
    if isinstance(services, dict):
        rest = schema_problem({**document, "services": {}}, version)
        found += [rest] if rest else []
        for name, service in services.items():
            problem = schema_problem({**head, "services": {name: service}}, version)
            if problem and problem not in found:
                found.append(problem)
    return found or [first]


@functools.cache
def _validator(version: str) -> Callable[[Any], Any]:
    """fastjsonschema directly, not Powertools' `validate`: that one takes these draft-04 schemas and
    their formats (its `formats=`), but calls fastjsonschema.validate, which compiles the schema anew
    on every call, 0.2 s for one of these; compiled once per version, a check takes well under a
    millisecond. The same library either way. use_default=False: the schemas' `default`s must not be
    written into the document (`version: 3.x` would appear in it)."""
    # A copy: fastjsonschema rewrites every $ref it compiles into an absolute one, in place.
    return fastjsonschema.compile(
        copy.deepcopy(_schema(version)), handlers=_HANDLERS, formats=_FORMATS, use_default=False
    )


def schema_problem(document: Mapping[str, Any], version: str) -> str | None:
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


def json_type(value: Any) -> str:
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
            f"{where + '.' if where else ''}{key} is not a key {label(version)} has "
            f"{'here' if where else 'at the top level'}{hint}{extension}"
        )
    if rule == "type":
        expected = spec.get("type")
        names = [_HUMAN.get(str(t), str(t)) for t in (expected if isinstance(expected, list) else [expected])]
        expected_text, actual = " or ".join(names), json_type(value)
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
        return f"{place} has none of the forms {label(version)} allows: {value!r}"
    if rule == "uniqueItems":
        return f"{place} lists the same item twice"
    return (exc.message or "").removeprefix("data.").removeprefix("data ") or f"{place} is not valid"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _inside_one_of(exc: fastjsonschema.JsonSchemaValueException, version: str, depth: int) -> str | None:
    """The error of the one form in a oneOf/anyOf whose type the value has (a mapping with a wrong key
    where a string or a mapping may be: the mapping's error)."""
    schema = _schema(version)
    home = "$defs" if version == SPEC else "definitions"
    definitions = schema.get(home, {})
    forms = [resolve(form, definitions, home) for form in (exc.rule_definition or [])]
    fitting = [form for form in forms if json_type(exc.value) in types_of(form)]
    if len(fitting) != 1:
        return None
    try:
        _form_validator(version, json.dumps(fitting[0], sort_keys=True))(exc.value)
    except fastjsonschema.JsonSchemaValueException as inner:
        inner.name = (exc.name or "data") + (inner.name or "data").removeprefix("data")
        return _explain(inner, version, depth + 1)
    return None


@functools.lru_cache(maxsize=256)
def _form_validator(version: str, form_json: str) -> Callable[[Any], Any]:
    """One form of a oneOf compiled alone, with the schema's definitions (cached: compiling takes
    tens of milliseconds, and a file with many services may need the same form for each)."""
    schema = _schema(version)
    home = "$defs" if version == SPEC else "definitions"
    identity = {"$id": schema["$id"]} if "$id" in schema else {"id": schema.get("id", "")}
    form = {**json.loads(form_json), "$schema": schema.get("$schema", ""), **identity, home: schema.get(home, {})}
    return fastjsonschema.compile(copy.deepcopy(form), handlers=_HANDLERS, formats=_FORMATS, use_default=False)


def resolve(form: Any, definitions: Mapping[str, Any], home: str = "definitions") -> dict[str, Any]:
    while isinstance(form, dict) and str(form.get("$ref", "")).startswith(f"#/{home}/"):
        form = definitions.get(form["$ref"].removeprefix(f"#/{home}/"), {})
    return form if isinstance(form, dict) else {}


def types_of(form: Mapping[str, Any]) -> set[str]:
    declared = form.get("type")
    names = declared if isinstance(declared, list) else [declared] if declared else ["object", "array", "string"]
    human = {"object": "mapping", "array": "list", "integer": "number", "number": "number"}
    return {human.get(t, t) for t in names}
