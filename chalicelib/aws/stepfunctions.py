"""Step Functions adapter: start a named execution ('already exists' is success); list running ones."""

from __future__ import annotations

import json
from datetime import datetime


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def start(sfn, state_machine_arn: str, name: str, payload: dict) -> str:
    """Start execution `name` and return its ARN. A name already used means this delivery was
    seen before: the existing execution stands and nothing new starts. (Step Functions answers a
    repeat of a running execution's name and input with that execution; a finished one, or other
    input, with ExecutionAlreadyExists: both are the same execution here.)"""
    try:
        response = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload, sort_keys=True)
        )
        return response["executionArn"]
    except sfn.exceptions.ExecutionAlreadyExists:
        return execution_arn(state_machine_arn, name)


def started_at(sfn, execution_arn: str) -> datetime:
    return sfn.describe_execution(executionArn=execution_arn)["startDate"]


def execution_input(sfn, execution_arn: str) -> dict:
    """The input an execution was started with ({} if it is not a JSON object)."""
    try:
        found = json.loads(sfn.describe_execution(executionArn=execution_arn).get("input") or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def running(sfn, state_machine_arn: str) -> list[tuple[datetime, str]]:
    """(start date, execution ARN) of every RUNNING execution of the state machine."""
    found = []
    for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=state_machine_arn, statusFilter="RUNNING"):
        found += [(e["startDate"], e["executionArn"]) for e in page["executions"]]
    return found


def entered(sfn, execution_arn: str, state: str, within: int = 100) -> bool:
    """Whether the execution has entered `state` among its first `within` history events."""
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=within)["events"]
    return any(e.get("stateEnteredEventDetails", {}).get("name") == state for e in events)
