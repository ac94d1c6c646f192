"""CodeBuild adapter: start the image bake and read its result from exported variables."""

from __future__ import annotations

from dataclasses import dataclass

AMI_VARIABLE = "AMI_ID"


@dataclass(frozen=True)
class Build:
    build_id: str
    status: str
    ami_id: str | None


def start(codebuild, project: str, variables: dict[str, str], idempotency_token: str,
          source_location: str) -> str:
    """Start a bake of the source at `source_location` ("bucket/key" of a zip in S3)."""
    build = codebuild.start_build(
        projectName=project,
        sourceTypeOverride="S3",
        sourceLocationOverride=source_location,
        environmentVariablesOverride=[
            {"name": k, "value": v, "type": "PLAINTEXT"} for k, v in variables.items()
        ],
        idempotencyToken=idempotency_token,
    )["build"]
    return build["id"]


def describe(codebuild, build_id: str) -> Build:
    builds = codebuild.batch_get_builds(ids=[build_id])["builds"]
    if not builds:
        return Build(build_id, "NOT_FOUND", None)
    build = builds[0]
    exported = {v["name"]: v.get("value", "") for v in build.get("exportedEnvironmentVariables", [])}
    return Build(build_id, build["buildStatus"], exported.get(AMI_VARIABLE) or None)
