"""CodeBuild adapter: start the image bake and read its result from exported variables."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from chalicelib.aws import Client, error_code, just_created
from chalicelib.errors import ConfigurationError

AMI_VARIABLE = "AMI_ID"
# BatchGetBuilds right after StartBuild: a build just started may not be found yet (CodeBuild
# mostly answers with an empty `builds` then, which `describe` reports as NOT_FOUND).
BUILD_NOT_VISIBLE = frozenset({"ResourceNotFoundException"})


@dataclass(frozen=True)
class Build:
    build_id: str
    status: str
    ami_id: str | None


def start(
    codebuild: Client, project: str, variables: dict[str, str], idempotency_token: str, source_location: str
) -> str:
    """Start a bake of the source at `source_location` ("bucket/key" of a zip in S3). A project
    that does not exist is a ConfigurationError at once: SLIPWAY_BAKE_PROJECT names it."""
    try:
        build = codebuild.start_build(
            projectName=project,
            sourceTypeOverride="S3",
            sourceLocationOverride=source_location,
            environmentVariablesOverride=[{"name": k, "value": v, "type": "PLAINTEXT"} for k, v in variables.items()],
            idempotencyToken=idempotency_token,
        )["build"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise ConfigurationError(
                f"SLIPWAY_BAKE_PROJECT names CodeBuild project {project!r}, which does not exist "
                f"in this account and region (`slipway bootstrap` creates slipway-<environment>-bake): "
                f"{exc}"
            ) from exc
        raise
    return str(build["id"])


def describe(codebuild: Client, build_id: str) -> Build:
    """The build's status and the AMI it exported; status NOT_FOUND while CodeBuild does not list
    it, and TransientError if it answers not found (BUILD_NOT_VISIBLE): it was just started."""
    with just_created(f"build {build_id}", BUILD_NOT_VISIBLE):
        builds = codebuild.batch_get_builds(ids=[build_id])["builds"]
    if not builds:
        return Build(build_id, "NOT_FOUND", None)
    build = builds[0]
    exported = {v["name"]: v.get("value", "") for v in build.get("exportedEnvironmentVariables", [])}
    return Build(build_id, str(build["buildStatus"]), exported.get(AMI_VARIABLE) or None)
