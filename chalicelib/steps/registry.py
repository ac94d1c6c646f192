"""The console's state names, on the functions that run them: `@task("Provision network")`.

Grepping a state's name as the Step Functions console shows it lands on the function its Task
invokes. The Lambda's name is the function's (the ASL's `${<CamelName>FunctionArn}` placeholder,
in camel case); one function may serve several states (every "Report … to GitHub" is
report_outcome). tests/unit/test_registry.py holds this to the ASL both ways.

app.py does not import the phases to find their functions: it reads `index.py`, generated from
these decorators (`make docs`), and imports a phase when its Lambda is first invoked, so a cold
start pays for its own phase only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Task:
    name: str  # the Lambda's: slipway-<stage>-<name>
    module: str
    states: tuple[str, ...]  # the console's names of the Task states that invoke it
    function: Callable[..., Any]


TASKS: dict[str, Task] = {}  # filled as each phase module is imported


def task(*states: str) -> Callable[[F], F]:
    """Register the decorated step as the Lambda of these Task states, by their console names."""
    if not states:
        raise TypeError("@task needs the console name of at least one state")

    def register(function: F) -> F:
        name = function.__name__
        known = TASKS.get(name)
        if known is not None and known.module != function.__module__:
            raise ValueError(f"two steps are named {name}: in {known.module} and {function.__module__}")
        TASKS[name] = Task(name, function.__module__, tuple(states), function)
        return function

    return register


def load(module: str, name: str) -> Callable[..., Any]:
    """The step `name` of the phase `module`, imported on first use."""
    step: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return step
