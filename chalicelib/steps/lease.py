"""The environment's lease: one run at a time, for certain.

'Look for earlier runs' orders the runs by ListExecutions, which AWS documents as eventually
consistent: two runs started in the same moment may both find no one ahead. So a run the queue
lets through takes the environment's lease too, before any state that changes anything: one
conditional write to SLIPWAY_LEASE_TABLE (aws/dynamodb.py), which only one writer can win. The
other waits, as behind a run ahead. The lease is given up on every way out: the deploy machine's
reports (steps/report.py), the teardown's last step and its 'Release the lease', and the report
of a run stopped or timed out (report_stopped_run). A holder that ended without giving it up (its
status-change event lost, or its release failing) is found ended by the next run, which takes it
over ("lease reclaimed"); and a lease expires after the latest moment its holder can be running.
"""

from __future__ import annotations

import time
from datetime import datetime

from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.aws import dynamodb, stepfunctions
from chalicelib.errors import ConfigurationError
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import execution_name
from chalicelib.steps.registry import task
from chalicelib.steps.state import Lease, LeaseReleased, ReleaseLeaseInput

# Both state machines' TimeoutSeconds (statemachines/*.asl.json), from the run's start, and a
# margin for the clocks of Step Functions and Lambda: no run holds a lease beyond its own life.
MACHINE_TIMEOUT_SECONDS = 21600
LEASE_SECONDS = MACHINE_TIMEOUT_SECONDS + 600
# A holder DescribeExecution does not know: an ARN written by hand, or a run it does not show yet
# (it is eventually consistent too). Ended only once its lease is older than this.
UNKNOWN_HOLDER_GRACE_SECONDS = 60
UNKNOWN_HOLDER = "the lease's holder (unknown)"
# Statuses of a holder that may still change the environment (PENDING_REDRIVE: about to run again).
ALIVE = frozenset({"RUNNING", "PENDING_REDRIVE"})
# Each attempt is a write and a look at the holder; another run changing the lease in between
# (taking over the same ended holder first) makes this one look again, a few times at most.
ATTEMPTS = 3


def take(environment: str, execution_arn: str, started: datetime) -> tuple[Lease | None, str | None]:
    """The run's lease on the environment: (the lease, None) once it holds it, taken or taken over
    from a holder that has ended; else (None, the ARN of the run holding it, which is alive)."""
    client, table = aws.client("dynamodb"), get_settings().lease_table
    now = int(time.time())
    expires_at = int(started.timestamp()) + LEASE_SECONDS
    holder: dynamodb.Holder | None = None
    for _ in range(ATTEMPTS):
        taken, holder = dynamodb.take(client, table, environment, execution_arn, expires_at, now)
        if taken:
            return Lease(owner=execution_arn, expires_at=expires_at), None
        if holder is None:  # refused, yet no owner to name: an item written by hand; look again
            continue
        if not _ended(holder, now):
            return None, holder.owner
        reclaimed, current = dynamodb.reclaim(client, table, environment, execution_arn, holder.owner, expires_at, now)
        if reclaimed:
            logger.warning("lease reclaimed", extra={"stale_holder": holder.owner, "environment": environment})
            return Lease(owner=execution_arn, expires_at=expires_at, reclaimed_from=execution_name(holder.owner)), None
        holder = current or holder
    return None, holder.owner if holder else UNKNOWN_HOLDER


def _ended(holder: dynamodb.Holder, now: int) -> bool:
    status = stepfunctions.status(aws.client("stepfunctions"), holder.owner)
    if status is None:
        return now - holder.taken_at >= UNKNOWN_HOLDER_GRACE_SECONDS
    return status not in ALIVE


def release(environment: str, execution_arn: str) -> bool:
    """Give up the run's lease on the environment, if it holds it (True). A failure worth retrying
    raises (the state machine retries the step); any other is logged and the run ends as it
    would have: the next run finds this one ended and takes the lease over."""
    try:
        released = dynamodb.release(aws.client("dynamodb"), get_settings().lease_table, environment, execution_arn)
    except ClientError as exc:
        if aws.is_transient(exc):
            raise
        logger.error("lease not released", extra={"why": str(exc), "environment": environment})
        return False
    except ConfigurationError as exc:
        logger.error("lease not released", extra={"why": str(exc), "environment": environment})
        return False
    logger.info("lease released" if released else "no lease to release", extra={"environment": environment})
    return released


@task("Release the lease")
def release_lease(event: ReleaseLeaseInput) -> LeaseReleased:
    """'Release the lease': the teardown's way to 'Teardown failed'."""
    return LeaseReleased(released=release(get_settings().environment, event["execution_arn"]))
