"""Load the ASL definitions and fill their ${Name} placeholders, as SAM's DefinitionSubstitutions.

A regex, not string.Template: Template would also rewrite `$$.Execution.Name` and `$.x` paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from slipway import PROJECT_DIR

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")
MACHINES = ("deploy", "teardown")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def path(name: str) -> Path:
    return PROJECT_DIR / "statemachines" / f"{name}.asl.json"


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(text: str, substitutions: dict[str, str]) -> str:
    missing = placeholders(text) - substitutions.keys()
    if missing:
        raise KeyError(f"no substitution for {sorted(missing)}")
    rendered = PLACEHOLDER.sub(lambda m: substitutions[m.group(1)], text)
    json.loads(rendered)  # a substitution must never break the document
    return rendered


def function_placeholder(function_name: str) -> str:
    """`check_bake` -> `CheckBakeFunctionArn`, the name the ASL uses for that Lambda."""
    return "".join(part.capitalize() for part in function_name.split("_")) + "FunctionArn"


def function_for(placeholder: str) -> str:
    """`CheckBakeFunctionArn` -> `check_bake`: the Lambda a Task's Resource names (the inverse
    of function_placeholder)."""
    if not placeholder.endswith("FunctionArn"):
        raise ValueError(f"placeholder {placeholder!r} does not name a function (…FunctionArn)")
    return _CAMEL.sub("_", placeholder.removesuffix("FunctionArn")).lower()


def task_states(name: str) -> list[tuple[str, str]]:
    """Every Task state of a machine, (console name, Lambda name), in the order of its document,
    nested states (Parallel branches, Map iterators) where they stand."""
    found: list[tuple[str, str]] = []

    def visit(states: dict[str, Any]) -> None:
        for state_name, state in states.items():
            if state["Type"] == "Task":
                placeholder = PLACEHOLDER.fullmatch(state["Resource"])
                if placeholder is None:
                    raise ValueError(f"{name}: Task {state_name!r} names no ${{…FunctionArn}} placeholder")
                found.append((state_name, function_for(placeholder.group(1))))
            for branch in state.get("Branches", []):
                visit(branch["States"])
            for key in ("Iterator", "ItemProcessor"):
                if key in state:
                    visit(state[key]["States"])

    visit(json.loads(path(name).read_text())["States"])
    return found


def quick_retries(definition: str) -> str:
    """The definition with every Retry's waits at ASL's least, one second each time (interval 1,
    backoff 1): the same errors retried the same number of times, so a test of a retry does not
    sit out its backoff (4 attempts: 4 s, not 2 + 4 + 8 + 16). For the tests' emulator only."""
    document = json.loads(definition)

    def visit(node: object) -> None:
        if isinstance(node, dict):
            for retrier in node.get("Retry") or []:
                retrier.update(IntervalSeconds=1, BackoffRate=1.0)
                retrier.pop("MaxDelaySeconds", None)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(document)
    return json.dumps(document)
