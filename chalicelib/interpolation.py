"""`${VAR}` in a Compose file, as docker compose interpolates it: compose-go's template package
(template/template.go, at the commit named in tests/fixtures/compose-go/README.md, whose own cases
tests/unit/test_interpolation.py runs), ported: `$$` is a literal `$`; `$NAME` and `${NAME}` its
value; `${NAME:-default}` / `${NAME-default}` the default when unset or empty / unset;
`${NAME:+other}` / `${NAME+other}` the other when set and not empty / set; `${NAME:?why}` /
`${NAME?why}` an error when unset or empty / unset; defaults nest (`${A:-${B}}`).

One difference, on purpose: docker compose puts an empty string for a variable that is neither set
nor defaulted (with a warning). Slipway reports it (`Unset`), so a deploy never runs with a value a
team forgot to set. Then `interpolate` walks a document (values, never keys) and casts the values
docker's loader casts; `unset_problems` and `redacted` make what it found into messages that name
variables, never their values. Pure: the variables come in as a mapping."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# template.go's DefaultPattern: `$$`, `$NAME`, `${NAME[:][-+?]...}` (greedy to the last `}`: the
# match is cut at its first balanced `}` below), or a `$` that starts none of them (invalid).
_PATTERN = re.compile(
    r"\$(?i:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|\{(?:(?P<braced>[_a-z][_a-z0-9]*(?::?[-+?](.*))?)\}|(?P<invalid>)))"
)
_OPERATORS = (":?", "?", ":-", "-", ":+", "+")


@dataclass(frozen=True)
class Unset:
    """A variable a template needs that has no value: `why` is the template's own message for
    `${NAME:?why}` (None for a bare `${NAME}`)."""

    name: str
    why: str | None = None
    required: bool = False


@dataclass
class Result:
    value: str
    unset: list[Unset] = field(default_factory=list)
    invalid: bool = False


Lookup = Callable[[str], str | None]


def substitute(template: str, lookup: Lookup) -> Result:
    """`template` with its variables replaced; what had no value is listed in `unset` (replaced by
    an empty string, as docker compose does), a `$` that starts no variable sets `invalid`."""
    result = Result("")
    result.value = _PATTERN.sub(lambda match: _replace(match.group(0), lookup, result), template)
    return result


def _replace(substring: str, lookup: Lookup, result: Result) -> str:
    """template.go DefaultReplacementAppliedFunc."""
    operator = _first_operator(substring)
    closing = _first_closing_brace(substring)
    rest = ""
    if closing > -1:
        rest, substring = substring[closing + 1 :], substring[: closing + 1]
    match = _PATTERN.fullmatch(substring) or _PATTERN.match(substring)
    if match is None:
        result.invalid = True
        return ""
    if match.group("escaped"):
        return "$"
    name = match.group("named")
    braced = name is None
    name = name or match.group("braced")
    if not name:
        result.invalid = True
        return ""
    if braced and operator and operator in name:
        value = _apply(name, operator, lookup, result)
        return value + _nested(rest, lookup, result)
    found = lookup(name)
    if found is None:
        result.unset.append(Unset(name))
        return ""
    return found


def _nested(text: str, lookup: Lookup, result: Result) -> str:
    inner = substitute(text, lookup)
    result.unset += inner.unset
    result.invalid = result.invalid or inner.invalid
    return inner.value


def _apply(substitution: str, operator: str, lookup: Lookup, result: Result) -> str:
    name, _, argument = substitution.partition(operator)
    value = lookup(name)
    if operator in (":-", "-"):
        if value is None or (operator == ":-" and value == ""):
            return _nested(argument, lookup, result)
        return value
    if operator in (":+", "+"):
        if value is not None and (operator == "+" or value != ""):
            return _nested(argument, lookup, result)
        return value or ""
    if value is None or (operator == ":?" and value == ""):  # ":?" and "?"
        why = Result("")
        message = _nested(argument, lookup, why)
        result.unset.append(Unset(name, message, required=True))
        return ""
    return value


def _first_operator(template: str) -> str | None:
    """getSubstitutionFunctionForTemplate: the operator found first in the match (ties: the
    order of _OPERATORS, which is template.go's before its sort)."""
    found = [(template.find(op), i, op) for i, op in enumerate(_OPERATORS) if op in template]
    return min(found)[2] if found else None


def _first_closing_brace(text: str) -> int:
    """getFirstBraceClosingIndex: the `}` that closes the first `{` (a `{` skips the next character)."""
    depth, i = 0, 0
    while i < len(text):
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        if text[i] == "{":
            depth += 1
            i += 1
        i += 1
    return -1


# --- a whole document ---------------------------------------------------------------------------


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


# cli/compose/loader/interpolate.go interpolateTypeCastMapping (compose-go has the same paths): an
# interpolated value at these paths ("*" any key, "[]" any list item) is cast, so that
# `replicas: ${N:-2}` validates as an integer.
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
    ((*_S, "init"), _to_bool),
    ((*_S, "oom_kill_disable"), _to_bool),
    ((*_S, "pids_limit"), _to_int),
    ((*_S, "cpus"), _to_float),
    ((*_S, "depends_on", "*", "required"), _to_bool),
    ((*_S, "depends_on", "*", "restart"), _to_bool),
    ((*_S, "read_only"), _to_bool),
    ((*_S, "oom_score_adj"), _to_int),
    ((*_S, "scale"), _to_int),
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


@dataclass
class Findings:
    """What interpolating a document found: each variable without a value and where it is used,
    `$`s that start no variable, values that do not cast."""

    unset: dict[str, list[str]] = field(default_factory=dict)  # variable -> the keys that use it
    required: dict[str, str] = field(default_factory=dict)  # variable -> the template's own message
    used: set[str] = field(default_factory=set)  # every variable looked up
    problems: list[str] = field(default_factory=list)


def interpolate(value: Any, lookup: Lookup, findings: Findings, parts: tuple[str, ...] = (), where: str = "") -> Any:
    """Every string value of `value` (never a key), recursively; what was wrong goes to `findings`."""
    if isinstance(value, str):
        if "$" not in value:
            return value

        def look(name: str) -> str | None:
            findings.used.add(name)
            return lookup(name)

        result = substitute(value, look)
        for unset in result.unset:
            findings.unset.setdefault(unset.name, []).append(where or "the top level")
            if unset.required and unset.why:
                findings.required.setdefault(unset.name, unset.why)
        if result.invalid:
            findings.problems.append(f"{where} has a $ that starts no variable: write $$ for a literal $")
        cast = _cast(parts) if result.value != value else None
        if cast is None or result.unset:
            return result.value
        try:
            return cast(result.value)
        except ValueError as exc:
            findings.problems.append(f"{where} is not {exc} once its variables are put in")
            return result.value
    if isinstance(value, Mapping):
        return {
            k: interpolate(v, lookup, findings, (*parts, k), f"{where}.{k}" if where else k) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [interpolate(v, lookup, findings, (*parts, "[]"), f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def unset_problems(findings: Findings, home: str) -> list[str]:
    """One problem per variable without a value, naming where it is used and the parameter to create."""
    found = []
    for name, places in sorted(findings.unset.items()):
        shown = ", ".join(dict.fromkeys(places[:3])) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
        why = findings.required.get(name)
        found.append(
            f"${{{name}}} has no value{f' ({why})' if why else ''} ({shown}): set it, aws ssm put-parameter "
            f"--name {home}/{name} --value ..., or give it a default, ${{{name}:-value}}"
        )
    return found


def redacted(texts: list[str], variables: Mapping[str, str], used: set[str]) -> list[str]:
    """`texts` with the value of every variable the file used replaced by its name: a message that
    quotes a value (a schema error naming what it found) must not carry it to the execution's error
    or a log line. Values shorter than 4 characters are left (they would hide ordinary words)."""
    forms = [
        (form, name)
        for name in used
        if name in variables and len(variables[name]) >= 4
        for form in {variables[name], repr(variables[name])[1:-1]}  # as written, and as a message quotes it
    ]
    forms.sort(key=lambda pair: -len(pair[0]))  # a value that holds another is replaced whole
    redacted = []
    for text in texts:
        for form, name in forms:
            text = text.replace(form, f"<the value of {name}>")
        redacted.append(text)
    return redacted
