"""Step Functions: moto's interpreter runs the real ASL (Retry, Catch, Wait, error names). Filled in
here: an execution started without a name gets a UUID and a name is taken atomically; a stopped
execution stays ABORTED and tells EventBridge ("Step Functions Execution Status Change"); Wait
states and Retry intervals last `wait_scale` of their seconds. And what moto costs every
execution, paid once per process instead: parsing the definition, building the interpreter's
boto3 clients."""

from __future__ import annotations

import copy
import functools
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from unittest import mock

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator

_VALID_DEFINITIONS: set[str] = set()  # ASL texts moto has already parsed in this process

_PROGRAMS: dict[str, Any] = {}  # ASL text -> the program moto's interpreter parsed it into
_PROGRAMS_LOCK = threading.Lock()
_INTERPRETER_CLIENTS: dict[tuple[str, str, bool, str], Any] = {}
_INTERPRETER_CLIENTS_LOCK = threading.Lock()


def _shared_interpreter_client(make: Callable[..., Any], region: str, service: str, state_credentials: Any = None):
    """moto's interpreter's boto_client_for (`make`), one client per region, service and endpoint
    for the process: a boto3 client is thread-safe, and building one is most of a Task's cost.
    (moto's own ignores `state_credentials`: every client signs with the same placeholder keys.)"""
    from moto.core.models import botocore_stubber
    from moto.settings import moto_server_port

    key = (region, service, botocore_stubber.enabled, moto_server_port())
    with _INTERPRETER_CLIENTS_LOCK:
        if key not in _INTERPRETER_CLIENTS:
            _INTERPRETER_CLIENTS[key] = make(region, service)
        return _INTERPRETER_CLIENTS[key]


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    # moto parses a definition with its ASL grammar on every CreateStateMachine (half a second
    # each); the emulator creates the same two on every start. A definition that parsed once
    # parses again: skip the repeat, and still refuse (and never remember) one that does not.
    original_validate = StepFunctionsParserBackend._validate_definition

    def validate_once(definition: str) -> None:
        if definition not in _VALID_DEFINITIONS:
            original_validate(definition)
            _VALID_DEFINITIONS.add(definition)

    patch(mock.patch.object(StepFunctionsParserBackend, "_validate_definition", staticmethod(validate_once)))

    if emu.wait_scale != 1:
        scale_waits(emu, patch)

    # moto's interpreter parses the definition again for every execution (most of a second for
    # deploy.asl.json); a copy of the first parse's program is the same program, and a copy
    # per execution keeps executions from sharing a component's state.
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    def evaluation_entrypoint(worker):
        definition = worker._evaluation_details.state_machine_details.definition
        with _PROGRAMS_LOCK:
            if definition not in _PROGRAMS:
                _PROGRAMS[definition] = AmazonStateLanguageParser.parse(definition)[0]
            return copy.deepcopy(_PROGRAMS[definition])

    patch(mock.patch.object(ExecutionWorker, "_get_evaluation_entrypoint", evaluation_entrypoint))

    # moto's interpreter makes a new boto3 client for every Task state it runs (a fifth of a
    # test's CPU went to building them); a client is thread-safe and these differ only by
    # region and service, so each is made once per process.
    from moto.stepfunctions.parser.asl.utils import boto_client

    make_client = boto_client.boto_client_for
    shared_client = functools.partial(_shared_interpreter_client, make_client)
    for module in [m for name, m in list(sys.modules.items()) if name.startswith("moto.stepfunctions.parser")]:
        if getattr(module, "boto_client_for", None) is make_client:
            patch(mock.patch.object(module, "boto_client_for", shared_client))

    original_start_execution = StepFunctionsParserBackend.start_execution

    def start_execution(backend, state_machine_arn, name=None, execution_input=None, *args, **kwargs):
        # Step Functions names an unnamed execution with a UUID (the console does not ask), and
        # a name is taken atomically: moto checks and adds without a lock, so concurrent
        # starts of one name could both succeed here where AWS lets only one through.
        with emu._start_lock:
            return original_start_execution(
                backend, state_machine_arn, name or str(uuid.uuid4()), execution_input, *args, **kwargs
            )

    patch(mock.patch.object(StepFunctionsParserBackend, "start_execution", start_execution))

    original_stop_execution = StepFunctionsParserBackend.stop_execution

    def stop_execution(backend, execution_arn, *args, **kwargs):
        # Step Functions tells EventBridge when an execution ends; a stopped one is what
        # Slipway listens for (moto sends no such event).
        was_running = backend.describe_execution(execution_arn).status == "RUNNING"
        execution = original_stop_execution(backend, execution_arn, *args, **kwargs)
        if was_running:  # stopping a run that has ended changes nothing and tells no one
            emu.execution_stopped(execution, backend.region_name, "ABORTED")
        return execution

    patch(mock.patch.object(StepFunctionsParserBackend, "stop_execution", stop_execution))

    # A stopped execution is ABORTED, whatever its task in flight does next; moto lets a task
    # that errors after the stop (the stop itself can make it error) turn that into FAILED.
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

    original_set_error = Environment.set_error

    def set_error(environment, error):
        with environment._state_mutex:  # re-entrant: the original takes it again
            if not isinstance(environment._program_state, ProgramStopped):
                original_set_error(environment, error)

    patch(mock.patch.object(Environment, "set_error", set_error))


def scale_waits(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    """Wait states and Retry intervals last `wait_scale` of their seconds, and so does the
    emulated load balancer's deregistration delay (what the pipeline waits out). The steps and
    their answers are unchanged: a queued run checks as often per run ahead of it as the waits
    it went through allow, each wait only shorter."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    scale = emu.wait_scale

    def wait_interval(function, env, wait_seconds) -> None:
        # As moto's own: wait on the execution's event, so that stopping the execution ends
        # the wait, and wait again after a wake-up while the execution still runs.
        deadline = time.monotonic() + wait_seconds * scale
        while env.is_running() and (left := deadline - time.monotonic()) > 0:
            env.program_state_event.wait(left)

    class ScaledTime:
        """The `time` module as the Retry interpreter sees it: its sleeps scaled."""

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(seconds * scale)

    patch(mock.patch.object(WaitFunction, "_wait_interval", wait_interval))
    patch(mock.patch.object(retrier_decl, "time", ScaledTime()))
