"""Lambda: moto runs a function only in a Docker image it cannot pull here. Every invocation (the
Step Functions interpreter's, EventBridge's, `aws lambda invoke`) is dispatched to the Chalice
app's own function in this process; an exception becomes Lambda's `x-amz-function-error` with its
class name as `errorType`, so the state machine's Retry and Catch match it as on AWS. Each thread
keeps its own log keys and pending metrics, as each Lambda invocation is its own process."""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from unittest import mock

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator


@dataclass
class LambdaContext:
    """The attributes of AWS's Lambda context object that Powertools and Chalice read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""

    def __post_init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@contextlib.contextmanager
def _observability_per_invocation():
    """Keep the app's log keys and pending metrics apart per thread, as Lambda processes are.

    On AWS each invocation is its own process with its own Logger and Metrics. Here the webhook and
    the Lambdas the Step Functions interpreter and the event worker run on their threads share one
    of each: a step's `clear_state` once wiped the webhook's `delivery_id` between its
    `append_keys` and its "deployment accepted" line, and a schedule's flush could publish another
    invocation's metrics. Every thread starts from the state they had when the emulator started.
    """
    from chalicelib.observability import logger, metrics

    with (
        _per_thread(logger.registered_formatter, ("log_format",)),
        _per_thread(metrics.provider, ("metric_set", "dimension_set", "metadata_set", "dimension_sets", "timestamp")),
    ):
        yield


@contextlib.contextmanager
def _per_thread(target: object, attributes: tuple[str, ...]):
    """`target`'s `attributes` become thread-local, each thread's a copy of their present value."""
    start = {name: copy.deepcopy(getattr(target, name)) for name in attributes}
    local = threading.local()

    def attribute(name: str) -> property:
        def get(_self):
            if not hasattr(local, name):
                setattr(local, name, copy.deepcopy(start[name]))
            return getattr(local, name)

        return property(get, lambda _self, value: setattr(local, name, value))

    original = type(target)
    target.__class__ = type(original.__name__, (original,), {name: attribute(name) for name in attributes})
    try:
        yield
    finally:
        target.__class__ = original


def load_app():
    """Import the Chalice app (app.py at the project root) once."""
    return importlib.import_module("app")


def dispatch(emu: Emulator, function_name: str, body: bytes | None, response_headers: dict[str, str]) -> bytes:
    """One invocation of a deployed function, run here: its answer, or Lambda's error shape."""
    name = function_name.split(":")[6] if function_name.startswith("arn:") else function_name
    handler = emu.functions.get(name)
    if handler is None:
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps({"errorType": "ResourceNotFoundException", "errorMessage": f"no function {name}"}).encode()
    event = json.loads(body) if body else {}
    context = LambdaContext(function_name=name, invoked_function_arn=function_name)
    try:
        result = handler(event, context)
        emu.results.append((name, result))
    except Exception as exc:  # noqa: BLE001 - this is Lambda's own boundary
        emu.results.append((name, exc))
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
    return json.dumps(result).encode()


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    from moto.awslambda_simple.models import LambdaSimpleBackend

    def invoke(backend, function_name, qualifier, body, headers, response_headers):
        return dispatch(emu, function_name, body, response_headers)

    patch(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))
