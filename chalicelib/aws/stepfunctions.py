"""Step Functions adapter: start a named execution, treating 'already exists' as success."""

from __future__ import annotations

import json


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
