"""Healing between pushes: a node that dies (an EC2 state change to stopping, stopped,
shutting-down or terminated, or the scheduled drift check finding fewer running, swarm-Ready nodes
than SLIPWAY_NODE_COUNT) starts the deploy machine for the environment's last successfully deployed
commit (`naming.deployed_parameter`, written by the success report). The deploy machine does the
rest: it replaces what is missing, forgets the dead members, and promotes managers back to the
count the node count wants. Nothing starts when a run is in progress (it converges the nodes
itself; the drift check catches what it missed), nor for an environment never deployed or torn down
(teardown deletes the record)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import aws, deploy_input, naming, plans, scripts
from chalicelib.aws import ec2, ssm, stepfunctions
from chalicelib.errors import TransientError
from chalicelib.observability import logger, metrics
from chalicelib.settings import get_settings
from chalicelib.steps.common import deployed_record

# EC2 states in which a node no longer serves (the EventBridge rule's pattern, app.py).
DEAD_STATES = ("stopping", "stopped", "shutting-down", "terminated")
# Events of one failure (several nodes, each event delivered at least once) start one heal: the
# execution's name is the same for every event within this many seconds of one another's bucket.
HEAL_WINDOW_SECONDS = 600
# The drift check asks a manager for the swarm's Ready nodes and waits this long for its answer.
DRIFT_ANSWER_SECONDS = 20


def heal_on_instance_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """EventBridge's "EC2 Instance State-change Notification" for any instance of the account: a
    heal when it is one of this environment's nodes and its state means it stopped serving."""
    found = event.get("detail")
    detail: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    instance_id, state = str(detail.get("instance-id") or ""), str(detail.get("state") or "")
    if state not in DEAD_STATES:
        return {"ignored": f"state {state or 'missing'}"}
    settings = get_settings()
    client = aws.client("ec2")
    environment = ec2.node_environment(client, instance_id)
    if environment != settings.environment:
        return {"ignored": f"{instance_id} is not a node of {settings.environment}"}
    # A node Slipway retires (replaced, or surplus) leaves as many running as wanted: nothing to heal.
    running = len(ec2.list_nodes(client, settings.environment, states=["running"]))
    if running >= settings.node_count:
        return {"ignored": f"{running} of {settings.node_count} nodes run: {instance_id} was not needed"}
    return start_heal(f"{instance_id} {state}", _event_time(event))


def drift_check(event: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The schedule's check, so that a lost event is not a lost node: the environment's running
    nodes, and the Ready ones a manager lists, against SLIPWAY_NODE_COUNT."""
    settings = get_settings()
    client = aws.client("ec2")
    wanted = settings.node_count
    running = ec2.list_nodes(client, settings.environment, states=["running"])
    if not running and not deployed_record(settings.environment):
        return {"ignored": "nothing is deployed"}
    if len(running) < wanted:
        return start_heal(f"drift: {len(running)} of {wanted} nodes running", _event_time(event or {}))
    managers = [n.instance_id for n in running if n.swarm_role == "manager"]
    listed = _listed_states(managers) if managers else {}
    ready = {n.hostname for n in running if "Ready" in listed.get(n.hostname, set())}
    if len(ready) < wanted:
        # A node that runs but that the swarm lists Down (its dockerd dead, say) cannot be healed
        # in place: it is terminated, as an Auto Scaling group replaces an unhealthy instance, and
        # the heal replaces it. Only what a manager that answered lists Down, never merely unlisted.
        down = [n.instance_id for n in running if listed.get(n.hostname) == {"Down"}]
        if down:
            ec2.terminate(client, down)
            logger.warning("nodes the swarm lists Down terminated", extra={"instance_ids": down})
        why = f"drift: {len(ready)} of {wanted} nodes Ready in the swarm"
        return start_heal(why + (f", {len(down)} Down terminated" if down else ""), _event_time(event or {}))
    logger.info("no drift", extra={"running": len(running), "ready": len(ready), "wanted": wanted})
    return {"healthy": True, "running": len(running), "ready": len(ready), "wanted": wanted}


def start_heal(reason: str, when: float) -> dict[str, Any]:
    """Start the deploy machine for the last deployed commit, named for the heal (one per window:
    repeats of the event, or several nodes of one failure, start it once)."""
    settings = get_settings()
    deployed = deployed_record(settings.environment)
    if deployed is None:
        logger.info("nothing to heal: never deployed, or torn down", extra={"reason": reason})
        return {"ignored": "nothing is deployed (never, or torn down)"}
    sfn = aws.client("stepfunctions")
    machine = settings.deploy_state_machine_arn
    busy = [
        arn
        for kind in naming.STATE_MACHINES
        for _, arn in stepfunctions.running(sfn, naming.sibling_state_machine(machine, settings.environment, kind))
    ]
    if busy:
        logger.info("a run is in progress: it converges the nodes", extra={"reason": reason, "running": busy})
        return {"ignored": "a run is in progress", "running": busy}
    started = deploy_input.DeployInput(
        repository=deployed["repository"],
        ref=deployed.get("ref", ""),
        commit=deployed["commit"],
        pusher="slipway heal",
        trigger="heal",
    )
    name = plans.heal_execution_name(started.commit, int(when) // HEAL_WINDOW_SECONDS)
    arn = stepfunctions.start(sfn, machine, name, started.as_execution_input())
    logger.info("heal started", extra={"reason": reason, "execution": arn, "commit": started.commit})
    metrics.add_metric(name="HealsStarted", unit=MetricUnit.Count, value=1)
    return {"started": arn, "reason": reason, "commit": started.commit}


def _listed_states(managers: list[str]) -> dict[str, set[str]]:
    """{host name: the states a manager lists it in (Ready, Down, ...)}, waiting up to
    DRIFT_ANSWER_SECONDS; empty if no manager answered (the heal then finds out)."""
    client = aws.client("ssm")
    command_id = ssm.run_shell(
        client,
        commands=scripts.NODE_LIST_SCRIPT,
        comment="slipway drift check",
        timeout_seconds=60,
        instance_ids=managers,
    )
    deadline = time.monotonic() + DRIFT_ANSWER_SECONDS
    while True:
        try:
            results = ssm.invocations(client, command_id)
        except TransientError:  # not listed yet, just after SendCommand
            results = []
        done = [r for r in results if r.status not in ("Pending", "InProgress", "Delayed")]
        answered = next((r for r in done if r.status == "Success"), None)
        if answered or (results and len(done) == len(results)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    listed: dict[str, set[str]] = {}
    for parts in (line.split() for line in (answered.output if answered else "").splitlines()):
        if len(parts) == 3:
            listed.setdefault(parts[0], set()).add(parts[1])
    return listed


def _event_time(event: Mapping[str, Any]) -> float:
    """The event's `time` (EventBridge's ISO 8601), else now."""
    raw = str(event.get("time") or "")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
