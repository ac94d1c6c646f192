"""The node image: look for one baked from this content, else bake it (CodeBuild runs Packer,
which runs the swarm_node role) from the pushed commit's ansible/ and packer/."""

from __future__ import annotations

import tempfile
import zipfile

from chalicelib import aws, github, plans
from chalicelib.aws import codebuild, ec2, s3
from chalicelib.errors import BakeFailed, ConfigurationError, TransientError
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import bake_bucket, client_token, deployment_of, github_token
from chalicelib.steps.registry import task
from chalicelib.steps.state import Bake, DeployRun, Image


@task("Look for a baked image")
def find_image(event: DeployRun) -> Image:
    deployment = deployment_of(event)
    ami_id = ec2.find_image(aws.client("ec2"), deployment["image_name"])
    logger.info("image lookup", extra={"image": deployment["image_name"], "ami_id": ami_id})
    return Image(ami_id=ami_id)


@task("Bake node image")
def start_bake(event: DeployRun) -> Bake:
    """Put the pushed commit's ansible/ and packer/ in the bake bucket (once per image content)
    and start CodeBuild on exactly that source."""
    deployment = deployment_of(event)
    settings = get_settings()
    bucket = bake_bucket(settings)
    key = plans.source_key(deployment["image_key"])
    client = aws.client("s3")
    if not s3.exists(client, bucket, key):
        if deployment.get("image_source") == "installation":
            raise ConfigurationError(
                f"the installation's node image source s3://{bucket}/{key} is missing "
                "(SLIPWAY_NODE_IMAGE_KEY): run `slipway bootstrap` again"
            )
        with tempfile.TemporaryFile() as archive:
            size = github.download_archive(
                settings.github_api, deployment["repository"], deployment["commit"], archive, github_token(settings)
            )
            archive.seek(0)
            try:
                source = plans.image_source(archive)
            except zipfile.BadZipFile as exc:  # cut short on the way: fetch it again
                raise TransientError(f"GitHub's archive of {deployment['commit']} is not a whole zip") from exc
        s3.put(client, bucket, key, source)
        logger.info("bake source stored", extra={"key": key, "archive_bytes": size, "source_bytes": len(source)})
    # Packer reads PKR_VAR_<name> as the value of variable <name> (packer/variables.pkr.hcl).
    variables = {
        "PKR_VAR_ami_name": deployment["image_name"],
        "PKR_VAR_environment": deployment["environment"],
        "PKR_VAR_deployment": deployment["id"],
        "PKR_VAR_commit": deployment["commit"],
        "PKR_VAR_image_key": deployment["image_key"],
    }
    build_id = codebuild.start(
        aws.client("codebuild"),
        settings.bake_project,
        variables,
        client_token(deployment["id"], "bake"),
        f"{bucket}/{key}",
    )
    logger.info("bake started", extra={"build_id": build_id})
    return Bake(build_id=build_id, status="IN_PROGRESS")


@task("Check the bake")
def check_bake(event: DeployRun) -> Bake:
    deployment_of(event)
    build_id = event["bake"]["build_id"]
    build = codebuild.describe(aws.client("codebuild"), build_id)
    if build.status == "NOT_FOUND":
        # Just started and not visible yet; the state machine retries (then gives up).
        raise TransientError(f"build {build_id} is not visible yet")
    verdict = plans.bake_status(build.status, build.ami_id)
    if verdict not in ("IN_PROGRESS", "SUCCEEDED"):
        raise BakeFailed(f"bake {build_id}: {verdict}")
    return Bake(build_id=build_id, status=verdict, ami_id=build.ami_id)
