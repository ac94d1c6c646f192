"""Draw the state machines as Mermaid flowcharts for docs/pipeline.md, and keep it in step.

Developer tooling, never shipped to Lambda. `mermaid(definition)` turns an ASL document into a
`flowchart TD` drawing the graph the Step Functions console shows: a Start node, every state under
its exact name (one shape per type), Next, Default and each Choice rule as arrows, each Catch as a
dashed arrow labelled with its errors, and the states that end the run into an End node. Retries
are not drawn, as in the console. GitHub renders Mermaid in Markdown, so nothing is installed to
look at it.

    python -m slipway.diagram --write   # redraw the blocks in docs/pipeline.md (`make docs`)
    python -m slipway.diagram --check   # exit 1 naming each stale block (tests/unit/test_diagram.py)

A block sits between `<!-- diagram:<machine>:start -->` and `<!-- diagram:<machine>:end -->`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from slipway import PROJECT_DIR, statemachines

DOC: Final = PROJECT_DIR / "docs" / "pipeline.md"
START: Final = "begin"  # node ids; "end" is a Mermaid keyword, so neither is used
END: Final = "finish"
MAX_RULE_LABEL: Final = 50  # longer conditions are labelled "rule N"

# Shapes by state type: (opening, closing) around the quoted label.
SHAPES: Final[Mapping[str, tuple[str, str]]] = {
    "Task": ("[", "]"),
    "Choice": ("{", "}"),
    "Wait": ("{{", "}}"),
    "Pass": ("(", ")"),
    "Succeed": ("([", "])"),
    "Fail": ("([", "])"),
}
CLASSES: Final = (
    ("succeed", "Succeed", "stroke:#1a7f37,stroke-width:3px"),
    ("fail", "Fail", "stroke:#cf222e,stroke-width:3px"),
)
NESTED: Final = ("Parallel", "Map")

# Characters a quoted Mermaid label cannot hold as they are, as Mermaid's entity codes.
_ESCAPES: Final = {
    "#": "#35;",
    '"': "#quot;",
    "&": "#38;",
    "<": "#lt;",
    ">": "#gt;",
    "|": "#124;",
    "`": "#96;",
}
_MARKERS: Final = "<!-- diagram:{name}:start -->", "<!-- diagram:{name}:end -->"


@dataclass(frozen=True)
class Edge:
    """One arrow: from a state (or START) to a state (or END); `dashed` for a Catch."""

    source: str
    target: str
    label: str = ""
    dashed: bool = False


def label(text: str) -> str:
    """`text` as a quoted Mermaid label: entity codes for what would end or change it."""
    out = "".join(_ESCAPES.get(c, " " if c in "\r\n\t" else c) for c in text)
    return '"' + out.replace("$$", "#36;#36;") + '"'  # $$...$$ would be read as KaTeX


def transitions(states: Mapping[str, Any], start_at: str, *, top: bool = True) -> list[Edge]:
    """Every arrow of one scope, in document order: Start, then per state Choice rules, Default,
    Next, Catch and End. A nested scope (a Parallel branch, a Map's processor) has no Start or End
    node: its first state is the one drawn first and its ends end the branch."""
    edges = [Edge(START, start_at)] if top else []
    for name, state in states.items():
        for number, rule in enumerate(state.get("Choices", ()), start=1):
            edges.append(Edge(name, rule["Next"], rule_label(rule, number)))
        if "Default" in state:
            edges.append(Edge(name, state["Default"], "Default"))
        if "Next" in state:
            edges.append(Edge(name, state["Next"]))
        for catcher in state.get("Catch", ()):
            edges.append(Edge(name, catcher["Next"], ", ".join(catcher["ErrorEquals"]), True))
        if top and (state.get("End") is True or state["Type"] in ("Succeed", "Fail")):
            edges.append(Edge(name, END))
    return edges


def rule_label(rule: Mapping[str, Any], number: int) -> str:
    """A Choice rule's condition in short (`$.bake.status == "SUCCEEDED"`), or `rule N`."""
    try:
        text = condition(rule)
    except (KeyError, TypeError, ValueError):
        text = None
    return text if text is not None and len(text) <= MAX_RULE_LABEL else f"rule {number}"


_OPERATORS: Final = {
    "Equals": "==",
    "LessThan": "<",
    "LessThanEquals": "<=",
    "GreaterThan": ">",
    "GreaterThanEquals": ">=",
    "Matches": "matches",
}
_COMPARISON: Final = re.compile(
    r"(String|Numeric|Boolean|Timestamp)"
    r"(Equals|LessThan|LessThanEquals|GreaterThan|GreaterThanEquals|Matches)(Path)?"
)
_TESTS: Final = {
    "IsPresent": "present",
    "IsNull": "null",
    "IsString": "a string",
    "IsNumeric": "numeric",
    "IsBoolean": "a boolean",
    "IsTimestamp": "a timestamp",
}


def condition(rule: Mapping[str, Any]) -> str | None:
    """The condition of a Choice rule (JSONPath or JSONata) as text; None if it is not known."""
    if "Condition" in rule:  # JSONata
        return str(rule["Condition"])
    if "And" in rule or "Or" in rule:
        joiner, parts = ("and", rule["And"]) if "And" in rule else ("or", rule["Or"])
        inner = [condition(part) for part in parts]
        if any(text is None for text in inner):
            return None
        nested = [f"({text})" if " and " in text or " or " in text else text for text in inner if text is not None]
        return f" {joiner} ".join(nested)
    if "Not" in rule:
        inner_text = condition(rule["Not"])
        return None if inner_text is None else f"not ({inner_text})"
    variable = str(rule["Variable"])
    for key, value in rule.items():
        if key in _TESTS:
            return f"{variable} is {'' if value else 'not '}{_TESTS[key]}"
        match = _COMPARISON.fullmatch(key)
        if match:
            _, operator, path = match.groups()
            shown = str(value) if path else json.dumps(value)
            return f"{variable} {_OPERATORS[operator]} {shown}"
    return None


def mermaid(definition: Mapping[str, Any]) -> str:
    """The ASL `definition` as a Mermaid `flowchart TD`, byte for byte the same for the same input."""
    states: Mapping[str, Any] = definition["States"]
    lines = ["flowchart TD", f'    {START}(("Start"))']
    ids = _scope(states, "s", lines, depth=1)
    lines.append(f'    {END}(("End"))')
    lines.extend(_edges(transitions(states, definition["StartAt"]), {START: START, END: END, **ids}, depth=1))
    lines.extend(_nested_edges(states, "s", depth=1))
    kinds = [(ids[name], state["Type"]) for name, state in states.items()]
    kinds += _nested_types(states, "s")
    for css, kind, style in CLASSES:
        members = [node for node, node_kind in kinds if node_kind == kind]
        if members:
            lines.append(f"    classDef {css} {style}")
            lines.append(f"    class {','.join(members)} {css}")
    return "\n".join(lines) + "\n"


def _scope(states: Mapping[str, Any], prefix: str, lines: list[str], depth: int) -> dict[str, str]:
    """Declare one scope's nodes (a Parallel or Map as a subgraph of its own scopes); their ids."""
    indent = "    " * depth
    ids: dict[str, str] = {}
    for index, (name, state) in enumerate(states.items()):
        node = f"{prefix}{index}"
        ids[name] = node
        kind = state["Type"]
        if kind in NESTED:
            lines.append(f"{indent}subgraph {node}[{label(name)}]")
            lines.append(f"{indent}    direction TB")
            for branch_index, (title, branch) in enumerate(_branches(state)):
                branch_node = f"{node}_{branch_index}"
                lines.append(f"{indent}    subgraph {branch_node}[{label(title)}]")
                lines.append(f"{indent}        direction TB")
                _scope(branch["States"], f"{branch_node}_s", lines, depth + 2)
                lines.append(f"{indent}    end")
            lines.append(f"{indent}end")
            continue
        opening, closing = SHAPES.get(kind, SHAPES["Task"])
        lines.append(f"{indent}{node}{opening}{label(name)}{closing}")
    return ids


def _branches(state: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if state["Type"] == "Parallel":
        for number, branch in enumerate(state["Branches"], start=1):
            yield f"Branch {number}", branch
    else:
        yield "Item processor", state.get("ItemProcessor") or state["Iterator"]


def _nested_edges(states: Mapping[str, Any], prefix: str, depth: int) -> Iterator[str]:
    for index, state in enumerate(states.values()):
        if state["Type"] not in NESTED:
            continue
        for branch_index, (_, branch) in enumerate(_branches(state)):
            branch_prefix = f"{prefix}{index}_{branch_index}_s"
            inner = {name: f"{branch_prefix}{i}" for i, name in enumerate(branch["States"])}
            yield from _edges(transitions(branch["States"], branch["StartAt"], top=False), inner, depth)
            yield from _nested_edges(branch["States"], branch_prefix, depth)


def _nested_types(states: Mapping[str, Any], prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for index, state in enumerate(states.values()):
        if state["Type"] not in NESTED:
            continue
        for branch_index, (_, branch) in enumerate(_branches(state)):
            branch_prefix = f"{prefix}{index}_{branch_index}_s"
            for i, inner in enumerate(branch["States"].values()):
                out.append((f"{branch_prefix}{i}", inner["Type"]))
            out += _nested_types(branch["States"], branch_prefix)
    return out


def _edges(edges: Sequence[Edge], ids: Mapping[str, str], depth: int) -> Iterator[str]:
    indent = "    " * depth
    for edge in edges:
        arrow = "-.->" if edge.dashed else "-->"
        text = f"|{label(edge.label)}|" if edge.label else ""
        yield f"{indent}{ids[edge.source]} {arrow}{text} {ids[edge.target]}"


def diagrams() -> dict[str, str]:
    """Each state machine's drawing, by name, from statemachines/<name>.asl.json as it is now."""
    return {
        name: mermaid(json.loads(statemachines.path(name).read_text(encoding="utf-8")))
        for name in statemachines.MACHINES
    }


def block(diagram: str) -> str:
    """What goes between a machine's two markers."""
    return "\n```mermaid\n" + diagram + "```\n"


def _span(text: str, name: str) -> tuple[int, int]:
    start_marker, end_marker = (m.format(name=name) for m in _MARKERS)
    if text.count(start_marker) != 1 or text.count(end_marker) != 1:
        raise ValueError(f"the document must hold {start_marker} and {end_marker} once each")
    start = text.index(start_marker) + len(start_marker)
    end = text.index(end_marker)
    if end < start:
        raise ValueError(f"{end_marker} comes before {start_marker}")
    return start, end


def update_doc(text: str, diagrams: Mapping[str, str]) -> str:
    """`text` with each named block replaced by that diagram; the rest left as it is."""
    for name in sorted(diagrams):
        start, end = _span(text, name)
        text = text[:start] + block(diagrams[name]) + text[end:]
    return text


def stale(text: str, diagrams: Mapping[str, str]) -> list[str]:
    """The names whose block differs from its diagram (or whose markers are missing)."""
    out = []
    for name in sorted(diagrams):
        try:
            start, end = _span(text, name)
        except ValueError:
            out.append(name)
            continue
        if text[start:end] != block(diagrams[name]):
            out.append(name)
    return out


def problem(text: str, name: str) -> str:
    """Why `name`'s block is stale, for a person: what to run."""
    try:
        _span(text, name)
    except ValueError as error:
        return str(error)
    return f"the {name} diagram does not match statemachines/{name}.asl.json: run `make docs`"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slipway.diagram", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="redraw the diagrams in docs/pipeline.md")
    action.add_argument("--check", action="store_true", help="exit 1 if a diagram is stale")
    parser.add_argument("--doc", type=Path, default=DOC, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    doc: Path = args.doc
    with doc.open(encoding="utf-8", newline="") as f:
        text = f.read()
    drawn = diagrams()
    if args.check:
        names = stale(text, drawn)
        for name in names:
            print(f"{doc.name}: {problem(text, name)}", file=sys.stderr)
        return 1 if names else 0
    try:
        updated = update_doc(text, drawn)
    except ValueError as error:
        print(f"{doc.name}: {error}", file=sys.stderr)
        return 1
    if updated != text:
        with doc.open("w", encoding="utf-8", newline="") as f:
            f.write(updated)
        print(f"{doc.name}: diagrams redrawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
