"""Thin boto3 adapters, one module per service. Clients come from `client()`, built lazily."""

from __future__ import annotations

import threading

import boto3
from botocore.config import Config

# botocore's default here is `legacy`; `standard` retries throttling and transient errors with
# jittered backoff and a retry quota, the same on every client.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})

_lock = threading.Lock()
_clients: dict[str, object] = {}


def client(service: str):
    """The process-wide client for `service` (created on first use, so warm Lambdas reuse it and
    the emulator is active before any client exists)."""
    cached = _clients.get(service)
    if cached is not None:
        return cached
    with _lock:
        if service not in _clients:
            _clients[service] = boto3.session.Session().client(service, config=CLIENT_CONFIG)
        return _clients[service]


def reset() -> None:
    """Drop cached clients (tests and the emulator switch endpoints and credentials)."""
    with _lock:
        _clients.clear()
