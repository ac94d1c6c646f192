"""'Look for earlier runs': one run at a time per environment, for both state machines."""

from __future__ import annotations

from typing import Any

from chalicelib import aws, naming, plans
from chalicelib.aws import stepfunctions
from chalicelib.errors import QueueTimeout
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps import lease
from chalicelib.steps.common import deployed_record, execution_name, scope
from chalicelib.steps.registry import task
from chalicelib.steps.state import Queue, SupersededBy, WaitTurnInput


@task("Look for earlier runs")
def wait_turn(event: WaitTurnInput) -> Queue:
    """One run at a time per environment: a deploy or teardown goes on only when no run of either
    state machine that started before it is still running. Waiting is the state machine's; this
    looks once and says who is ahead (shown in the console as `queue.ahead`). A deploy still
    queued when a newer deploy has started is skipped (`queue.skip`): the newer one would replace
    it the moment it ended (SLIPWAY_SKIP_SUPERSEDED=false deploys every push in turn).

    ListExecutions is eventually consistent, so the way found clear is made certain with the
    environment's lease (steps/lease.py), taken here before any state that changes anything: a
    run alive holding it is waited for as a run ahead. A run skipped never takes it."""
    state = event["run"]  # the execution's state: a deployment's, or teardown's input
    environment, _ = scope(state)
    me, machine = event["execution"], event["state_machine"]
    settings = get_settings()
    sfn = aws.client("stepfunctions")
    running = {
        kind: stepfunctions.running(sfn, naming.sibling_state_machine(machine, environment, kind))
        for kind in naming.STATE_MACHINES
    }
    everyone = [run for runs in running.values() for run in runs]
    mine = next((run for run in everyone if run[1] == me), None) or (stepfunctions.started_at(sfn, me), me)
    ahead = [execution_name(arn) for arn in plans.runs_ahead(mine, everyone)]
    checks = int((state.get("queue") or {}).get("checks", 0)) + 1
    if not ahead:
        since = _deployed_since(state, environment)
        if since is not None:
            # A heal deploys again what was deployed when it started; a deploy that ended while it
            # waited has deployed since, and healed the nodes with it: running the heal would put
            # the older commit back.
            logger.info("heal skipped: deployed since", extra={"deployed": since["commit"]})
            return Queue(
                clear=True, skip=True, ahead=[], checks=checks, poll_seconds=settings.poll_seconds, superseded_by=since
            )
        taken, holder = lease.take(environment, me, mine[0])
        if taken is not None:
            return Queue(
                clear=True, skip=False, ahead=[], checks=checks, poll_seconds=settings.poll_seconds, lease=taken
            )
        # A run ListExecutions did not show yet (or one started after this one that got there first).
        ahead = [execution_name(holder or "")]
    answer = Queue(clear=False, skip=False, ahead=ahead, checks=checks, poll_seconds=settings.poll_seconds)
    is_deploy = machine == naming.sibling_state_machine(machine, environment, "deploy")
    candidates = plans.newer_deploys(mine, running["deploy"]) if is_deploy and settings.skip_superseded else []
    # Only for a newer run that got past "Prepare deployment": one with bad input, or that cannot
    # reach GitHub, must not cost this run its turn. Until one has, this run keeps waiting.
    for newer in candidates:
        started_with = stepfunctions.input_if_entered(sfn, newer, naming.QUEUE_STATE)
        if started_with is None:
            continue
        commit = str(started_with.get("commit") or "")
        logger.info("skipped for a newer deploy", extra={"newer": execution_name(newer), "commit": commit})
        return Queue(
            clear=answer["clear"],
            skip=True,
            ahead=ahead,
            checks=checks,
            poll_seconds=settings.poll_seconds,
            superseded_by=SupersededBy(execution=execution_name(newer), commit=commit),
        )
    logger.info("waiting for earlier runs", extra={"ahead": ahead, "checks": checks})
    # Bounded, so a run stuck ahead cannot keep this one waiting until its history is full:
    # it ends through its Catch (GitHub told, nothing to undo: it has changed nothing yet).
    if checks >= settings.queue_max_checks:
        raise QueueTimeout(
            f"still behind {', '.join(ahead)} after {checks} checks "
            "(SLIPWAY_QUEUE_MAX_CHECKS); start it again once they have ended"
        )
    return answer


def _deployed_since(state: dict[str, Any], environment: str) -> SupersededBy | None:
    """For a heal: the deployment recorded since it started, if the record names another commit (or
    none: torn down), else None. Any other run: None."""
    deployment = state.get("deployment")
    if not isinstance(deployment, dict) or deployment.get("trigger") != "heal":
        return None
    record = deployed_record(environment) or {}
    if record.get("commit") == deployment.get("commit"):
        return None
    return SupersededBy(execution=str(record.get("execution") or ""), commit=str(record.get("commit") or ""))
