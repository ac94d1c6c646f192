"""Shared fixtures: the embedded emulator, moto for adapter tests, and push helpers."""

from __future__ import annotations

import json
import logging
import os
from unittest import mock

import pytest

from slipway.emulator import Emulator
from slipway.harness import QUICK_WAIT_SCALE
from tests import shapes

# Metrics stay on: with POWERTOOLS_METRICS_DISABLED, Powertools never clears them between calls.
QUIET = {"POWERTOOLS_LOG_LEVEL": "WARNING"}
logging.getLogger("moto").setLevel(logging.CRITICAL)


# Modules whose tests run on one pytest-xdist worker, one after the other: they share a module
# fixture (one converge, one deployment) or a Docker network of a fixed subnet. xdist's own
# `--dist loadgroup` would take that from an xdist_group mark, but its way of tagging the test ids
# has no effect on pytest 9 (Node.nodeid is derived, not stored), so the grouping is done here.
ONE_WORKER = (
    "tests/infra/test_swarm_node_role.py",
    "tests/realnodes/test_docker_nodes.py",
    "tests/realnodes/test_stack_real.py",
    "tests/deploy/test_rehearsal.py",
    "tests/realnodes/test_mesh_real.py",
)
# What is sent to the workers first, longest first (warm figures of `pytest --durations=0`): the
# real-node pipeline tests (one to three and a half minutes each, every one on a node network of
# its own) and the modules above, then the emulated pipeline; so that no long test starts last.
FIRST = (
    "tests/realnodes/test_pipeline.py",
    *ONE_WORKER,
    "tests/pipeline/test_faults.py",
    "tests/pipeline/",
)


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(FIRST) if nodeid.startswith(prefix)), len(FIRST))


# The tiers (markers registered in pyproject.toml), given by what a test needs, not written on
# each test: `make test-fast` runs what needs none of them.
TIERS = {"realnodes": "tests/realnodes/", "infra": "tests/infra/"}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with its tier, then collect in FIRST's order (stable: each module's tests
    keep theirs); the scheduler below hands the units out in that order."""
    for item in items:
        for marker, prefix in TIERS.items():
            if item.nodeid.startswith(prefix):
                item.add_marker(marker)
        if {"make_emulator", "emulator"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("emulator")
    items.sort(key=lambda item: _rank(item.nodeid))


def _node_images() -> set[str]:
    """The node images on this machine, if Docker runs here."""
    from slipway import realnodes

    return set() if realnodes.docker_available() else set(realnodes.node_images())


def pytest_sessionstart(session) -> None:
    # In the controller only (xdist workers have `workerinput`): the node images there before.
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_IMAGES_BEFORE] = _node_images()


def pytest_sessionfinish(session) -> None:
    """Remove the node images this session baked once every worker is done with them: tests on
    other workers launch nodes from the same images (the working tree's, a commit's), so a test
    removing what it baked at its end would pull one from under another's next launch."""
    before = None if hasattr(session.config, "workerinput") else session.config.stash.get(_IMAGES_BEFORE, None)
    if before is not None:
        from slipway import realnodes

        realnodes.remove_images(sorted(_node_images() - before))


_IMAGES_BEFORE = pytest.StashKey[set[str]]()


@pytest.hookimpl(optionalhook=True)  # so that `-p no:xdist` still runs the suite, serially
def pytest_xdist_make_scheduler(config, log):
    """Every test is a unit of work of its own, except those of ONE_WORKER's modules: each module
    is one unit. Units go out in collection order (FIRST's), not xdist's by number of tests."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER else nodeid

    return Scheduler(config, log)


def shape_problems(emu: Emulator) -> list[str]:
    """Every answer a task's step gave in this emulator (each Lambda invocation it dispatched) that
    does not fit the shape its step declares it returns: the shape chalicelib/steps/state.py gives
    the step's ResultPath (tests/unit/test_state.py holds the ASL to those annotations)."""
    import typing

    from chalicelib.steps import all_tasks

    tasks = all_tasks()
    problems = []
    for function, result in emu.results:
        task = function.rsplit("-", 1)[-1]  # slipway-<stage>-<task>
        if task not in tasks or isinstance(result, BaseException):
            continue
        shape = typing.get_type_hints(tasks[task].function)["return"]
        problems += [f"{task}: {p}" for p in shapes.conforms(shape, result)]
    return problems


@pytest.fixture
def make_emulator():
    """Start an emulator with the given options: poll interval 0 and, on emulated nodes, one-second
    retries waited out in a fifth of a second (tests do not sleep out waits and backoffs); real
    nodes keep the real backoffs and whole seconds, a real dockerd may need them. At the end, every
    step's answer in every execution must fit its declared shape (steps/state.py)."""
    started = []

    def start(**kwargs) -> Emulator:
        kwargs.setdefault("poll_seconds", 0)
        kwargs.setdefault("quick_retries", not kwargs.get("real_nodes"))
        kwargs.setdefault("wait_scale", 1 if kwargs.get("real_nodes") else QUICK_WAIT_SCALE)
        patcher = mock.patch.dict(os.environ, QUIET)
        patcher.start()
        emu = Emulator(**kwargs)
        emu.start()
        started.append((emu, patcher))
        return emu

    yield start
    problems = []
    for emu, patcher in reversed(started):
        try:
            problems += shape_problems(emu)
        finally:
            emu.stop()
            patcher.stop()
    assert not problems, "steps answered outside their declared shapes:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def require():
    """`require(missing)`: skip the test when this machine lacks a prerequisite, saying which
    (`missing`, None when all is there); on CI (CI=true) fail it instead: CI runs every tier."""

    def need(missing: str | None) -> None:
        if missing:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI must run this test, but {missing}")
            pytest.skip(missing)

    return need


@pytest.fixture
def emulator(make_emulator) -> Emulator:
    return make_emulator()


@pytest.fixture
def every_log_record():
    """Every record the functions log (Powertools' logger `slipway`), at every level, with its
    extra keys, as JSON: what CloudWatch Logs would keep."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(json.dumps({**record.__dict__, "message": record.getMessage()}, default=str))

    logger = logging.getLogger("slipway")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)
