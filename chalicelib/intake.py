"""The webhook use case: headers and raw body in, an HTTP status and a short JSON answer out.

Order matters: size, headers and signature are checked before any byte of the body is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import aws, deploy_input, webhook
from chalicelib.aws import stepfunctions
from chalicelib.observability import logger, metrics
from chalicelib.secrets import SecretUnavailable, webhook_secrets
from chalicelib.settings import get_settings


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object] = field(default_factory=dict)


def _refuse(status: int, reason: str) -> Answer:
    metrics.add_dimension(name="status", value=str(status))
    metrics.add_metric(name="Refused", unit=MetricUnit.Count, value=1)
    logger.warning("delivery refused", extra={"status": status, "reason": reason})
    return Answer(status, {"error": reason})


def receive(headers: Mapping[str, str], body: bytes, content_type: str | None) -> Answer:
    lower = {k.lower(): v for k, v in headers.items()}
    delivery = lower.get(webhook.DELIVERY_HEADER, "")
    event = lower.get(webhook.EVENT_HEADER, "")
    # Only a well-formed id goes into every log line; a malformed one is refused below.
    logger.append_keys(delivery_id=delivery if deploy_input.valid_delivery_id(delivery) else None)
    if len(body) > webhook.MAX_BODY_BYTES:
        return _refuse(413, "payload larger than 3 MiB")
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        return _refuse(415, "set the webhook's content type to application/json")
    if not delivery or not event:
        return _refuse(400, "X-GitHub-Event and X-GitHub-Delivery are required")
    problem = deploy_input.delivery_id_problem(delivery)
    if problem:
        return _refuse(400, f"X-GitHub-Delivery {problem}")
    settings = get_settings()
    try:
        secrets = webhook_secrets(settings.webhook_secret_parameter)
    except SecretUnavailable as exc:
        logger.error("webhook secret unavailable; refusing every delivery", extra={"why": str(exc)})
        return _refuse(503, "webhook secret not configured")
    if not webhook.signature_valid(secrets, body, lower.get(webhook.SIGNATURE_HEADER)):
        return _refuse(401, "missing or invalid X-Hub-Signature-256")
    rules = webhook.Rules(settings.branches, settings.tags, settings.repositories, settings.deploy_workflow)
    decision = webhook.decide(event, delivery, body, rules)
    if isinstance(decision, webhook.Refuse):
        return _refuse(decision.status, decision.reason)
    if isinstance(decision, webhook.Pong):
        metrics.add_metric(name="Pinged", unit=MetricUnit.Count, value=1)
        return Answer(200, {"pong": True, "hook_id": decision.hook_id})
    if isinstance(decision, webhook.Ignore):
        metrics.add_dimension(name="reason", value=decision.code)
        metrics.add_metric(name="Ignored", unit=MetricUnit.Count, value=1)
        logger.info("delivery ignored", extra={"reason": decision.reason})
        return Answer(202, {"ignored": decision.reason})
    name = decision.execution_name()
    logger.append_keys(execution=name)
    arn = stepfunctions.start(
        aws.client("stepfunctions"), settings.deploy_state_machine_arn, name, decision.execution_input()
    )
    metrics.add_metric(name="Accepted", unit=MetricUnit.Count, value=1)
    logger.info("deployment accepted", extra={"commit": decision.commit, "ref": decision.ref})
    return Answer(202, {"execution_arn": arn, "commit": decision.commit})
