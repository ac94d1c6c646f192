"""CodeBuild: moto runs no build and reports it SUCCEEDED at once, exporting nothing, and starts a
new build for a StartBuild whose idempotencyToken it has seen (CodeBuild answers with that token's),
and StopBuild does not stop what BatchGetBuilds reports.

The bake project: the emulator plays Packer's part. The build is IN_PROGRESS for its first checks,
then registers the AMI under the name and tags the Packer template gives it and exports AMI_ID, or
FAILED when its source lacks what the buildspec runs (or a test says so). With real nodes the bake
converges the swarm_node role for real, in the background, from the build's source.

The build project (SLIPWAY_BUILD_PROJECT): the emulator plays BuildKit's part for the one target
of the bake file the build is given. The build is IN_PROGRESS for its first checks, then FAILED
when its source has no Dockerfile where the bake file says (BuildKit's "failed to read
dockerfile"), or when a test says so (`Emulator.build_outcomes[service]`), with a log in CloudWatch
Logs and the failing phase as CodeBuild reports them; else the host builds it (emulated: an image
manifest made of the build key, so one key always gives one digest, put into ECR; real nodes: a real
BuildKit build pushed to the local registry) and the build exports IMAGE_DIGEST."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from unittest import mock

from slipway.emulator.account import ACCOUNT

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator

IMAGE_TAGS = {  # AMI tag -> Packer variable, as packer/sources.pkr.hcl's local.tags sets them
    "Name": "ami_name",
    "slipway:environment": "environment",
    "slipway:deployment": "deployment",
    "slipway:commit": "commit",
    "slipway:image-key": "image_key",
}
CONSTANT_IMAGE_TAGS = {"slipway:role": "image"}


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    from moto.codebuild.models import CodeBuildBackend
    from moto.codebuild.responses import CodeBuildResponse

    original_start = CodeBuildResponse.start_build

    started: dict[str, Any] = {}  # idempotency token -> the answer that started its build

    def start_build(response):
        # CodeBuild answers a StartBuild whose idempotencyToken it has seen (within five minutes)
        # with the build that token started; moto starts another.
        token = response._get_param("idempotencyToken")
        if token and token in started:
            return started[token]
        result = original_start(response)
        if token:
            started[token] = result
        build_id = result.result["build"]["id"]  # type: ignore[index]  # moto's ActionResult holds a dict
        variables = {v["name"]: v["value"] for v in response._get_param("environmentVariablesOverride", [])}
        if response._get_param("projectName") == os.environ.get("SLIPWAY_BUILD_PROJECT"):
            with emu._lock:
                emu.builds[build_id] = {
                    "variables": variables,
                    "polls": 0,
                    "source": response._get_param("sourceLocationOverride"),
                    "buildspec": response._get_param("buildspecOverride"),
                    "service": variables.get("BUILD_TARGET", ""),
                    "digest": None,
                }
            return result
        with emu._lock:
            emu.bakes[build_id] = {
                "variables": variables,
                "polls": 0,
                "ami_id": None,
                "source": response._get_param("sourceLocationOverride"),
            }
        return result

    patch(mock.patch.object(CodeBuildResponse, "start_build", start_build))

    original_stop = CodeBuildBackend.stop_build

    def stop_build(backend, build_id):
        # moto marks its history's copy of the build, not the one BatchGetBuilds answers with.
        with emu._lock:
            if build_id in emu.builds and emu.builds[build_id]["digest"] is None:
                emu.builds[build_id]["stopped"] = True
        return original_stop(backend, build_id)

    patch(mock.patch.object(CodeBuildBackend, "stop_build", stop_build))

    original_batch = CodeBuildBackend.batch_get_builds

    def batch_get_builds(backend, ids):
        builds = original_batch(backend, ids)
        for build in builds:
            if build["id"] in emu.builds:
                advance_build(emu, backend, build)
            else:
                advance_bake(emu, backend, build)
        return builds

    patch(mock.patch.object(CodeBuildBackend, "batch_get_builds", batch_get_builds))


def advance_bake(emu: Emulator, backend, build: dict) -> None:
    """Play the part of Packer: in progress on the first check, done on the later ones."""
    with emu._lock:
        bake = emu.bakes.get(build["id"])
        if bake is None:
            return
        bake["polls"] += 1
        if bake["polls"] < emu.bake_polls:
            build.update({"buildStatus": "IN_PROGRESS", "currentPhase": "BUILD", "buildComplete": False})
            return
        outcome = emu.bake_outcome if bake_source(bake) else "FAILED"
        if outcome == "SUCCEEDED":
            outcome = emu.host.build(bake)  # real nodes: the image, converged in the background
            if outcome == "IN_PROGRESS":
                build.update({"buildStatus": "IN_PROGRESS", "currentPhase": "BUILD", "buildComplete": False})
                return
        if outcome != "SUCCEEDED":
            build.update(
                {
                    "buildStatus": outcome,
                    "currentPhase": "COMPLETED",
                    "buildComplete": True,
                    "exportedEnvironmentVariables": [],
                }
            )
            return
        if bake["ami_id"] is None:
            ami_id = register_image(emu, backend.region_name, bake["variables"])
            emu.host.registered(ami_id, bake)
            bake["ami_id"] = ami_id
        build.update(
            {
                "buildStatus": "SUCCEEDED",
                "currentPhase": "COMPLETED",
                "buildComplete": True,
                "exportedEnvironmentVariables": [{"name": "AMI_ID", "value": bake["ami_id"]}],
            }
        )


def bake_source(bake: dict) -> bytes | None:
    """The zip CodeBuild would download for this build, if it has what the buildspec runs
    (packer/buildspec.yml and ansible/swarm_node.yml at its root); None makes the build fail."""

    from moto.s3.models import s3_backends

    if "archive" in bake:
        return bake["archive"]
    bucket, _, key = (bake.get("source") or "").partition("/")
    try:
        found = s3_backends[ACCOUNT]["aws"].get_object(bucket, key)
        if found is None:
            return None
        data = found.value
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except Exception:  # noqa: BLE001 - any missing piece is CodeBuild's DOWNLOAD_SOURCE failure
        return None
    bake["archive"] = data if {"packer/buildspec.yml", "ansible/swarm_node.yml"} <= names else None
    return bake["archive"]


def register_image(emu: Emulator, region: str, variables: dict[str, str]) -> str:
    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[ACCOUNT][region]
    # What Packer would do with these PKR_VAR_ variables: name the image, tag it.
    values = {k.removeprefix("PKR_VAR_"): v for k, v in variables.items() if k.startswith("PKR_VAR_")}
    image = ec2.register_image(name=values["ami_name"], description="Slipway swarm node (emulated bake)")
    # EC2 reports CreationDate to the second and real bakes are minutes apart: keep emulated
    # bakes in distinct seconds so "newest" means what it means on AWS.
    import datetime

    if emu._last_image_date and image.creation_date <= emu._last_image_date + datetime.timedelta(seconds=1):
        image.creation_date = emu._last_image_date + datetime.timedelta(seconds=1)
    emu._last_image_date = image.creation_date
    tags = {tag: values[var] for tag, var in IMAGE_TAGS.items() if var in values}
    ec2.create_tags([image.id], tags | CONSTANT_IMAGE_TAGS)
    return image.id


def advance_build(emu: Emulator, backend, build: dict) -> None:
    """Play BuildKit's part for one service's build (see the module docstring)."""
    with emu._lock:
        record = emu.builds[build["id"]]
        if record.get("stopped"):  # StopBuild (see install)
            build.update({"buildStatus": "STOPPED", "currentPhase": "COMPLETED", "buildComplete": True})
            return
        record["polls"] += 1
        # A build a test fails fails at once, while its siblings are still building.
        fails = emu.build_outcomes.get(record["service"], "SUCCEEDED") != "SUCCEEDED"
        if record["polls"] < (1 if fails else emu.bake_polls):
            build.update({"buildStatus": "IN_PROGRESS", "currentPhase": "BUILD", "buildComplete": False})
            return
        if record["digest"] is None and "failure" not in record:
            _finish_build(emu, backend.region_name, build["id"], record)
        if "failure" in record:
            _report_failure(build, record)
            return
        build.update(
            {
                "buildStatus": "SUCCEEDED",
                "currentPhase": "COMPLETED",
                "buildComplete": True,
                "exportedEnvironmentVariables": [{"name": "IMAGE_DIGEST", "value": record["digest"]}],
            }
        )


def bake_target(record: dict) -> tuple[str, dict]:
    """The service and its target of the build's bake file."""
    bake = json.loads(record["variables"]["BAKE_FILE"])
    service = record["service"]
    return service, bake["target"][service]


def _finish_build(emu: Emulator, region: str, build_id: str, record: dict) -> None:
    service, target = bake_target(record)
    source = build_source(record)
    dockerfile = f"{target['context'].rstrip('/')}/{target.get('dockerfile', 'Dockerfile')}".removeprefix("./")
    if source is None:
        record["failure"] = ("DOWNLOAD_SOURCE", "CLIENT_ERROR", [f"source {record['source']} not found"])
        return
    if "dockerfile-inline" not in target and os.path.normpath(dockerfile) not in source.namelist():
        record["failure"] = (
            "BUILD",
            "COMMAND_EXECUTION_ERROR",
            [
                f"#1 [{service} internal] load build definition from {target.get('dockerfile', 'Dockerfile')}",
                f"ERROR: failed to solve: failed to read dockerfile: open {target.get('dockerfile', 'Dockerfile')}: "
                "no such file or directory",
            ],
        )
        return
    wanted = emu.build_outcomes.get(service, "SUCCEEDED")
    if wanted != "SUCCEEDED":
        record["failure"] = (
            "BUILD",
            "COMMAND_EXECUTION_ERROR",
            [
                f"#7 [{service} 2/3] RUN make",
                '#7 ERROR: process "/bin/sh -c make" did not complete: exit code: 2',
                'ERROR: failed to solve: process "/bin/sh -c make" did not complete successfully: exit code: 2',
            ],
        )
        return
    reference = target["tags"][0]
    repository_uri, _, key = reference.rpartition(":")
    # CodeBuild reads each PARAMETER_STORE variable's value from its parameter: the build secrets.
    parameters = record["variables"]
    secrets = {}
    for entry in target.get("secret") or []:
        fields = dict(part.split("=", 1) for part in entry.split(","))
        name = parameters.get(fields.get("env", ""))
        secrets[fields["id"]] = (emu.node_parameter(name) if name else None) or ""
    built, digest, lines = emu.host.build_image(service, target, source, reference, secrets)
    if not built:
        record["failure"] = ("BUILD", "COMMAND_EXECUTION_ERROR", lines)
        return
    record["digest"] = put_image(region, repository_uri.split("/", 1)[1], key, digest)
    emu.host.pushed(reference, record["digest"])
    record["log"] = lines


def build_source(record: dict) -> zipfile.ZipFile | None:
    from moto.s3.models import s3_backends

    bucket, _, key = (record.get("source") or "").partition("/")
    try:
        found = s3_backends[ACCOUNT]["aws"].get_object(bucket, key)
    except Exception:  # noqa: BLE001 - any missing piece is CodeBuild's DOWNLOAD_SOURCE failure
        return None
    return None if found is None else zipfile.ZipFile(io.BytesIO(found.value))


def put_image(region: str, repository: str, tag: str, digest: str | None) -> str:
    """The image in moto's ECR under its tag: with the digest a real build pushed, or (emulated)
    a manifest made of the tag, so one build key always gives one digest."""
    from moto.ecr.models import ecr_backends

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest(),
                "size": 1,
            },
            "layers": [],
        }
    )
    digest = digest or "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    image = ecr_backends[ACCOUNT][region].put_image(repository, manifest, tag, digest=digest)
    return str(image.get_image_digest())


def _report_failure(build: dict, record: dict) -> None:
    from moto.logs.models import logs_backends

    phase, code, lines = record["failure"]
    group, stream = f"/aws/codebuild/{build['projectName']}", build["id"].split(":", 1)[-1]
    backend = logs_backends[ACCOUNT][build["arn"].split(":")[3]]
    if "logged" not in record:
        record["logged"] = True
        if group not in backend.groups:
            backend.create_log_group(group, {})
        backend.create_log_stream(group, stream)
        now = int(time.time() * 1000)  # CloudWatch drops events older than its retention allows
        backend.put_log_events(group, stream, [{"timestamp": now, "message": line} for line in lines])
    phases: list[dict[str, Any]] = [
        {"phaseType": p, "phaseStatus": "SUCCEEDED"} for p in ("SUBMITTED", "PROVISIONING", "DOWNLOAD_SOURCE")
    ]
    if phase != "DOWNLOAD_SOURCE":
        phases.append({"phaseType": "PRE_BUILD", "phaseStatus": "SUCCEEDED"})
    phases = [p for p in phases if p["phaseType"] != phase] + [
        {
            "phaseType": phase,
            "phaseStatus": "FAILED",
            "contexts": [
                {
                    "statusCode": code,
                    "message": "Error while executing command: docker buildx bake. Reason: exit status 1"
                    if code == "COMMAND_EXECUTION_ERROR"
                    else lines[-1],
                }
            ],
        }
    ]
    build.update(
        {
            "buildStatus": "FAILED",
            "currentPhase": "COMPLETED",
            "buildComplete": True,
            "phases": phases,
            "logs": {
                "groupName": group,
                "streamName": stream,
                "deepLink": f"https://console.aws.amazon.com/cloudwatch/home?region={build['arn'].split(':')[3]}#logEvent:group={group};stream={stream}",
            },
        }
    )
