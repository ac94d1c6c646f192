"""The application's images: each service the stack builds from the repository gets a content key
(chalicelib/builds.py); a key its ECR repository has already is reused, the others are built in
CodeBuild (one build per service, all at once, beside the node image's bake), never on the nodes.
A failed build ends the run before anything changes, naming the service, the failing phase, the
log's last lines and where the whole log is."""

from __future__ import annotations

import json
import tempfile
import zipfile

from chalicelib import aws, builds, github, naming, plans, stack
from chalicelib.aws import codebuild, ecr, logs, s3
from chalicelib.errors import BuildFailed, StackInvalid, TransientError
from chalicelib.observability import logger
from chalicelib.settings import Settings, get_settings
from chalicelib.steps.common import bake_bucket, client_token, deployment_of, github_token, tags_for
from chalicelib.steps.registry import task
from chalicelib.steps.state import Builds, Deployment, DeployRun, ServiceBuild

LOG_LINES = 15  # of a failed build's log, in the run's error
DIGEST_VARIABLE = "IMAGE_DIGEST"  # what builds.BUILDSPEC exports


@task("Start the builds")
def start_builds(event: DeployRun) -> Builds:
    """Key each build from the commit's git trees, converge the services' ECR repositories, and
    start a CodeBuild build for each key ECR does not have yet."""
    deployment = deployment_of(event)
    settings = get_settings()
    specs = _specs(event, settings)
    if not specs:
        return Builds(status="NONE", services=[], checks=0)
    token = github_token(settings)
    paths = sorted({p for spec in specs for p in builds.paths_to_look_up(spec)})
    ids = github.path_ids(settings.github_api, deployment["repository"], deployment["commit"], paths, token)
    absent = [p for p in paths if not ids.get(p)]
    if absent:
        raise StackInvalid(
            f"{event['stack']['path']}: the commit has no {', '.join(absent)} to build from "
            f"(services {', '.join(s.service for s in specs if set(builds.paths_to_look_up(s)) & set(absent))})"
        )
    client = aws.client("ecr")
    services: list[ServiceBuild] = []
    source: str | None = None
    for spec in specs:
        key = builds.build_key(spec, ids)
        tags = tags_for(deployment, "build") | {"slipway:service": spec.service}
        name = naming.repository_name(deployment["environment"], spec.service)
        repository = ecr.ensure_repository(client, name, tags, ecr.lifecycle_policy(settings.builds_kept))
        digest = ecr.digest_of(client, name, key)
        service = ServiceBuild(
            name=spec.service,
            key=key,
            repository=name,
            image=f"{repository.uri}:{key}",
            digest=digest,
            build_id=None,
            built=digest is None,
        )
        if digest is None:
            cache = ecr.ensure_repository(
                client,
                naming.cache_repository_name(deployment["environment"], spec.service),
                tags,
                ecr.lifecycle_policy(None),
                immutable=False,
            )
            source = source or _store_source(deployment, settings, token)
            service["build_id"] = _start(deployment, settings, spec, repository, cache.uri, key, source)
        services.append(service)
    built = [s["name"] for s in services if s["built"]]
    logger.info(
        "builds planned",
        extra={
            "built": built,
            "reused": [s["name"] for s in services if not s["built"]],
            "keys": {s["name"]: s["key"] for s in services},
        },
    )
    return Builds(status="IN_PROGRESS" if built else "SUCCEEDED", services=services, checks=0)


@task("Check the builds")
def check_builds(event: DeployRun) -> Builds:
    """Every build of the run, read at once: SUCCEEDED with each image's digest, or BuildFailed."""
    deployment_of(event)
    state = event["builds"]
    pending = [s for s in state["services"] if s["build_id"] and not s["digest"]]
    found = codebuild.describe_many(aws.client("codebuild"), [s["build_id"] or "" for s in pending])
    if any(b.status == "NOT_FOUND" for b in found.values()):
        raise TransientError("a build just started is not visible yet")
    failures: list[str] = []
    failed: list[str] = []
    services: list[ServiceBuild] = []
    for service in state["services"]:
        build = found.get(service["build_id"] or "")
        if build is not None and not service["digest"]:
            verdict = builds.build_status(build.status, build.exported.get(DIGEST_VARIABLE))
            if verdict == "SUCCEEDED":
                service = {**service, "digest": build.exported[DIGEST_VARIABLE]}
            elif verdict != "IN_PROGRESS":
                failures.append(_failure(service["name"], verdict, build))
                failed.append(f"{service['name']} (in {build.failed_phase or 'CodeBuild'})")
        services.append(service)
    if failures:
        # The run ends here: a build of it left running would push its key while the next run
        # builds the same key again, and the immutable tag would refuse the second push.
        _stop_the_rest(services, found, failed)
        # The first line is what a commit status shows: every failing service and its phase.
        raise BuildFailed(f"{', '.join(failed)} did not build; nothing was changed\n" + "\n".join(failures))
    done = all(s["digest"] for s in services)
    return Builds(status="SUCCEEDED" if done else "IN_PROGRESS", services=services, checks=state["checks"] + 1)


def _stop_the_rest(services: list[ServiceBuild], found: dict[str, codebuild.Build], failed: list[str]) -> None:
    client = aws.client("codebuild")
    for service in services:
        build = found.get(service["build_id"] or "")
        if build is None or service["digest"] or builds.build_status(build.status, None) != "IN_PROGRESS":
            continue
        try:
            stopped = codebuild.stop(client, build.build_id)
        except Exception as exc:  # noqa: BLE001  # the failure is what the run reports; this is tidying
            logger.warning("build not stopped", extra={"service": service["name"], "why": str(exc)})
            continue
        logger.info("build stopped", extra={"service": service["name"], "stopped": stopped, "because": failed})


def _specs(event: DeployRun, settings: Settings) -> tuple[builds.BuildSpec, ...]:
    stack_file = event["stack"]
    if not stack_file["present"] or not stack_file.get("builds"):
        return ()
    if not stack_file["key"]:
        raise StackInvalid("the run has no stored stack file to build from")
    parsed = stack.parse(
        s3.get(aws.client("s3"), bake_bucket(settings), stack_file["key"]),
        path=stack_file["path"],
        local_volumes=settings.local_volumes,
    )
    return builds.specs(parsed.document.get("services") or {}, stack_file["path"]).builds


def _store_source(deployment: Deployment, settings: Settings, token: str | None) -> str:
    """The commit's files (GitHub's archive without its top folder) in the bake bucket, once per
    commit: the builds' source, which their role alone may read (`builds/`)."""
    key = f"builds/{deployment['commit']}.zip"
    client = aws.client("s3")
    if not s3.exists(client, bake_bucket(settings), key):
        with tempfile.TemporaryFile() as archive:
            github.download_archive(settings.github_api, deployment["repository"], deployment["commit"], archive, token)
            archive.seek(0)
            try:
                data = plans.repository_source(archive)
            except zipfile.BadZipFile as exc:
                raise TransientError(f"GitHub's archive of {deployment['commit']} is not a whole zip") from exc
        s3.put(client, bake_bucket(settings), key, data)
    return f"{bake_bucket(settings)}/{key}"


def _start(
    deployment: Deployment,
    settings: Settings,
    spec: builds.BuildSpec,
    repository: ecr.Repository,
    cache_uri: str,
    key: str,
    source: str,
) -> str:
    bake = builds.bake_file(spec, repository.uri, key, cache_uri)
    parameters = {name: naming.secret_parameter(deployment["environment"], name) for name in spec.secrets}
    build_id = codebuild.start(
        aws.client("codebuild"),
        settings.build_project,
        {
            "BAKE_FILE": json.dumps(bake, sort_keys=True),
            "BUILD_TARGET": spec.service,
            "REGISTRY": repository.uri.split("/", 1)[0],
        },
        client_token(deployment["id"], "build", spec.service),
        source,
        setting="SLIPWAY_BUILD_PROJECT",
        buildspec=builds.BUILDSPEC,
        parameters=builds.secret_variables(spec, parameters),
    )
    logger.info("build started", extra={"service": spec.service, "key": key, "build_id": build_id})
    return build_id


def _failure(service: str, verdict: str, build: codebuild.Build) -> str:
    where = f" in {build.failed_phase}" if build.failed_phase else ""
    said = f" ({build.failure})" if build.failure else ""
    lines: list[str] = []
    if build.log_group and build.log_stream:
        try:
            lines = logs.last_lines(aws.client("logs"), build.log_group, build.log_stream, LOG_LINES)
        except Exception as exc:  # noqa: BLE001  # the log is for the message; its absence is said
            logger.warning("build log not read", extra={"service": service, "why": str(exc)})
    log = build.log_link or (
        f"CloudWatch Logs {build.log_group} {build.log_stream}" if build.log_group else "CodeBuild"
    )
    tail = "".join(f"\n  | {line[:300]}" for line in lines)
    return f"{service}: {verdict}{where}{said}; build {build.build_id}, whole log: {log}{tail}"
