"""Step Functions adapter: start a named execution, treating 'already exists' as success."""

from __future__ import annotations

import json


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def start(sfn, state_machine_arn: str, name: str, payload: dict) -> tuple[str, bool]:
    """Start execution `name`; returns (arn, started). A name already used means this delivery
    was seen before: the existing execution stands and nothing new starts."""
    try:
        response = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
        )
        return response["executionArn"], True
    except sfn.exceptions.ExecutionAlreadyExists:
        return execution_arn(state_machine_arn, name), False
