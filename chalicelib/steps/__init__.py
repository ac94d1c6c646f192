"""One function per state-machine Task, one module per pipeline phase as the console shows it.

A step takes the state its Task passes (the execution's state, or what the Task's `Parameters`
build) and returns a small answer that the Task puts at its `ResultPath`; `state.py` declares
every one of those shapes. Each step gathers facts through the adapters, asks plans.py what to do,
and does it. Waiting is the state machine's job: a step that finds work unfinished says so and
returns at once.

A step carries the console names of the states that run it (`@task("Provision network")`,
registry.py); docs/pipeline.md lists every state with its function and file. Importing this
package imports no phase: each Lambda imports only its own (app.py, index.py).

    prepare   'Prepare deployment'                       queue     'Look for earlier runs'
    bake      image lookup, bake, bake check             network   'Provision network'
    nodes     launch, readiness                          swarm     join/init, promotion, command checks
    health    the health gate                            retire    old nodes out, terminated; old images
    report    commit statuses, the stopped-run report    teardown  the undo and the teardown machine
    lease     one run at a time, for certain: the environment's lease, taken in the queue, given up at the end
    prune     the schedule and its results                load_balancer  the load balancer and its targets
    heal      a node lost between pushes: the heal and the drift check
"""

from __future__ import annotations

import importlib
import pkgutil

from chalicelib.steps.registry import TASKS, Task

# Modules of this package that hold no step.
_NOT_PHASES = frozenset({"common", "index", "registry", "state"})


def phases() -> list[str]:
    """Every phase module's full name, in name order."""
    return sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_PHASES)


def all_tasks() -> dict[str, Task]:
    """Every registered Task step by Lambda name, every phase imported (tooling and tests: a
    Lambda imports only its own phase)."""
    for module in phases():
        importlib.import_module(module)
    return dict(sorted(TASKS.items()))
