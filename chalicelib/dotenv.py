"""Env files (`env_file:`, and the `.env` beside a Compose file), read as docker compose reads them:
compose-go's dotenv parser (dotenv/parser.go at the commit named in tests/fixtures/compose-go/README.md,
whose own cases tests/unit/test_dotenv.py runs), ported.

`KEY=value`, `KEY: value` or `export KEY=value`; `#` starts a comment line, and ` #` a comment after an
unquoted value; single quotes keep everything as written; double quotes take `\\n`-style escapes and
may span lines; unquoted and double-quoted values interpolate `${VAR}` (interpolation.py) from the
variables given, then from the file's earlier keys; a lone `KEY` takes the variable's value when it has
one and is left out otherwise. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from chalicelib import interpolation

_EXPORT = re.compile(r"^export\s+")
_ESCAPES = re.compile(r"(\\(?:[abcfnrtv$\"\\]|0\d{0,3}))")
_SPACE = "\t\v\f\r \x85\xa0"  # parser.go isSpace: white space but line breaks
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}


class DotenvError(ValueError):
    """The file cannot be read: the message names the line."""


@dataclass
class Parsed:
    values: dict[str, str] = field(default_factory=dict)
    unset: dict[str, list[str]] = field(default_factory=dict)  # variable -> keys whose value needs it
    invalid: list[str] = field(default_factory=list)  # keys whose value has a $ that starts no variable


def parse(
    text: str, lookup: Callable[[str], str | None] = lambda _: None, start: Mapping[str, str] | None = None
) -> Parsed:
    """The file's keys and values over `start` (the files read before it, as godotenv reads several
    into one map); DotenvError if it cannot be read."""
    return _Parser().parse(text.removeprefix("\ufeff"), lookup, dict(start or {}))


class _Parser:
    def __init__(self) -> None:
        self.line = 1

    def parse(self, src: str, lookup: Callable[[str], str | None], start: dict[str, str]) -> Parsed:
        out = Parsed(start)
        cutset = src
        while True:
            cutset = self._statement_start(cutset)
            if cutset == "":
                return out
            key, left, inherited = self._key(cutset)
            if " " in key:
                raise DotenvError(f"line {self.line}: key cannot contain a space")
            if inherited:
                value = lookup(key)
                if value is not None:
                    out.values[key] = value
                cutset = left
                continue
            value, cutset = self._value(key, left, out, lookup)
            out.values[key] = value

    def _statement_start(self, src: str) -> str:
        while True:
            pos = self._non_space(src)
            if pos == -1:
                return ""
            src = src[pos:]
            if src[0] != "#":
                return src
            pos = src.find("\n")
            if pos == -1:
                return ""
            src = src[pos:]

    def _non_space(self, src: str) -> int:
        for i, char in enumerate(src):
            if char == "\n":
                self.line += 1
            if not char.isspace():
                return i
        return -1

    def _key(self, src: str) -> tuple[str, str, bool]:
        if _EXPORT.match(src):
            src = src.removeprefix("export").lstrip(_SPACE)
        key, offset, inherited = "", 0, False
        for i, char in enumerate(src):
            if char in _SPACE:
                continue
            if char in "=:\n":
                key, offset, inherited = src[:i], i + 1, char == "\n"
                break
            if char in "_.-[]" or char.isalpha() or char.isdigit():
                continue
            # The line is not quoted: what follows the name may be a value, which no message may carry.
            raise DotenvError(f"line {self.line}: unexpected character {char!r} in a variable name")
        else:
            # No `=`, `:` or line break: parser.go leaves the key empty and reads on from the start.
            key, offset, inherited = "", 0, False
        if src == "":
            raise DotenvError("zero length string")
        if inherited and " " not in key:
            self.line += 1
        return key.rstrip(), src[offset:].lstrip(_SPACE), inherited

    def _value(self, key: str, src: str, out: Parsed, lookup: Callable[[str], str | None]) -> tuple[str, str]:
        quote = src[:1] if src[:1] in ("'", '"') else ""
        if not quote:
            value, _, rest = src.partition("\n")
            self.line += 1
            value = value.split(" #", 1)[0].rstrip()
            return self._expand(key, value, out, lookup), rest
        escaped = False
        chars: list[str] = []
        for i in range(1, len(src)):
            char = src[i]
            if char == "\n":
                self.line += 1
            if char != quote:
                if not escaped and char == "\\":
                    escaped = True
                    continue
                if escaped:
                    escaped = False
                    chars.append("\\")
                chars.append(char)
                continue
            if escaped:
                escaped = False
                chars.append(char)
                continue
            value = "".join(chars)
            if quote == '"':
                value = self._expand(key, _expand_escapes(value), out, lookup)
            return value, src[i + 1 :]
        raise DotenvError(f"line {self.line}: unterminated quoted value of {key or 'a key'}")

    @staticmethod
    def _expand(key: str, value: str, out: Parsed, lookup: Callable[[str], str | None]) -> str:
        def look(name: str) -> str | None:
            found = lookup(name)
            return found if found is not None else out.values.get(name)

        result = interpolation.substitute(value, look)
        for unset in result.unset:
            out.unset.setdefault(unset.name, []).append(key)
        if result.invalid:
            out.invalid.append(key)
        return result.value if not result.invalid else value


def _expand_escapes(text: str) -> str:
    """parser.go expandEscapes: the shell's escapes; `\\$` becomes `$$` (a literal `$` once interpolated)."""

    def one(match: re.Match[str]) -> str:
        escape = match.group(0)
        if escape == "\\$":
            return "$$"
        if escape.startswith("\\0"):
            digits = escape[2:]
            return chr(int(digits, 8)) if digits and len(digits) == 3 and int(digits, 8) < 256 else escape
        return _SIMPLE.get(escape[1:], escape)

    return _ESCAPES.sub(one, text)
