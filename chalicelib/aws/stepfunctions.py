"""Step Functions adapter: start a named execution ('already exists' is success); list running ones;
whether one is still running."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from chalicelib.aws import Client


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def start(sfn: Client, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
    """Start execution `name` and return its ARN. A name already used means this delivery was
    seen before: the existing execution stands and nothing new starts. (Step Functions answers a
    repeat of a running execution's name and input with that execution; a finished one, or other
    input, with ExecutionAlreadyExists: both are the same execution here.)"""
    try:
        response = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload, sort_keys=True)
        )
        return str(response["executionArn"])
    except sfn.exceptions.ExecutionAlreadyExists:
        return execution_arn(state_machine_arn, name)


def started_at(sfn: Client, execution_arn: str) -> datetime:
    started: datetime = sfn.describe_execution(executionArn=execution_arn)["startDate"]
    return started


def status(sfn: Client, execution_arn: str) -> str | None:
    """The execution's status (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED...), or None if
    there is no such execution."""
    try:
        return str(sfn.describe_execution(executionArn=execution_arn)["status"])
    except (sfn.exceptions.ExecutionDoesNotExist, sfn.exceptions.InvalidArn):
        return None


def running(sfn: Client, state_machine_arn: str) -> list[tuple[datetime, str]]:
    """(start date, execution ARN) of every RUNNING execution of the state machine."""
    found: list[tuple[datetime, str]] = []
    for page in sfn.get_paginator("list_executions").paginate(
        stateMachineArn=state_machine_arn, statusFilter="RUNNING"
    ):
        found += [(e["startDate"], e["executionArn"]) for e in page["executions"]]
    return found


def input_if_entered(sfn: Client, execution_arn: str, state: str, within: int = 100) -> dict[str, Any] | None:
    """The input the execution was started with once it has entered `state` (among its first
    `within` history events), else None: one history read answers both ({} for a non-object)."""
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=within)["events"]
    if not any(e.get("stateEnteredEventDetails", {}).get("name") == state for e in events):
        return None
    started: dict[str, Any] = next(
        (e["executionStartedEventDetails"] for e in events if "executionStartedEventDetails" in e), {}
    )
    try:
        found = json.loads(started.get("input") or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
