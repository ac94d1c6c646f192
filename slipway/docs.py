"""Everything generated from the code, and the check that it is current.

Developer tooling, never shipped to Lambda. Each generated text is derived from one source that
a person edits, and written next to what it describes:

- chalicelib/steps/index.py: each Task's Lambda and its phase module, from the @task decorators;
- the state-machine diagrams and the state -> function -> file index in docs/pipeline.md;
- the settings table in docs/settings.md, from chalicelib/settings.py's declarations.

`--check` also finds every relative link and anchor in README.md and docs/ that leads nowhere.

    python -m slipway.docs --write   # regenerate (`make docs`)
    python -m slipway.docs --check   # exit 1 naming each stale text (tests/unit/test_docs.py)

A generated block inside a Markdown file sits between `<!-- generated:<name>:start -->` and
`<!-- generated:<name>:end -->`; a generated file is written whole.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from slipway import PROJECT_DIR, diagram, statemachines

INDEX: Final = PROJECT_DIR / "chalicelib" / "steps" / "index.py"
DOCS: Final = PROJECT_DIR / "docs"

_INDEX_HEAD: Final = '''"""Generated from the @task decorators by `make docs` (slipway/docs.py); do not edit.

Each Task's Lambda name and the phase module that holds its step, so that app.py can wire every
Lambda without importing any phase. tests/unit/test_registry.py fails when this is stale.
"""

TASK_MODULES: dict[str, str] = {
'''


def task_index() -> str:
    """chalicelib/steps/index.py as the @task decorators make it."""
    from chalicelib.steps import all_tasks

    tasks = all_tasks()
    rows = "".join(f'    "{name}": "{tasks[name].module}",\n' for name in pipeline_order(tasks))
    return _INDEX_HEAD + rows + "}\n"


def pipeline_order(names: Iterable[str]) -> list[str]:
    """The Lambda names in the order the state machines first invoke them (deploy, then
    teardown); any that no machine invokes last, by name."""
    order: dict[str, int] = {}
    for machine in statemachines.MACHINES:
        for _, function in statemachines.task_states(machine):
            order.setdefault(function, len(order))
    return sorted(names, key=lambda name: (order.get(name, len(order)), name))


def state_index() -> str:
    """docs/pipeline.md's table: every Task state the console shows, the Lambda it invokes and
    the file that holds its step."""
    from chalicelib.steps import all_tasks

    tasks = all_tasks()
    rows = ["| machine | state (as the console shows it) | function | file |", "| --- | --- | --- | --- |"]
    for machine in statemachines.MACHINES:
        for state, function in statemachines.task_states(machine):
            path = tasks[function].module.replace(".", "/") + ".py"
            rows.append(f"| {machine} | {state} | `{function}` | [{path}](../{path}) |")
    return "\n".join(rows) + "\n"


def _stage_values(variable: str, default: str | None) -> str:
    """How the stages in .chalice/config.json set a variable, where they differ from its default."""
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    common = config.get("environment_variables", {})
    notes = []
    for stage, body in config["stages"].items():
        variables = {**common, **body.get("environment_variables", {})}
        expected = (default or "").replace("{environment}", variables.get("SLIPWAY_ENVIRONMENT", stage))
        value = variables.get(variable)
        if value is not None and value != expected and variable not in ("SLIPWAY_STAGE", "SLIPWAY_ENVIRONMENT"):
            notes.append(f"{stage} `{value}`")
    return "; " + ", ".join(notes) if notes else ""


def settings_table() -> str:
    """docs/settings.md's table, from chalicelib/settings.py's SETTINGS and the stages' values."""
    from chalicelib.settings import SETTINGS

    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        shown = (setting.default or "").replace("{environment}", "<env>")
        default = setting.shown or (f"`{shown}`" if shown else "none")
        stages = _stage_values(setting.variable, setting.default)
        rows.append(f"| `{setting.variable}` | {default}{stages} | {setting.meaning} |")
    return "\n".join(rows) + "\n"


def _diagram(name: str) -> Callable[[], str]:
    return lambda: diagram.block(diagram.diagrams()[name])


# Each generated file, by its path, and the function that writes its text.
FILES: Final[Mapping[Path, Callable[[], str]]] = {INDEX: task_index}
# Each generated block, by the file that holds it and the name in its markers.
BLOCKS: Final[Mapping[Path, Mapping[str, Callable[[], str]]]] = {
    DOCS / "pipeline.md": {
        "diagram:deploy": _diagram("deploy"),
        "diagram:teardown": _diagram("teardown"),
        "generated:states": lambda: "\n" + state_index(),
    },
    DOCS / "settings.md": {"generated:settings": lambda: "\n" + settings_table()},
}


def _span(text: str, name: str) -> tuple[int, int] | None:
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start_marker) != 1 or text.count(end_marker) != 1:
        return None
    start, end = text.index(start_marker) + len(start_marker), text.index(end_marker)
    return (start, end) if start <= end else None


def _generated(path: Path) -> str:
    """`path`'s text as it should be: the whole file, or the file with each block regenerated."""
    if path in FILES:
        return FILES[path]()
    text = path.read_text(encoding="utf-8")
    for name, make in BLOCKS[path].items():
        span = _span(text, name)
        if span is None:
            raise ValueError(f"{path.relative_to(PROJECT_DIR)} must hold <!-- {name}:start --> and :end once each")
        text = text[: span[0]] + make() + text[span[1] :]
    return text


def stale() -> list[str]:
    """The generated texts that differ from what their sources make now, by path."""
    out = []
    for path in [*FILES, *BLOCKS]:
        try:
            if not path.exists() or path.read_text(encoding="utf-8") != _generated(path):
                out.append(str(path.relative_to(PROJECT_DIR)))
        except ValueError as error:
            out.append(f"{path.relative_to(PROJECT_DIR)} ({error})")
    return out


def write() -> list[str]:
    """Regenerate every stale text; the paths written."""
    written = []
    for path in [*FILES, *BLOCKS]:
        text = _generated(path)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(str(path.relative_to(PROJECT_DIR)))
    return written


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped,
    spaces as '-', a repeated one numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else str(path)


def broken_links(paths: Iterable[Path] | None = None) -> list[str]:
    """Every relative link or anchor in the README and docs/ that leads nowhere, as file: link."""
    files = list(paths) if paths is not None else [PROJECT_DIR / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for target in _LINK.findall(_FENCE.sub("", text)):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked here (no network)
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            missing = not linked.exists() or (
                bool(anchor) and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8"))
            )
            if missing:
                broken.append(f"{_shown(path)}: {target}")
    return broken


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slipway.docs", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate every stale text")
    action.add_argument("--check", action="store_true", help="exit 1 naming each stale text")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            print(f"wrote {path}", file=sys.stderr)
        return 0
    problems = [f"{path} is stale: run `make docs`" for path in stale()] + [
        f"broken link in {link}" for link in broken_links()
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
