"""The AWS calls the functions make, read from chalicelib's source, as the IAM actions that
authorise them: what the Lambda policies (.chalice/policy-*.json) must allow and no more."""

from __future__ import annotations

import functools
import re

import boto3

from slipway import PROJECT_DIR

SERVICES = {
    "ec2": "ec2",
    "elb": "elbv2",
    "create": "ec2",
    "ssm": "ssm",
    "codebuild": "codebuild",
    "sfn": "stepfunctions",
    "s3": "s3",
    "dynamodb": "dynamodb",
    "ecr": "ecr",
    "logs": "logs",
}
IAM_PREFIX = {
    "ec2": "ec2",
    "elbv2": "elasticloadbalancing",
    "ssm": "ssm",
    "codebuild": "codebuild",
    "stepfunctions": "states",
    "s3": "s3",
    "dynamodb": "dynamodb",
    "ecr": "ecr",
    "logs": "logs",
}
# API operations that IAM authorises under another action's name.
IAM_ACTION = {"s3:HeadObject": "s3:GetObject"}


def _calls() -> set[tuple[str, str]]:
    """(service, boto3 method) for every AWS call in chalicelib's adapters."""
    calls = set()
    # Calls, paginators, and methods handed to a helper (`gone(ec2.delete_vpc, ...)`).
    pattern = re.compile(
        r"\b(ec2|elb|create|ssm|codebuild|sfn|s3|dynamodb|ecr|logs)\.(?:get_paginator\(\"([a-z_]+)\"|([a-z_]+)\b)"
    )
    for path in (PROJECT_DIR / "chalicelib").rglob("*.py"):
        text = path.read_text()
        for variable, paginated, method in pattern.findall(text):
            # In the adapters (chalicelib/aws) these names are clients; elsewhere, modules.
            if path.parent.name == "aws" or variable in ("create", "sfn"):
                calls.add((SERVICES[variable], method or paginated))
        for service, method in re.findall(r"aws\.client\(\"([a-z]+)\"[^)]*\)\.([a-z_]+)\(", text):
            calls.add((service, method))
    return calls


@functools.cache
def chalicelib_actions() -> frozenset[str]:
    """Every IAM action a call in chalicelib authorises under (a helper named like a client method
    is not a call)."""
    actions = set()
    for service, method in _calls():
        operation = boto3.client(service, region_name="us-east-1").meta.method_to_api_mapping.get(method)
        if operation is not None:
            action = f"{IAM_PREFIX[service]}:{operation}"
            actions.add(IAM_ACTION.get(action, action))
    return frozenset(actions)
