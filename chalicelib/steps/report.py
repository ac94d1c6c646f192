"""Telling GitHub: the commit status each way out of the deploy machine sets, and the report of a
run stopped from the console or timed out (which ran none of its own report states)."""

from __future__ import annotations

import json

from chalicelib import naming, plans
from chalicelib.aws import github
from chalicelib.errors import GitHubRefused, InvalidInput
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import github_token
from chalicelib.steps.state import GitHubReport, ReportInput


def set_commit_status(
    repository: str, commit: str, outcome: str, state: dict[str, object], execution_arn: str, token: str | None
) -> GitHubReport:
    """Set the commit's status on GitHub (only with a token: reading a public repository needs
    none, writing a status does). Returns what the console shows as `github`."""
    settings = get_settings()
    if not token and settings.github_token_parameter:
        why = f"SLIPWAY_GITHUB_TOKEN_PARAMETER names {settings.github_token_parameter}, which is missing or empty"
        logger.warning("commit statuses are off", extra={"why": why})
        return GitHubReport(reported=False, why=f"{why}: commit statuses are off")
    if not token:
        return GitHubReport(reported=False, why="no SLIPWAY_GITHUB_TOKEN_PARAMETER: commit statuses are off")
    description = plans.status_description(outcome, settings.environment, state)
    github_state = plans.status_state(outcome)
    github.set_status(
        settings.github_api,
        repository,
        commit,
        token,
        state=github_state,
        description=description,
        target_url=naming.execution_console_url(execution_arn),
        context=naming.status_context(settings.environment),
    )
    logger.info("commit status set", extra={"state": github_state, "description": description})
    return GitHubReport(reported=True, state=github_state, description=description)


def report_outcome(event: ReportInput) -> GitHubReport:
    """The run's last word on GitHub: `success`, `failure` (nothing changed: the previous nodes
    serve), `error` (deployed, but removing what it replaced failed), or `superseded` (skipped in
    the queue for a newer push; GitHub shows it as `error`, "not deployed"). A status GitHub refuses
    is logged and the run ends as it would have; a transient failure is retried by the state machine."""
    state, outcome = event["run"], event["outcome"]
    # A run that failed in 'Prepare deployment' has no deployment yet: its input names the commit.
    deployment = state.get("deployment")
    source = deployment if isinstance(deployment, dict) else state
    repository, commit = str(source.get("repository") or ""), str(source.get("commit") or "").lower()
    try:
        plans.validate_commit(commit)
    except InvalidInput:
        return GitHubReport(reported=False, why="the run has no commit to report on")
    if not repository:
        return GitHubReport(reported=False, why="the run has no repository to report on")
    newer = (state.get("queue") or {}).get("superseded_by") or {}
    if outcome == "superseded" and str(newer.get("commit") or "").lower() == commit:
        return GitHubReport(reported=False, why="the run this one was skipped for deploys the same commit")
    try:
        return set_commit_status(
            repository, commit, outcome, state, event["execution_arn"], github_token(get_settings())
        )
    except GitHubRefused as exc:
        logger.warning("commit status refused", extra={"why": str(exc)})
        return GitHubReport(reported=False, why=str(exc))


def report_stopped_run(event: dict[str, object]) -> GitHubReport | dict[str, str]:
    """On Step Functions' "Execution Status Change" for a deploy stopped from the console or timed
    out: no state of the run itself ran to tell GitHub, so the commit would stay `pending` for
    ever. Events of other state machines (another stage's, or anything else in the account) are
    ignored. EventBridge invokes it asynchronously: an error (GitHub down) is retried by Lambda,
    twice."""
    settings = get_settings()
    detail = event.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    status, machine = str(detail.get("status") or ""), str(detail.get("stateMachineArn") or "")
    if status not in ("ABORTED", "TIMED_OUT"):
        return {"ignored": f"status {status or 'missing'}"}
    if not machine.endswith(":stateMachine:" + naming.state_machine_name(settings.environment, "deploy")):
        return {"ignored": "not this environment's deploy state machine"}
    try:
        run = json.loads(detail.get("input") or "{}")
    except ValueError:
        run = None
    if not isinstance(run, dict):
        return {"ignored": "the execution's input is not a JSON object"}
    answer = report_outcome(
        ReportInput(
            run={**run, "status": status}, outcome="stopped", execution_arn=str(detail.get("executionArn") or "")
        )
    )
    logger.info("stopped run reported", extra={"status": status, "github": answer})
    return answer
