"""Whether a step's answer fits the shape chalicelib/steps/state.py declares for it: the check the
pipeline tests run on every answer of every execution (tests/conftest.py), and which shape lives at
each ResultPath of a machine. Only the tests need them, so they are not shipped to Lambda with the
declarations."""

import types
import typing
from typing import Any, NotRequired, Union, get_args, get_origin, get_type_hints

from chalicelib.steps import state

# What a run holds before any ResultPath is written: Prepare's answer replaces the deploy's input
# (ResultPath `$`), and the teardown's input is the environment to remove.
_STARTS_WITH = {"deploy": (state.Prepared, ("deployment", "poll_seconds")), "teardown": (None, ("environment",))}
_RUNS = {"deploy": state.DeployRun, "teardown": state.TeardownRun}
# 'Remove this deployment's nodes' and 'Check removed nodes are gone' share `$.removal` in the
# deploy machine: the first answer (Terminated) is read by no one but the Wait that follows.
SHARED_PATHS: dict[str, dict[str, tuple[type, ...]]] = {"deploy": {"$.removal": (state.Terminated, state.Removal)}}


def result_paths(machine: str) -> dict[str, type]:
    """`machine`'s ResultPaths and the shape at each, read from its run's declaration."""
    root, inputs = _STARTS_WITH[machine]
    paths = {f"$.{key}": shape for key, shape in get_type_hints(_RUNS[machine]).items() if key not in inputs}
    return {"$": root, **paths} if root else paths


def shapes_at(machine: str, path: str) -> tuple[type, ...]:
    """The shapes a step may leave at `path` of `machine`'s state (KeyError: none declared)."""
    return SHARED_PATHS.get(machine, {}).get(path) or (result_paths(machine)[path],)


def conforms(shape: type, value: object, where: str = "$") -> list[str]:
    """What in `value` does not fit `shape` (empty: it fits). Checks keys, required and extra,
    and the JSON types of the values, recursively."""
    return _check(shape, value, where)


def _check(expected: Any, value: object, where: str) -> list[str]:
    if expected is Any:
        return []
    if typing.is_typeddict(expected):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        hints = get_type_hints(expected)
        required: frozenset[str] = expected.__required_keys__
        problems = [f"{where}.{key}: missing" for key in sorted(required - value.keys())]
        problems += [
            f"{where}.{key}: not declared in {expected.__name__}" for key in sorted(value.keys() - hints.keys())
        ]
        for key in sorted(value.keys() & hints.keys()):
            problems += _check(hints[key], value[key], f"{where}.{key}")
        return problems
    origin = get_origin(expected)
    if origin is NotRequired:
        return _check(get_args(expected)[0], value, where)
    if origin in (Union, types.UnionType):
        options = [_check(arg, value, where) for arg in get_args(expected)]
        return [] if any(not found for found in options) else min(options, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        (item,) = get_args(expected)
        return [p for i, v in enumerate(value) for p in _check(item, v, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        _, item = get_args(expected)
        return [p for k, v in value.items() for p in _check(item, v, f"{where}.{k}")]
    if expected is type(None):
        return [] if value is None else [f"{where}: expected null, got {value!r}"[:200]]
    # JSON has no int/bool distinction Python keeps: True is an int to isinstance, never to a step.
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    return [] if ok else [f"{where}: expected {expected.__name__}, got {type(value).__name__}"]
