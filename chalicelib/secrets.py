"""The webhook secret(s), read from SSM Parameter Store through Powertools Parameters, cached.

Rotation: `<name>` holds the current secret and `<name>-previous`, while set, the one before it;
deliveries signed with either are accepted. Both answers are cached for CACHE_SECONDS, including
"no previous secret", so a delivery costs no SSM call once warm.
"""

from __future__ import annotations

import functools
import threading
import time

from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from chalicelib import aws

CACHE_SECONDS = 300

_lock = threading.Lock()
_cache: dict[str, tuple[float, list[bytes]]] = {}


class SecretUnavailable(Exception):
    """No webhook secret is configured, or it cannot be read."""


@functools.cache
def _provider() -> SSMProvider:
    return SSMProvider(boto3_client=aws.client("ssm"))


def _read(parameter: str) -> list[bytes]:
    provider = _provider()
    try:
        current = provider.get(parameter, decrypt=True, force_fetch=True)
    except GetParameterError as exc:
        raise SecretUnavailable(f"cannot read {parameter}") from exc
    if not current:
        raise SecretUnavailable(f"{parameter} is empty")
    secrets = [current.encode()]
    try:
        previous = provider.get(f"{parameter}-previous", decrypt=True, force_fetch=True)
    except GetParameterError:
        previous = None  # not set: the usual case outside a rotation
    if previous:
        secrets.append(previous.encode())
    return secrets


def webhook_secrets(parameter: str) -> list[bytes]:
    """The accepted secrets, newest first. A failure to read is not cached: the next delivery tries again."""
    now = time.monotonic()
    with _lock:
        cached = _cache.get(parameter)
        if cached and cached[0] > now:
            return cached[1]
    secrets = _read(parameter)
    with _lock:
        _cache[parameter] = (now + CACHE_SECONDS, secrets)
    return secrets


def reset() -> None:
    _provider.cache_clear()
    with _lock:
        _cache.clear()
