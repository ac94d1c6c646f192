"""Load the ASL definitions and fill their ${Name} placeholders, as SAM's DefinitionSubstitutions.

A regex, not string.Template: Template would also rewrite `$$.Execution.Name` and `$.x` paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from slipway import PROJECT_DIR

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")
MACHINES = ("deploy", "teardown")


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
