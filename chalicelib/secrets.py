"""The webhook secret(s), read from SSM Parameter Store through Powertools Parameters, cached.

Rotation: `<name>` holds the current secret and `<name>-previous`, while set, the one before it;
deliveries signed with either are accepted.
"""

from __future__ import annotations

import functools

from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from chalicelib import aws

CACHE_SECONDS = 300


class SecretUnavailable(Exception):
    """No webhook secret is configured, or it cannot be read."""


@functools.cache
def _provider() -> SSMProvider:
    return SSMProvider(boto3_client=aws.client("ssm"))


def webhook_secrets(parameter: str) -> list[bytes]:
    provider = _provider()
    try:
        current = provider.get(parameter, decrypt=True, max_age=CACHE_SECONDS)
    except GetParameterError as exc:
        raise SecretUnavailable(f"cannot read {parameter}") from exc
    if not current:
        raise SecretUnavailable(f"{parameter} is empty")
    secrets = [current.encode()]
    try:
        previous = provider.get(f"{parameter}-previous", decrypt=True, max_age=CACHE_SECONDS)
    except GetParameterError:
        previous = None
    if previous:
        secrets.append(previous.encode())
    return secrets


def reset() -> None:
    _provider.cache_clear()
