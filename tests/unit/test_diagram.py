"""The state-machine pictures in docs/pipeline.md: drawn from the ASL, every state and transition in them,
and stale ones caught (`make docs` redraws them)."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from slipway import diagram, statemachines

Definition = dict[str, Any]


def machine(name: str) -> Definition:
    result: Definition = json.loads(statemachines.path(name).read_text(encoding="utf-8"))
    return result


# A small parser for the Mermaid the generator writes: it reads each line back and refuses any
# line it does not know, so it is also the syntax check (ids declared once, blocks closed, labels
# quoted with nothing inside that would end them).
_NODE = re.compile(r'(\w+)(\(\(|\(\[|\{\{|\[|\{|\()"([^"]*)"(\)\)|\]\)|\}\}|\]|\}|\))')
_EDGE = re.compile(r'(\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)')
_SUBGRAPH = re.compile(r'subgraph (\w+)\["([^"]*)"\]')
_CLASS = re.compile(r"class (\w+(?:,\w+)*) (\w+)")
_CLASSDEF = re.compile(r"classDef (\w+) [\w:#,-]+")
_ENTITY = re.compile(r"#(quot|lt|gt|\d+);")
SHAPE = {
    ("[", "]"): "rectangle",
    ("{", "}"): "rhombus",
    ("{{", "}}"): "hexagon",
    ("(", ")"): "rounded",
    ("([", "])"): "stadium",
    ("((", "))"): "circle",
}


@dataclass
class Parsed:
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (shape, label)
    subgraphs: dict[str, str] = field(default_factory=dict)  # id -> label
    edges: list[tuple[str, str, str, bool]] = field(default_factory=list)  # src, dst, label, dashed
    classes: dict[str, str] = field(default_factory=dict)  # node id -> class

    def label_of(self, node: str) -> str:
        return self.nodes[node][1] if node in self.nodes else self.subgraphs[node]


def unescape(text: str) -> str:
    assert "$$" not in text and "|" not in text and "<" not in text and ">" not in text, text
    assert "#" not in _ENTITY.sub("", text), f"a bare # in {text!r}"
    named = {"quot": '"', "lt": "<", "gt": ">"}
    return _ENTITY.sub(lambda m: named.get(m.group(1)) or chr(int(m.group(1))), text)


def parse(text: str) -> Parsed:
    lines = text.split("\n")
    assert lines[0] == "flowchart TD" and lines[-1] == "", "a flowchart TD ending in a newline"
    out = Parsed()
    open_blocks: list[str] = []
    class_defs: set[str] = set()

    def declare(node: str) -> None:
        assert node not in out.nodes and node not in out.subgraphs, f"{node} declared twice"

    for number, raw in enumerate(lines[1:-1], start=2):
        line = raw.strip()
        assert raw.startswith("    ") and line, f"line {number}: {raw!r}"
        if m := _NODE.fullmatch(line):
            assert (m[2], m[4]) in SHAPE, f"line {number}: mismatched brackets {raw!r}"
            declare(m[1])
            out.nodes[m[1]] = (SHAPE[m[2], m[4]], unescape(m[3]))
        elif m := _SUBGRAPH.fullmatch(line):
            declare(m[1])
            out.subgraphs[m[1]] = unescape(m[2])
            open_blocks.append(m[1])
        elif line == "direction TB":
            assert open_blocks, f"line {number}: direction outside a subgraph"
        elif line == "end":
            assert open_blocks, f"line {number}: end without subgraph"
            open_blocks.pop()
        elif m := _EDGE.fullmatch(line):
            out.edges.append((m[1], m[4], unescape(m[3] or ""), m[2] == "-.->"))
        elif m := _CLASSDEF.fullmatch(line):
            class_defs.add(m[1])
        elif m := _CLASS.fullmatch(line):
            assert m[2] in class_defs, f"line {number}: class {m[2]} not defined"
            out.classes.update(dict.fromkeys(m[1].split(","), m[2]))
        else:
            raise AssertionError(f"line {number}: not Mermaid this generator writes: {raw!r}")
    assert not open_blocks, f"subgraphs never closed: {open_blocks}"
    known = out.nodes.keys() | out.subgraphs.keys()
    for source, target, _, _ in out.edges:
        assert {source, target} <= known, f"an edge to an undeclared node: {source} -> {target}"
    assert out.classes.keys() <= known
    return out


def expected_edges(definition: Definition) -> Counter[tuple[str, str, bool]]:
    """Every transition of the ASL, read here without the generator: (from, to, is a Catch)."""
    edges: Counter[tuple[str, str, bool]] = Counter({("Start", definition["StartAt"], False): 1})
    for name, state in definition["States"].items():
        for rule in state.get("Choices", []):
            edges[name, rule["Next"], False] += 1
        for key in ("Default", "Next"):
            if key in state:
                edges[name, state[key], False] += 1
        for catcher in state.get("Catch", []):
            edges[name, catcher["Next"], True] += 1
        if state.get("End") or state["Type"] in ("Succeed", "Fail"):
            edges[name, "End", False] += 1
    return edges


def readme_text() -> str:
    with diagram.DOC.open(encoding="utf-8", newline="") as f:
        return f.read()


def test_the_pipeline_doc_shows_the_state_machines_as_they_are() -> None:
    stale = diagram.stale(readme_text(), diagram.diagrams())
    assert not stale, (
        f"docs/pipeline.md's {', '.join(stale)} diagram no longer matches statemachines/*.asl.json: run `make docs`"
    )
    assert diagram.main(["--check"]) == 0


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_every_state_is_one_node_under_its_name_in_its_shape(name: str) -> None:
    definition = machine(name)
    parsed = parse(diagram.mermaid(definition))
    labels = Counter(label for _, label in parsed.nodes.values())
    assert labels == Counter([*definition["States"], "Start", "End"])
    shape_of = {label: shape for shape, label in parsed.nodes.values()}
    want = {
        "Task": "rectangle",
        "Choice": "rhombus",
        "Wait": "hexagon",
        "Pass": "rounded",
        "Succeed": "stadium",
        "Fail": "stadium",
    }
    for state_name, state in definition["States"].items():
        assert shape_of[state_name] == want[state["Type"]], state_name
    assert shape_of["Start"] == shape_of["End"] == "circle"


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_every_transition_is_an_arrow_and_nothing_else_is(name: str) -> None:
    definition = machine(name)
    parsed = parse(diagram.mermaid(definition))
    drawn = Counter((parsed.label_of(s), parsed.label_of(t), dashed) for s, t, _, dashed in parsed.edges)
    assert drawn == expected_edges(definition)


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_arrows_carry_the_errors_caught_and_the_choice_rules(name: str) -> None:
    definition = machine(name)
    parsed = parse(diagram.mermaid(definition))
    by_source: dict[str, list[tuple[str, str, bool]]] = {}
    for s, t, label, dashed in parsed.edges:
        by_source.setdefault(parsed.label_of(s), []).append((parsed.label_of(t), label, dashed))
    for state_name, state in definition["States"].items():
        arrows = by_source.get(state_name, [])
        for catcher in state.get("Catch", []):
            assert (catcher["Next"], ", ".join(catcher["ErrorEquals"]), True) in arrows
        if "Default" in state:
            assert (state["Default"], "Default", False) in arrows
        for number, rule in enumerate(state.get("Choices", []), start=1):
            label = next(
                lab
                for target, lab, dashed in arrows
                if target == rule["Next"] and lab not in ("", "Default") and not dashed
            )
            assert label == f"rule {number}" or rule.get("Variable", "$") in label, label
    assert not any("Lambda." in label or "TransientError" in label for _, _, label, _ in parsed.edges)


def test_a_tiny_machine_draws_exactly_so() -> None:
    definition = {
        "StartAt": 'Say "hi"',
        "States": {
            'Say "hi"': {
                "Type": "Task",
                "Resource": "${SayFunctionArn}",
                "Next": "Done?",
                "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2}],
                "Catch": [{"ErrorEquals": ["Boom", "States.Timeout"], "Next": "It's over"}],
            },
            "Done?": {
                "Type": "Choice",
                "Default": "Nap",
                "Choices": [{"Variable": "$.done", "BooleanEquals": True, "Next": "Yes"}],
            },
            "Nap": {"Type": "Wait", "Seconds": 1, "Next": "Tidy"},
            "Tidy": {"Type": "Pass", "End": True},
            "Yes": {"Type": "Succeed"},
            "It's over": {"Type": "Fail"},
        },
    }
    assert (
        diagram.mermaid(definition)
        == """\
flowchart TD
    begin(("Start"))
    s0["Say #quot;hi#quot;"]
    s1{"Done?"}
    s2{{"Nap"}}
    s3("Tidy")
    s4(["Yes"])
    s5(["It's over"])
    finish(("End"))
    begin --> s0
    s0 --> s1
    s0 -.->|"Boom, States.Timeout"| s5
    s1 -->|"$.done == true"| s4
    s1 -->|"Default"| s2
    s2 --> s3
    s3 --> finish
    s4 --> finish
    s5 --> finish
    classDef succeed stroke:#1a7f37,stroke-width:3px
    class s4 succeed
    classDef fail stroke:#cf222e,stroke-width:3px
    class s5 fail
"""
    )


def test_the_same_definition_draws_the_same_bytes() -> None:
    definition = machine("deploy")
    assert diagram.mermaid(definition) == diagram.mermaid(copy.deepcopy(definition))
    assert diagram.diagrams() == diagram.diagrams()


def test_names_that_would_break_mermaid_are_escaped_and_read_back() -> None:
    awkward = 'Say "hi" & <bye> #1 | `x` $$.a end;'
    definition = {"StartAt": awkward, "States": {awkward: {"Type": "Succeed"}}}
    parsed = parse(diagram.mermaid(definition))
    assert parsed.nodes["s0"] == ("stadium", awkward)


@pytest.mark.parametrize(
    ("rule", "label"),
    [
        ({"Variable": "$.a", "BooleanEquals": False}, "$.a == false"),
        ({"Variable": "$.s", "StringEquals": "OK"}, '$.s == "OK"'),
        ({"Variable": "$.n", "NumericLessThanEquals": 3}, "$.n <= 3"),
        ({"Variable": "$.n", "NumericGreaterThanPath": "$.m"}, "$.n > $.m"),
        ({"Variable": "$.t", "TimestampLessThan": "2024-01-01T00:00:00Z"}, '$.t < "2024-01-01T00:00:00Z"'),
        ({"Variable": "$.s", "StringMatches": "log-*"}, '$.s matches "log-*"'),
        ({"Variable": "$.x", "IsPresent": False}, "$.x is not present"),
        ({"Variable": "$.x", "IsNull": True}, "$.x is null"),
        ({"Not": {"Variable": "$.x", "IsString": True}}, "not ($.x is a string)"),
        (
            {"And": [{"Variable": "$.a", "IsPresent": True}, {"Variable": "$.a", "BooleanEquals": True}]},
            "$.a is present and $.a == true",
        ),
        (
            {
                "Or": [
                    {"Variable": "$.a", "BooleanEquals": True},
                    {"And": [{"Variable": "$.b", "BooleanEquals": True}, {"Variable": "$.c", "BooleanEquals": True}]},
                ]
            },
            "$.a == true or ($.b == true and $.c == true)",
        ),
        ({"Condition": "{% $states.input.n > 1 %}"}, "{% $states.input.n > 1 %}"),
        ({"Variable": "$.a_rather_long_path.that_goes_on.and_on", "StringEquals": "and on"}, "rule 7"),
        ({"Variable": "$.x", "SomethingNew": 1}, "rule 7"),
    ],
)
def test_a_choice_rule_reads_as_its_condition_or_its_number(rule: dict[str, Any], label: str) -> None:
    assert diagram.rule_label({**rule, "Next": "x"}, 7) == label


def test_parallel_and_map_draw_their_states_inside_them() -> None:
    definition = {
        "StartAt": "Fan out",
        "States": {
            "Fan out": {
                "Type": "Parallel",
                "Next": "Each",
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Failed"}],
                "Branches": [
                    {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}},
                    {
                        "StartAt": "B",
                        "States": {
                            "B": {"Type": "Wait", "Seconds": 1, "Next": "C"},
                            "C": {"Type": "Task", "Resource": "x", "End": True},
                        },
                    },
                ],
            },
            "Each": {
                "Type": "Map",
                "End": True,
                "ItemProcessor": {"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "x", "End": True}}},
            },
            "Failed": {"Type": "Fail"},
        },
    }
    parsed = parse(diagram.mermaid(definition))
    assert sorted(label for _, label in parsed.nodes.values()) == ["A", "B", "C", "D", "End", "Failed", "Start"]
    assert {"Fan out", "Each", "Branch 1", "Branch 2"} <= set(parsed.subgraphs.values())
    drawn = {(parsed.label_of(s), parsed.label_of(t), dashed) for s, t, _, dashed in parsed.edges}
    assert drawn == {
        ("Start", "Fan out", False),
        ("Fan out", "Each", False),
        ("Fan out", "Failed", True),
        ("B", "C", False),
        ("Each", "End", False),
        ("Failed", "End", False),
    }


README_BEFORE = """# Title

Words before.

<!-- diagram:deploy:start -->
```mermaid
flowchart TD
    old --> drawing
```
<!-- diagram:deploy:end -->

Words between.

<!-- diagram:teardown:start -->
<!-- diagram:teardown:end -->

Words after.
"""


def test_update_doc_replaces_only_what_is_between_the_markers() -> None:
    updated = diagram.update_doc(
        README_BEFORE, {"deploy": "flowchart TD\n    a\n", "teardown": "flowchart TD\n    b\n"}
    )
    assert updated == README_BEFORE.replace(
        "```mermaid\nflowchart TD\n    old --> drawing\n```\n",
        "```mermaid\nflowchart TD\n    a\n```\n",
    ).replace(
        "<!-- diagram:teardown:start -->\n", "<!-- diagram:teardown:start -->\n```mermaid\nflowchart TD\n    b\n```\n"
    )
    assert diagram.update_doc(updated, {"deploy": "flowchart TD\n    a\n"}) == updated
    with pytest.raises(ValueError, match="diagram:prune:start"):
        diagram.update_doc(README_BEFORE, {"prune": "flowchart TD\n"})


def test_an_asl_change_without_make_diagrams_is_caught() -> None:
    drawn = diagram.diagrams()
    readme = diagram.update_doc(README_BEFORE, drawn)
    assert diagram.stale(readme, drawn) == []
    changed = machine("teardown")
    changed["States"]["Deregister images"]["Next"] = "Teardown failed"
    assert diagram.stale(readme, {**drawn, "teardown": diagram.mermaid(changed)}) == ["teardown"]
    assert diagram.stale(README_BEFORE.replace("<!-- diagram:teardown:end -->", ""), drawn) == ["deploy", "teardown"]


def test_check_names_the_stale_diagram_and_write_redraws_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(diagram.update_doc(README_BEFORE, {"teardown": diagram.diagrams()["teardown"]}))
    assert diagram.main(["--check", "--doc", str(readme)]) == 1
    err = capsys.readouterr().err
    assert "deploy diagram does not match statemachines/deploy.asl.json" in err
    assert "run `make docs`" in err and "teardown" not in err
    assert diagram.main(["--write", "--doc", str(readme)]) == 0
    assert diagram.main(["--check", "--doc", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nWords before.\n") and text.endswith("Words after.\n")
    assert "Words between." in text and "old --> drawing" not in text
