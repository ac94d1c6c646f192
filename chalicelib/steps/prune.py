"""The schedule: `docker system prune` on every node through SSM, and its results recorded from
SSM's status-change event (no Lambda waits for the nodes)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import aws, naming, scripts
from chalicelib.aws import ec2, ssm
from chalicelib.observability import logger, metrics
from chalicelib.settings import get_settings


def prune_comment(environment: str) -> str:
    return f"slipway prune {environment}"


def prune() -> dict[str, str | None]:
    """`docker system prune` on every node of the environment, selected by tag (no id list)."""
    settings = get_settings()
    if not ec2.any_node(aws.client("ec2"), settings.environment):
        logger.info("prune: no node is tagged for the environment; nothing sent")
        return {"command_id": None}
    command_id = ssm.run_shell(
        aws.client("ssm"),
        commands=scripts.prune_script(settings.prune_filter, settings.prune_volumes),
        comment=prune_comment(settings.environment),
        timeout_seconds=settings.command_timeout_seconds,
        targets=[
            {"Key": f"tag:{naming.TAG_ENVIRONMENT}", "Values": [settings.environment]},
            {"Key": f"tag:{naming.TAG_ROLE}", "Values": ["node"]},
        ],
        max_concurrency=settings.prune_max_concurrency,
        max_errors=settings.prune_max_errors,
        log_group=f"/slipway/{settings.environment}/prune",
    )
    logger.info("prune sent", extra={"command_id": command_id})
    return {"command_id": command_id}


def record_prune(event: dict[str, Any]) -> dict[str, Any]:
    """On SSM's "Command Status-change Notification": log and measure what a prune did per node.

    Runs once per finished command (not per node, not sleeping); other commands are ignored.
    """
    settings = get_settings()
    detail = event.get("detail") or {}
    command_id = detail.get("command-id")
    if not command_id:
        return {"ignored": "no command-id"}
    comment = ssm.command_comment(aws.client("ssm"), command_id)
    if comment != prune_comment(settings.environment):
        return {"ignored": "not a prune of this environment"}
    results = scripts.prune_results(ssm.invocations(aws.client("ssm"), command_id))
    for result in results:
        if result.error:
            logger.error(
                "prune failed on a node",
                extra={"command_id": command_id, "instance_id": result.instance_id, "error": result.error},
            )
        else:
            logger.info(
                "prune done on a node",
                extra={
                    "command_id": command_id,
                    "instance_id": result.instance_id,
                    "reclaimed_bytes": result.reclaimed_bytes,
                },
            )
    reclaimed = sum(r.reclaimed_bytes or 0 for r in results)
    failed = [r.instance_id for r in results if r.error]
    metrics.add_metric(name="PruneReclaimedBytes", unit=MetricUnit.Bytes, value=reclaimed)
    metrics.add_metric(name="PruneNodesSucceeded", unit=MetricUnit.Count, value=len(results) - len(failed))
    metrics.add_metric(name="PruneNodesFailed", unit=MetricUnit.Count, value=len(failed))
    logger.info(
        "prune recorded",
        extra={
            "command_id": command_id,
            "status": detail.get("status"),
            "nodes": len(results),
            "reclaimed_bytes": reclaimed,
            "failed": failed,
        },
    )
    return {
        "command_id": command_id,
        "status": detail.get("status"),
        "nodes": len(results),
        "reclaimed_bytes": reclaimed,
        "failed": failed,
        "per_node": {r.instance_id: r.reclaimed_bytes for r in results},
    }
