"""CodeBuild: moto runs no build and reports it SUCCEEDED at once, exporting nothing. The emulator
plays Packer's part: the build is IN_PROGRESS for its first checks, then registers the AMI under
the name and tags the Packer template gives it and exports AMI_ID, or FAILED when its source lacks
what the buildspec runs (or a test says so). With real nodes the bake converges the swarm_node
role for real, in the background, from the build's source."""

from __future__ import annotations

import io
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

    def start_build(response):
        result = original_start(response)
        build_id = result.result["build"]["id"]  # type: ignore[index]  # moto's ActionResult holds a dict
        variables = {v["name"]: v["value"] for v in response._get_param("environmentVariablesOverride", [])}
        with emu._lock:
            emu.bakes[build_id] = {
                "variables": variables,
                "polls": 0,
                "ami_id": None,
                "source": response._get_param("sourceLocationOverride"),
            }
        return result

    patch(mock.patch.object(CodeBuildResponse, "start_build", start_build))

    original_batch = CodeBuildBackend.batch_get_builds

    def batch_get_builds(backend, ids):
        builds = original_batch(backend, ids)
        for build in builds:
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
