"""Telling GitHub: the commit status each way out of the deploy machine sets, the run's GitHub
Deployment (created `in_progress` by 'Prepare deployment', given its outcome at the end, and the
deployment it replaced made `inactive`), and the report of a run stopped from the console or timed
out (which ran none of its own report states). Each of them ends the run's hold on the environment:
it gives up the run's lease (steps/lease.py) first, so that a report GitHub fails cannot keep it."""

from __future__ import annotations

import json
from typing import cast

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import aws, github, naming, plans
from chalicelib.aws import ssm
from chalicelib.errors import GitHubRefused, InvalidInput
from chalicelib.observability import logger, metrics
from chalicelib.settings import get_settings
from chalicelib.steps import lease
from chalicelib.steps.common import github_token
from chalicelib.steps.registry import task
from chalicelib.steps.state import Deployment, GitHubReport, ReportInput

# The deployment status each way out of the deploy machine sets on the run's GitHub Deployment.
DEPLOYMENT_STATES = {
    "success": "success",
    # Deployed, only removing what it replaced failed (the commit status says `error` and why): the
    # new nodes passed the health gate and serve the stack, so the environment runs this deployment.
    "error": "success",
    "failure": "failure",
    # Skipped for a newer push: `inactive`, not `error`. The REST description gives `inactive` to a
    # deployment that newer ones made obsolete (what `auto_inactive` adds to the environment's
    # earlier deployments), which is what a skipped run is, only before it ever became active;
    # `error` would put a red mark in the environment's history for a run that went as designed.
    "superseded": "inactive",
    # Stopped from the console or timed out: `error`, as its commit status says: the run broke off
    # part-way (nothing was judged), where `failure` is a deployment that ran its course and failed.
    "stopped": "error",
}


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


def open_deployment(
    report: GitHubReport, deployment: Deployment, execution_arn: str, token: str | None
) -> GitHubReport:
    """`report` with the run's GitHub Deployment: created for the commit and the environment (or
    found, if a retried 'Prepare deployment' created it already) and set `in_progress`. News only,
    as the pending commit status: it never raises, whatever GitHub answers."""
    opened: GitHubReport = {**report}
    if not token:  # `report` says why nothing is sent
        return opened
    settings = get_settings()
    api, repository, commit = settings.github_api, deployment["repository"], deployment["commit"]
    environment, payload = deployment["environment"], {"execution": deployment["id"]}
    branch = deployment["ref"].removeprefix("refs/heads/")
    try:
        deployment_id = github.find_deployment(
            api, repository, token, environment=environment, commit=commit, payload=payload
        ) or github.create_deployment(
            api,
            repository,
            commit,
            token,
            environment=environment,
            description=f"Slipway deploys {commit[:7]} ({branch}) to {environment}",
            payload=payload,
        )
        if deployment_id is None:
            why = "GitHub merged the default branch into the commit instead of deploying it (202)"
            logger.warning("GitHub deployment not created", extra={"why": why})
            opened["deployment_why"] = why
            return opened
        opened["deployment_id"] = deployment_id
        github.set_deployment_status(
            api,
            repository,
            deployment_id,
            token,
            state="in_progress",
            description=plans.status_description("pending", environment, {}),
            log_url=naming.execution_console_url(execution_arn),
        )
        opened["deployment_state"] = "in_progress"
        logger.info("GitHub deployment started", extra={"github_deployment": deployment_id})
    except Exception as exc:  # noqa: BLE001  # news only: the deployment never stops a deployment (sent once)
        logger.warning("GitHub deployment not started", extra={"why": str(exc)})
        opened["deployment_why"] = str(exc)
    return opened


def close_deployment(
    report: GitHubReport,
    repository: str,
    commit: str,
    outcome: str,
    state: dict[str, object],
    execution_arn: str,
    token: str | None,
) -> GitHubReport:
    """`report` with the outcome set on the run's GitHub Deployment (DEPLOYMENT_STATES; on success
    with the environment's address, `$.ingress.url`, when it has one) and, once it is active, the
    environment's previous active deployment made `inactive`: GitHub's `auto_inactive` does that
    only outside production environments, so it is done here for every one. A refusal is logged
    and kept in `deployment_why`; a transient failure raises (the state machine retries)."""
    closed: GitHubReport = {**report}
    carried = state.get("github")
    carried = carried if isinstance(carried, dict) else {}
    deployment_id = carried.get("deployment_id")
    deployment_id = deployment_id if isinstance(deployment_id, int) and not isinstance(deployment_id, bool) else None
    if deployment_id is not None:
        closed["deployment_id"] = deployment_id
    if not token:
        return closed
    settings = get_settings()
    api, environment = settings.github_api, settings.environment
    try:
        if deployment_id is None and outcome == "stopped":
            # A stopped run's report has only the execution's input: its deployment is found by
            # the payload 'Prepare deployment' gave it.
            deployment_id = github.find_deployment(
                api,
                repository,
                token,
                environment=environment,
                commit=commit,
                payload={"execution": execution_arn.rsplit(":", 1)[-1]},  # the name: ARNs end with it
            )
        if deployment_id is None:
            closed["deployment_why"] = str(carried.get("deployment_why") or "the run has no GitHub deployment")
            return closed
        closed["deployment_id"] = deployment_id
        deployment_state = DEPLOYMENT_STATES.get(outcome, "error")
        ingress = state.get("ingress")
        url = ingress.get("url") if isinstance(ingress, dict) else None
        github.set_deployment_status(
            api,
            repository,
            deployment_id,
            token,
            state=deployment_state,
            description=plans.status_description(outcome, environment, state),
            environment_url=url if deployment_state == "success" and isinstance(url, str) and url else None,
            log_url=naming.execution_console_url(execution_arn),
        )
        closed["deployment_state"] = deployment_state
        logger.info(
            "GitHub deployment status set", extra={"github_deployment": deployment_id, "state": deployment_state}
        )
        if deployment_state == "success":
            previous = github.previous_success(api, repository, token, environment=environment, current=deployment_id)
            if previous is not None:
                github.set_deployment_status(
                    api,
                    repository,
                    previous,
                    token,
                    state="inactive",
                    description=f"Replaced in {environment} by {commit[:7]}",
                )
                closed["replaced"] = previous
    except GitHubRefused as exc:
        logger.warning("GitHub deployment status refused", extra={"why": str(exc)})
        closed["deployment_why"] = str(exc)
    return closed


@task(
    "Report the partial deployment to GitHub",
    "Report success to GitHub",
    "Report the skipped run to GitHub",
    "Report failure to GitHub",
)
def report_outcome(event: ReportInput) -> GitHubReport:
    """Record what is deployed (where a heal reads it), give up the run's lease on the
    environment, then tell GitHub (`tell_github`; a heal only when it failed). Every way out of the
    deploy machine runs this, so no run keeps the lease (a run that never took it, that failed
    before its turn or was skipped, releases nothing)."""
    found = event["run"].get("deployment")
    deployment = cast(Deployment, found) if isinstance(found, dict) and found.get("environment") else None
    if deployment and event["outcome"] in DEPLOYED:
        record_deployed(deployment)
    lease.release(get_settings().environment, event["execution_arn"])
    if deployment and deployment.get("trigger") == "heal":
        return report_heal(event, deployment)
    return tell_github(event)


# The outcomes after which the commit runs on the environment: what a heal deploys again.
DEPLOYED = ("success", "error")


def record_deployed(deployment: Deployment) -> None:
    """Keep the environment's last successful deployment where a heal reads it
    (naming.deployed_parameter); teardown deletes it."""
    record = {k: deployment[k] for k in ("repository", "ref", "commit")} | {"execution": deployment["id"]}
    ssm.put_string(aws.client("ssm"), naming.deployed_parameter(deployment["environment"]), json.dumps(record))


def report_heal(event: ReportInput, deployment: Deployment) -> GitHubReport:
    """A heal deploys again the commit GitHub already shows deployed: it tells GitHub only when it
    fails; a heal that succeeded logs and counts the nodes it replaced (`NodesHealed`)."""
    if event["outcome"] == "superseded":  # deployed since it started ('Look for earlier runs')
        return GitHubReport(reported=False, why="a heal skipped for a deployment made since it started")
    if event["outcome"] != "success":
        return tell_github(event)
    healed = len((event["run"].get("nodes") or {}).get("new") or [])
    logger.info("nodes healed", extra={"nodes": healed, "commit": deployment["commit"]})
    metrics.add_metric(name="NodesHealed", unit=MetricUnit.Count, value=healed)
    metrics.flush_metrics()  # a task's Lambda has no metrics middleware (app.py)
    return GitHubReport(reported=False, why="a heal that succeeded sets no status on the deployed commit")


def tell_github(event: ReportInput) -> GitHubReport:
    """The run's last word on GitHub: `success`, `failure` (nothing changed: the previous nodes
    serve), `error` (deployed, but removing what it replaced failed), or `superseded` (skipped in
    the queue for a newer push; GitHub shows it as `error`, "not deployed"), as the commit status,
    then on the run's GitHub Deployment (`close_deployment`). A status GitHub refuses is logged and
    the run ends as it would have; a transient failure is retried by the state machine (what was
    set before it is set again: GitHub shows a commit status context's newest, a deployment's newest)."""
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
    token = github_token(get_settings())  # once: the commit status and the deployment share it
    newer = (state.get("queue") or {}).get("superseded_by") or {}
    if outcome == "superseded" and str(newer.get("commit") or "").lower() == commit:
        # Its own deployment is still made inactive below: the newer run has a deployment of its own.
        report = GitHubReport(reported=False, why="the run this one was skipped for deploys the same commit")
    else:
        try:
            report = set_commit_status(repository, commit, outcome, state, event["execution_arn"], token)
        except GitHubRefused as exc:
            logger.warning("commit status refused", extra={"why": str(exc)})
            report = GitHubReport(reported=False, why=str(exc))
    return close_deployment(report, repository, commit, outcome, state, event["execution_arn"], token)


def report_stopped_run(event: dict[str, object]) -> GitHubReport | dict[str, str]:
    """On Step Functions' "Execution Status Change" for a deploy stopped from the console or timed
    out: no state of the run itself ran to tell GitHub, so the commit would stay `pending` for
    ever, nor to give up its lease. A stopped teardown's lease is given up too (GitHub hears of
    deploys only). Events of other state machines (another stage's, or anything else in the
    account) are ignored. EventBridge invokes it asynchronously: an error (GitHub down) is retried
    by Lambda, twice."""
    settings = get_settings()
    detail = event.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    status, machine = str(detail.get("status") or ""), str(detail.get("stateMachineArn") or "")
    if status not in ("ABORTED", "TIMED_OUT"):
        return {"ignored": f"status {status or 'missing'}"}
    kind = next(
        (
            k
            for k in naming.STATE_MACHINES
            if machine.endswith(":stateMachine:" + naming.state_machine_name(settings.environment, k))
        ),
        None,
    )
    if kind is None:
        return {"ignored": "not one of this environment's state machines"}
    execution_arn = str(detail.get("executionArn") or "")
    released = lease.release(settings.environment, execution_arn) if execution_arn else False
    if kind != "deploy":  # a teardown: nothing to tell GitHub
        return {"lease": "released" if released else "not held"}
    try:
        run = json.loads(detail.get("input") or "{}")
    except ValueError:
        run = None
    if not isinstance(run, dict):
        return {"ignored": "the execution's input is not a JSON object"}
    metrics.add_metric(name="DeploymentsStopped", unit=MetricUnit.Count, value=1)
    answer = tell_github(ReportInput(run={**run, "status": status}, outcome="stopped", execution_arn=execution_arn))
    logger.info("stopped run reported", extra={"status": status, "github": answer})
    return answer
