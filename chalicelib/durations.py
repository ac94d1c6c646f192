"""Durations, as Go's time.ParseDuration reads them and Duration.String writes them (src/time/format.go,
time.go): the healthcheck and update_config durations of a stack file. Pure."""

from __future__ import annotations

import re

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
