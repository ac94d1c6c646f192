"""Every console state is found by its name: the @task registry, the ASL and app.py agree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chalicelib.steps import all_tasks, registry
from chalicelib.steps.index import TASK_MODULES
from slipway import PROJECT_DIR, docs, statemachines


def _asl_states() -> set[tuple[str, str]]:
    return {pair for machine in statemachines.MACHINES for pair in statemachines.task_states(machine)}


def test_each_task_state_is_registered_on_the_function_its_placeholder_names():
    # Given every Task state of both machines, then its console name is on the function it invokes,
    # and every name a decorator gives is a Task state invoking that function: both ways, exactly.
    registered = {(state, name) for name, task in all_tasks().items() for state in task.states}
    assert registered == _asl_states()


def test_grepping_a_state_name_lands_on_its_function():
    # The name stands in the source of the module that defines the step, in the decorator above it.
    for name, task in all_tasks().items():
        source = (PROJECT_DIR / (task.module.replace(".", "/") + ".py")).read_text()
        decorator = source[: source.index(f"\ndef {name}(")].rsplit("@task(", 1)[1]
        for state in task.states:
            assert f'"{state}"' in decorator, (name, state)


def test_the_index_app_py_reads_is_the_registry():
    assert {name: task.module for name, task in all_tasks().items()} == TASK_MODULES
    assert list(TASK_MODULES) == docs.pipeline_order(TASK_MODULES)
    assert not docs.stale(), "run `make docs`"


def test_app_wires_one_lambda_per_task_and_imports_no_phase():
    # Importing app.py (what every Lambda's cold start does) loads no phase module; each is
    # imported by its own Lambda's first invocation.
    code = (
        "import sys, app; "
        "print(sorted(f.name for f in app.app.pure_lambda_functions)); "
        "print(sorted(m for m in sys.modules if m.startswith('chalicelib.steps.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, check=True)
    functions, modules = (eval(line) for line in out.stdout.splitlines())
    assert set(TASK_MODULES) <= set(functions)
    assert modules == ["chalicelib.steps.index", "chalicelib.steps.registry"]


def test_a_wired_task_imports_its_phase_and_runs_its_step_on_first_invocation():
    # Given a cold app.py, when one Task's Lambda is invoked (with no settings in the environment), then
    # its phase was loaded, not another, and the step's own refusal came back.
    code = """
import sys, types, app
context = types.SimpleNamespace(function_name="slipway-dev-release_lease", memory_limit_in_mb=256,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:slipway-dev-release_lease",
    aws_request_id="1")
try:
    app.release_lease({}, context)
except Exception as exc:
    print(type(exc).__module__, type(exc).__name__)
print(sorted(m for m in sys.modules if m.startswith("chalicelib.steps.")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, check=True)
    refusal, modules = out.stdout.splitlines()
    assert refusal == "chalicelib.errors ConfigurationError"  # the step reads its settings: none here
    assert "chalicelib.steps.lease" in modules and "chalicelib.steps.stack" not in modules


def test_a_state_named_on_two_steps_of_one_name_is_refused():
    with pytest.raises(TypeError):
        registry.task()

    def release_lease(event):  # the same name as a registered step, from another module
        return event

    release_lease.__module__ = "elsewhere"
    with pytest.raises(ValueError, match="two steps are named release_lease"):
        registry.task("Somewhere")(release_lease)


def test_app_py_imports_only_chalice_and_what_ships():
    # ruff bans the tooling's imports in what ships (pyproject.toml); app.py, the wiring, is held
    # here to less: Chalice and chalicelib, nothing else.
    import ast

    tree = ast.parse((PROJECT_DIR / "app.py").read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert {m.split(".")[0] for m in modules if m} <= {"__future__", "collections", "typing", "chalice", "chalicelib"}
