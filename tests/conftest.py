"""Shared fixtures: the embedded emulator, moto for adapter tests, and push helpers."""

from __future__ import annotations

import json
import logging
import os
import uuid
from unittest import mock

import pytest

from chalicelib.steps import state
from slipway import github
from slipway.emulator import Emulator
from slipway.follow import follow

# Metrics stay on: with POWERTOOLS_METRICS_DISABLED, Powertools never clears them between calls.
QUIET = {"POWERTOOLS_LOG_LEVEL": "WARNING"}
logging.getLogger("moto").setLevel(logging.CRITICAL)


def commit_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def shape_problems(emu: Emulator) -> list[str]:
    """Every answer a step left in the state of any execution of this emulator that does not fit
    the shape chalicelib/steps/state.py declares for its ResultPath (and every caught error)."""
    sfn = emu.client("stepfunctions")
    problems = []
    for kind, machine_arn in emu.arns.items():
        definition = json.loads(sfn.describe_state_machine(stateMachineArn=machine_arn)["definition"])
        paths = {name: s.get("ResultPath", "$") for name, s in definition["States"].items() if s["Type"] == "Task"}
        executions = [e["executionArn"] for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=machine_arn) for e in page["executions"]]
        for arn in executions:
            failed = False  # a Task that failed leaves its Catch's answer, not its step's
            for event in (e for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
                          for e in page["events"]):
                failed = event["type"].endswith("Failed") or (failed and not event["type"].endswith("Entered"))
                details = event.get("stateExitedEventDetails") or {}
                if event["type"] != "TaskStateExited" or details.get("name") not in paths or failed:
                    continue
                output = json.loads(details.get("output") or "{}")
                path = paths[details["name"]]
                value = output if path == "$" else output.get(path.removeprefix("$."))
                found = [state.conforms(shape, value, path) for shape in state.shapes_at(kind, path)]
                if all(found):
                    problems += [f"{kind} '{details['name']}': {p}" for p in min(found, key=len)]
                for key in ("error", "undo_error", "leave_error", "github_error"):
                    if key in output:
                        problems += [f"{kind} '{details['name']}': {p}"
                                     for p in state.conforms(state.CaughtError, output[key], f"$.{key}")]
    return problems


@pytest.fixture
def make_emulator():
    """Start an emulator with the given options (poll interval 0 so tests do not sleep). At the
    end, every step's answer in every execution must fit its declared shape (steps/state.py)."""
    started = []

    def start(**kwargs) -> Emulator:
        kwargs.setdefault("poll_seconds", 0)
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


@pytest.fixture
def emulator(make_emulator) -> Emulator:
    return make_emulator()


def deliver_push(emu: Emulator, commit: str, *, ref: str = "refs/heads/main",
                 delivery: str | None = None, secret: str | None = None, before: str = "0" * 40):
    body = github.encode(github.push_payload(after=commit, ref=ref, before=before))
    headers = github.delivery_headers(secret or emu.webhook_secret, body, delivery=delivery)
    return emu.deliver(headers, body)


def deploy(emu: Emulator, commit: str | None = None, before: str = "0" * 40):
    """Push `commit` (new by default) and follow the execution to its end."""
    status, answer = deliver_push(emu, commit or commit_id(), before=before)
    assert status == 202, answer
    return follow(emu.client("stepfunctions"), answer["execution_arn"],
                  say=lambda *a, **k: None, poll=0.05, timeout=120)


def teardown(emu: Emulator, environment: str | None = None):
    import json

    sfn = emu.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=emu.arns["teardown"],
                              input=json.dumps({"environment": environment or emu.environment}))["executionArn"]
    return follow(sfn, arn, say=lambda *a, **k: None, poll=0.05, timeout=120)


class CallRecorder:
    """Counts the AWS API calls made by clients of one boto3 event system."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, model, params, **kwargs) -> None:
        self.calls.append(model.name)

    def mutating(self) -> list[str]:
        readers = ("Describe", "Get", "List", "BatchGet")
        return [c for c in self.calls if not c.startswith(readers)]
