"""'Prepare deployment': the execution input validated, and the names this deployment will use."""

from __future__ import annotations

from chalicelib import deploy_input, github, naming, plans
from chalicelib.errors import ConfigurationError, EnvironmentOwned
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import deployed_record, github_token
from chalicelib.steps.registry import task
from chalicelib.steps.report import open_deployment, set_commit_status
from chalicelib.steps.state import Deployment, GitHubReport, Prepared, PrepareInput


@task("Prepare deployment")
def prepare(event: PrepareInput) -> Prepared:
    """Validate the execution input (`deploy_input`: the same rules as the webhook's) and fix the
    names this deployment will use."""
    settings = get_settings()
    started = deploy_input.parse(event.get("input"))
    commit, repository = started.commit, started.repository
    deployment_id = event.get("execution") or ""
    logger.append_keys(deployment_id=deployment_id)
    token = github_token(settings)
    _refuse_another_repository(settings.environment, repository)
    trees = github.top_level_trees(settings.github_api, repository, commit, token)
    source = plans.image_source_of(trees)
    if source == "commit":
        key = plans.image_key(trees)
    elif settings.node_image_key:
        key = settings.node_image_key
    else:
        raise ConfigurationError(
            "the commit has neither packer/ nor ansible/, and SLIPWAY_NODE_IMAGE_KEY is not set: `slipway bootstrap` "
            "uploads the installation's node image source and writes it"
        )
    deployment = Deployment(
        id=deployment_id,
        environment=settings.environment,
        repository=repository,
        ref=started.ref,
        commit=commit,
        pusher=started.pusher,
        image_key=key,
        image_name=naming.image_name(settings.environment, key),
        image_source=source,
    )
    if started.trigger == "heal":
        deployment["trigger"] = "heal"
    logger.info(
        "deployment prepared",
        extra={
            "commit": commit,
            "image": deployment["image_name"],
            "image_source": source,
            "trees": {f: trees[f] for f in plans.IMAGE_FOLDERS if f in trees},
        },
    )
    execution_arn = event.get("execution_arn") or ""
    if started.trigger == "heal":
        # A heal deploys again what is deployed: the commit's status and Deployment already say so;
        # only a failed heal is news for the commit (report.py).
        quiet = GitHubReport(reported=False, why="a heal sets no status unless it fails")
        return Prepared(deployment=deployment, poll_seconds=settings.poll_seconds, github=quiet)
    try:
        report = set_commit_status(repository, commit, "pending", {}, execution_arn, token)
    except Exception as exc:  # noqa: BLE001  # news only: the status never stops a deployment (sent once)
        logger.warning("commit status not set", extra={"why": str(exc)})
        report = GitHubReport(reported=False, why=str(exc))
    # The run's GitHub Deployment, `in_progress`: its id goes on in `github` to the run's report.
    report = open_deployment(report, deployment, execution_arn, token)
    return Prepared(deployment=deployment, poll_seconds=settings.poll_seconds, github=report)


def _refuse_another_repository(environment: str, repository: str) -> None:
    """An environment runs one repository's application: the first that deployed it (recorded
    beside the deployed commit) owns it until teardown; another is refused before anything changes."""
    owner = (deployed_record(environment) or {}).get("repository") or ""
    if owner and owner.lower() != repository.lower():
        raise EnvironmentOwned(
            f"environment {environment} runs {owner}; {repository} cannot deploy to it (tear it down first, or "
            "deploy this repository to a stage of its own)"
        )
