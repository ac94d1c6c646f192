"""What the steps of several phases share: the deployment in the state, its tags, idempotency
tokens, the GitHub token, and sending a swarm command and asking whether it has finished."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, cast

from chalicelib import aws, naming
from chalicelib.aws import ssm
from chalicelib.errors import CommandFailed, ConfigurationError, InvalidInput
from chalicelib.observability import logger
from chalicelib.settings import Settings, get_settings
from chalicelib.steps.state import Command, Deployment


def deployment_of(event: Mapping[str, Any]) -> Deployment:
    """The run's deployment, as 'Prepare deployment' fixed it; its id goes on every log line."""
    deployment = event.get("deployment")
    if not isinstance(deployment, dict) or "id" not in deployment:
        raise InvalidInput("the state has no deployment; start from 'Prepare deployment'")
    logger.append_keys(deployment_id=deployment["id"])
    # Its shape is set by prepare and checked by the pipeline tests (tests/conftest.py).
    return cast(Deployment, deployment)


def tags_for(deployment: Deployment, role: str) -> dict[str, str]:
    """The tags of a resource this deployment creates (how steps and teardown find it again)."""
    return naming.tags(deployment["environment"], deployment["id"], deployment["commit"], role)


def client_token(*parts: str) -> str:
    """An idempotency token (ClientToken, idempotencyToken) for a create a retried step repeats."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def bake_bucket(settings: Settings) -> str:
    """The bucket of the bake's and the builds' sources and the stack files (SLIPWAY_BAKE_BUCKET)."""
    if not settings.bake_bucket:
        raise ConfigurationError("SLIPWAY_BAKE_BUCKET is not set; `slipway bootstrap` writes it")
    return settings.bake_bucket


def github_token(settings: Settings) -> str | None:
    """The GitHub token from SSM, or None when the stage has none. Read once per invocation:
    a step that needs it twice passes it on."""
    return (
        ssm.get_secure(aws.client("ssm"), settings.github_token_parameter) if settings.github_token_parameter else None
    )


def scope(event: Mapping[str, Any]) -> tuple[str, str | None]:
    """(environment, deployment or None): a deployment scope when compensating a failed run,
    the whole environment when tearing down."""
    settings = get_settings()
    if "deployment" in event:
        return settings.environment, deployment_of(event)["id"]
    environment = event.get("environment")
    if environment != settings.environment:
        raise InvalidInput(
            f"this Slipway manages environment {settings.environment!r}; "
            f'start teardown with {{"environment": "{settings.environment}"}}'
        )
    return environment, None


def execution_name(execution_arn: str) -> str:
    return execution_arn.split(":execution:", 1)[-1]


# --- swarm commands through SSM ------------------------------------------------------------


def send(deployment: Deployment, what: str, commands: list[str], target: str) -> Command:
    """Send a swarm command (`what`: promote, retire, leave) to one manager."""
    command_id = ssm.run_shell(
        aws.client("ssm"),
        commands=commands,
        comment=f"slipway {what} {deployment['id']}",
        timeout_seconds=get_settings().command_timeout_seconds,
        instance_ids=[target],
    )
    logger.info("swarm command sent", extra={"what": what, "through": target, "command_id": command_id})
    return Command(command_id=command_id, targets=[target], what=what)


def finished(command_id: str, targets: list[str]) -> list[ssm.Invocation] | None:
    """A command's per-target results once it has finished on every target, else None: the one
    answer to "has the command finished?" (swarm, health, promote, retire, leave)."""
    results = ssm.invocations(aws.client("ssm"), command_id)
    if len(results) < len(targets) or any(r.status not in ssm.FINAL_STATUSES for r in results):
        return None
    return results


def failure(what: str, results: list[ssm.Invocation]) -> CommandFailed | None:
    """The error naming every target a finished command failed on, or None if it succeeded."""
    failed = [r for r in results if r.status != "Success"]
    if not failed:
        return None
    return CommandFailed(
        "; ".join(
            f"swarm {what} failed on {r.instance_id}: {r.status} (exit {r.response_code}) {r.output.strip()[-300:]}"
            for r in failed
        )
    )


def deployed_record(environment: str) -> dict[str, str] | None:
    """What `record_deployed` last wrote for the environment (repository, ref, commit, execution):
    what a heal deploys again and which repository owns the environment; None when there is none
    (never deployed, or torn down) or it cannot be read."""
    raw = ssm.get_string(aws.client("ssm"), naming.deployed_parameter(environment))
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        logger.warning("the deployed-commit record is not JSON: read as none", extra={"value": raw[:200]})
        return None
    return record if isinstance(record, dict) and record.get("commit") and record.get("repository") else None
