"""Thin boto3 adapters, one module per service. Clients come from `client()`, built lazily.

Two kinds of client per service:
- the default one retries throttling and transient faults (botocore's `standard` mode; the
  default here would be `legacy`), for reads and for calls that are safe to repeat (idempotent
  ones, and those carrying a ClientToken);
- `client(service, retries=False)` makes one attempt, for creates AWS cannot deduplicate
  (CreateVpc, CreateSubnet, ...): a response lost after the call took effect must not be re-sent
  blindly. The step fails with TransientError instead, Step Functions retries the step, and the
  step finds what the lost call created by its tags.
"""

from __future__ import annotations

import functools
import threading

import boto3
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError,
                                 EndpointConnectionError, ReadTimeoutError)

from chalicelib.errors import TransientError

CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 5})
ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})

_lock = threading.Lock()
_clients: dict[tuple[str, bool], object] = {}

# Error codes worth trying again later: throttling, AWS-side faults, and EC2's eventual
# consistency (an id that exists but is not visible yet; a dependency not released yet).
TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestThrottled",
    "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout",
    "DependencyViolation", "IncorrectState", "IncorrectInstanceState",
    # SSM and CodeBuild's "not visible yet" right after SendCommand, PutParameter, StartBuild.
    "InvalidCommandId", "InvocationDoesNotExist", "InvalidResourceId", "ResourceNotFoundException",
    # A snapshot stays in use for a moment after its image is deregistered.
    "InvalidSnapshot.InUse",
}
NETWORK_ERRORS = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)


def client(service: str, retries: bool = True):
    """The process-wide client for `service` (created on first use, so warm Lambdas reuse it and
    the emulator is active before any client exists)."""
    key = (service, retries)
    cached = _clients.get(key)
    if cached is not None:
        return cached
    with _lock:
        if key not in _clients:
            config = CLIENT_CONFIG if retries else ONE_ATTEMPT
            _clients[key] = boto3.session.Session().client(service, config=config)
        return _clients[key]


def reset() -> None:
    """Drop cached clients (tests and the emulator switch endpoints and credentials)."""
    with _lock:
        _clients.clear()


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def is_not_found(exc: ClientError) -> bool:
    return error_code(exc).endswith("NotFound")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, NETWORK_ERRORS):
        return True
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in TRANSIENT_CODES or is_not_found(exc) or status >= 500
    return False


def transient_errors(step):
    """Turn AWS faults worth retrying into TransientError, the error name the state machine's
    Retry matches; everything else propagates unchanged (and the deployment is undone)."""
    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except (ClientError, *NETWORK_ERRORS) as exc:
            if is_transient(exc):
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            raise

    return wrapper
