"""EventBridge: moto's has no Lambda targets, and moto's services send it no events. The events
Slipway listens for are put on the default bus as the services would send them (EC2's instance
state changes, SSM's command status changes, Step Functions' stopped executions), matched against
the rules Chalice creates (moto's matcher) and delivered to their Lambda targets on a worker
thread, asynchronously, as on AWS."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slipway.emulator import awslambda
from slipway.emulator.account import ACCOUNT

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator


def instances_changed(emu: Emulator, region: str, instance_ids, states: tuple[str, ...]) -> None:
    """What EC2 sends EventBridge as instances change state, one event per instance and state."""
    for state in states:
        for instance_id in instance_ids:
            send_event(
                emu,
                region,
                "EC2 Instance State-change Notification",
                "aws.ec2",
                [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance_id}"],
                {"instance-id": instance_id, "state": state},
            )


def command_finished(emu: Emulator, command, region: str) -> None:
    """What SSM sends EventBridge when a command ends ("EC2 Command Status-change Notification")."""
    statuses = {inv["Status"] for inv in command.invocations}
    status = "Success" if statuses <= {"Success"} else "Failed"
    send_event(
        emu,
        region,
        "EC2 Command Status-change Notification",
        "aws.ssm",
        [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{inv['InstanceId']}" for inv in command.invocations],
        {
            "command-id": command.command_id,
            "document-name": command.document_name,
            "expire-after": str(command.expires_after),
            "parameters": command.parameters,
            "requested-date-time": str(command.requested_date_time),
            "status": status,
        },
    )


def execution_stopped(emu: Emulator, execution, region: str, status: str) -> None:
    """What Step Functions sends EventBridge when an execution ends ("Step Functions Execution
    Status Change"), for a stopped one."""
    if emu._closing:
        return

    def millis(moment) -> int | None:
        return int(moment.timestamp() * 1000) if moment else None

    arn = execution.execution_arn
    send_event(
        emu,
        region,
        "Step Functions Execution Status Change",
        "aws.states",
        [arn],
        {
            "executionArn": arn,
            "stateMachineArn": execution.state_machine_arn,
            "name": execution.name,
            "status": status,
            "startDate": millis(execution.start_date),
            "stopDate": millis(execution.stop_date) or int(time.time() * 1000),
            "input": execution.execution_input,
            "inputDetails": {"included": True},
            "output": None,
            "outputDetails": None,
        },
    )


def send_event(emu: Emulator, region: str, detail_type: str, source: str, resources: list[str], detail: dict) -> None:
    """Put an event on the default bus as an AWS service would (the envelope EventBridge
    gives every event); _deliver_events hands it to the matching rules' targets."""
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": resources,
        "detail": detail,
    }
    emu._events.put((region, event))


def deliver_events(emu: Emulator) -> None:
    """EventBridge's part: match each event against the rules and invoke Lambda targets,
    asynchronously, as AWS does (moto's EventBridge has no Lambda targets)."""
    from moto.events.models import events_backends

    while True:
        item = emu._events.get()
        try:
            if item is None:
                return
            region, event = item
            bus = events_backends[ACCOUNT][region].event_buses["default"]
            for rule in list(bus.rules.values()):
                if rule.scheduled_expression or not rule.event_pattern.matches_event(event):
                    continue
                for target in rule.targets:
                    headers: dict = {}
                    awslambda.dispatch(emu, target["Arn"], json.dumps(event).encode(), headers)
            emu.delivered_events.append(event)
        finally:
            emu._events.task_done()


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    """Start the worker that delivers the events; it stops with the emulator."""
    worker = threading.Thread(target=deliver_events, args=(emu,), daemon=True)
    worker.start()

    def stop() -> None:
        emu._events.put(None)
        worker.join(timeout=10)

    emu._stack.callback(stop)
