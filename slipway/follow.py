"""Follow a Step Functions execution from its history, printing states as they are entered and left."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

FINISHED = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


@dataclass
class Run:
    execution_arn: str
    status: str = "RUNNING"
    output: dict = field(default_factory=dict)
    error: str | None = None
    cause: str | None = None
    state_transitions: int = 0
    states: list[str] = field(default_factory=list)


def _failure(event: dict) -> tuple[str, str] | None:
    for key, value in event.items():
        if key.endswith("FailedEventDetails") and isinstance(value, dict):
            return value.get("error", ""), value.get("cause", "")
    return None


def print_line(line: str, end: str = "\n") -> None:
    """`follow`'s default `say`: each line printed as it comes."""
    print(line, end=end, flush=True)


def _quiet(*args: object, **kwargs: object) -> None:
    pass


def follow(
    sfn, execution_arn: str, *, say: Callable[..., None] | None = print_line, poll: float = 0.2, timeout: float = 900.0
) -> Run:
    """Print each state as it is entered and left until the execution finishes. With `say=None`
    nothing is printed and the history is read once, at the end (GetExecutionHistory returns the
    whole history every time: reading it on every poll costs more the longer the run)."""
    live = say is not None
    say = say or _quiet
    run = Run(execution_arn)
    seen = 0
    open_line = False
    entered_at: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        status = sfn.describe_execution(executionArn=execution_arn)
        events = []
        if live or status["status"] in FINISHED:
            for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
                events += page["events"]
        for event in events[seen:]:
            kind = event["type"]
            if kind.endswith("StateEntered"):
                name = event["stateEnteredEventDetails"]["name"]
                entered_at[name] = time.monotonic()
                run.state_transitions += 1
                run.states.append(name)
                if open_line:
                    say("")
                say(f"  {name} ...", end="")
                open_line = True
            elif kind.endswith("StateExited"):
                name = event["stateExitedEventDetails"]["name"]
                took = time.monotonic() - entered_at.get(name, time.monotonic())
                say(f" {took:.1f}s" if open_line else f"  {name} done {took:.1f}s")
                open_line = False
            elif failure := _failure(event):
                if open_line:
                    say("")
                say(f"  !! {kind}: {failure[0]}: {failure[1][:300]}")
                open_line = False
        seen = max(seen, len(events))
        if status["status"] in FINISHED:
            if open_line:
                say("")
            run.status = status["status"]
            run.output = json.loads(status.get("output") or "{}")
            run.error, run.cause = status.get("error"), status.get("cause")
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still running after {timeout:.0f}s")
        time.sleep(poll)
