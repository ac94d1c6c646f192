"""CodeBuild adapter: start the image bake and read its result from exported variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    exported: Mapping[str, str] = field(default_factory=dict)
    failed_phase: str | None = None  # the first phase that did not succeed, and what CodeBuild said of it
    failure: str = ""
    log_group: str | None = None
    log_stream: str | None = None
    log_link: str | None = None


def start(
    codebuild: Client,
    project: str,
    variables: dict[str, str],
    idempotency_token: str,
    source_location: str,
    *,
    setting: str = "SLIPWAY_BAKE_PROJECT",
    buildspec: str | None = None,
    parameters: list[dict[str, str]] | None = None,
) -> str:
    """Start a build of the source at `source_location` ("bucket/key" of a zip in S3), with
    `variables` as plain text and `parameters` (already CodeBuild's shape: type PARAMETER_STORE)
    resolved by CodeBuild. A project that does not exist is a ConfigurationError at once: `setting`
    names it."""
    request = {
        "projectName": project,
        "sourceTypeOverride": "S3",
        "sourceLocationOverride": source_location,
        "environmentVariablesOverride": [{"name": k, "value": v, "type": "PLAINTEXT"} for k, v in variables.items()]
        + list(parameters or []),
        "idempotencyToken": idempotency_token,
    }
    if buildspec is not None:
        request["buildspecOverride"] = buildspec
    try:
        build = codebuild.start_build(**request)["build"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise ConfigurationError(
                f"{setting} names CodeBuild project {project!r}, which does not exist "
                f"in this account and region (`slipway bootstrap` creates it): {exc}"
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
    return _build(builds[0])


def describe_many(codebuild: Client, build_ids: list[str]) -> dict[str, Build]:
    """Each build's status, exports, failing phase and log (one BatchGetBuilds, up to 100 ids);
    a build CodeBuild does not list yet is NOT_FOUND."""
    with just_created(f"builds {', '.join(build_ids)}", BUILD_NOT_VISIBLE):
        found = {b["id"]: _build(b) for b in codebuild.batch_get_builds(ids=build_ids)["builds"]}
    return {i: found.get(i) or Build(i, "NOT_FOUND", None) for i in build_ids}


def _build(build: Mapping[str, Any]) -> Build:
    exported = {v["name"]: v.get("value", "") for v in build.get("exportedEnvironmentVariables", [])}
    failed = next(
        (p for p in build.get("phases") or [] if p.get("phaseStatus") not in (None, "SUCCEEDED")),
        None,
    )
    logs = build.get("logs") or {}
    return Build(
        build_id=str(build["id"]),
        status=str(build["buildStatus"]),
        ami_id=exported.get(AMI_VARIABLE) or None,
        exported=exported,
        failed_phase=str(failed["phaseType"]) if failed else None,
        failure="; ".join(
            str(c.get("message") or "") for c in (failed or {}).get("contexts") or [] if c.get("message")
        ),
        log_group=logs.get("groupName"),
        log_stream=logs.get("streamName"),
        log_link=logs.get("deepLink"),
    )


def stop(codebuild: Client, build_id: str) -> bool:
    """Stop a build still running; False if it had ended (or was never found)."""
    try:
        codebuild.stop_build(id=build_id)
    except ClientError as exc:
        if error_code(exc) in ("InvalidInputException", "ResourceNotFoundException"):  # ended, or gone
            return False
        raise
    return True
