"""The contract between each ASL ResultPath and the Python that writes and reads it
(chalicelib/steps/state.py), held to the state machines as they are."""

from __future__ import annotations

import collections.abc
import inspect
import json
import re
import typing
from pathlib import Path

import pytest

from chalicelib.steps import all_tasks, state
from slipway import statemachines
from tests import shapes

MACHINES = Path(__file__).resolve().parents[2] / "statemachines"
INPUTS = {"deploy": state.DeployRun, "teardown": state.TeardownRun}


def machine(kind: str) -> dict:
    return json.loads((MACHINES / f"{kind}.asl.json").read_text())


def task_states(kind: str) -> list[tuple[str, dict]]:
    return [(name, s) for name, s in machine(kind)["States"].items() if s["Type"] == "Task"]


def step_of(task: dict):
    """The step a Task invokes: its Resource is ${<CamelName>FunctionArn}, the registry's snake_name."""
    placeholder = re.fullmatch(r"\$\{(\w+)\}", task["Resource"]).group(1)
    return all_tasks()[statemachines.function_for(placeholder)].function


@pytest.mark.parametrize("kind", ["deploy", "teardown"])
def test_every_result_path_of_a_machine_has_a_declared_shape(kind):
    # Given every ResultPath a Task or a Catch writes, when looked up, then each has a shape.
    paths = {s.get("ResultPath", "$") for _, s in task_states(kind)}
    paths |= {c["ResultPath"] for s in machine(kind)["States"].values() for c in s.get("Catch", [])}
    assert paths - shapes.result_paths(kind).keys() == set()
    assert shapes.result_paths(kind).keys() - paths == set(), "declared, but no state writes it"


@pytest.mark.parametrize("kind", ["deploy", "teardown"])
def test_each_task_is_written_by_the_step_that_returns_the_shape_at_its_result_path(kind):
    for name, task in task_states(kind):
        returned = typing.get_type_hints(step_of(task))["return"]
        allowed = shapes.shapes_at(kind, task.get("ResultPath", "$"))
        assert returned in allowed or set(typing.get_args(returned)) & set(allowed), (name, returned, allowed)


@pytest.mark.parametrize("kind", ["deploy", "teardown"])
def test_each_task_takes_what_its_state_passes(kind):
    # A Task with Parameters passes exactly its declared input's keys; one without passes the run.
    for name, task in task_states(kind):
        (parameter,) = inspect.signature(step_of(task)).parameters.values()
        taken = typing.get_type_hints(step_of(task))[parameter.name]
        if "Parameters" in task:
            keys = {k.removesuffix(".$") for k in task["Parameters"]}
            assert typing.is_typeddict(taken) and keys == set(typing.get_type_hints(taken)), (name, taken)
        else:
            assert taken is INPUTS[kind] or typing.get_origin(taken) is collections.abc.Mapping, (name, taken)


def test_a_shape_check_names_what_is_missing_extra_or_of_the_wrong_type():
    good = {"new": ["i-1"], "current": ["i-1"], "old": []}
    assert shapes.conforms(state.Nodes, good) == []
    assert shapes.conforms(state.Nodes, {"new": ["i-1"], "current": "i-1", "extra": 1}) == [
        "$.old: missing",
        "$.extra: not declared in Nodes",
        "$.current: expected a list, got str",
    ]
    assert shapes.conforms(state.Image, {"ami_id": None}) == []
    assert shapes.conforms(state.Readiness, {"ready": True, "attempts": True, "online": 1, "wanted": 1}) == [
        "$.attempts: expected int, got bool"
    ]
