"""ECR adapter: the environment's repositories for its built images, converged by tag like the rest,
and what an image tag points at.

A service's images go to a repository with immutable tags (a build key names one content for
ever), scanning on push, Slipway's tags and a lifecycle policy (`lifecycle_policy`); its BuildKit
cache to a mutable one beside it (`naming.cache_repository_name`), which every build rewrites.
Creating one that exists is an answer, not a fault: a retried create finds it and goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from botocore.exceptions import ClientError

from chalicelib import naming
from chalicelib.aws import Client, error_code

IMAGE_NOT_FOUND = frozenset({"ImageNotFoundException", "RepositoryNotFoundException"})
RUNNING = "running-"  # the extra tag of the image a service runs: its lifecycle rule keeps it
ALREADY_TAGGED = frozenset({"ImageAlreadyExistsException", "ImageTagAlreadyExistsException"})


@dataclass(frozen=True)
class Repository:
    name: str
    uri: str
    arn: str


def lifecycle_policy(keep: int | None) -> str:
    """Expire untagged manifests after a day (the children of multi-platform images, replaced cache
    manifests), and, with `keep`, every tagged image but the newest `keep`, except the ones a
    service runs: `mark_running` tags those `running-<key>`, and the rule that selects that tag comes
    first, so no later rule may expire them (ECR's lifecycle policy parameters: an image matched by a
    rule is never expired by a rule of lower priority; one rule only may select untagged images)."""
    rules: list[dict[str, object]] = [
        {
            "rulePriority": 1,
            "description": "untagged manifests go after a day",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 1,
            },
            "action": {"type": "expire"},
        }
    ]
    if keep is not None:
        rules += [
            {
                "rulePriority": 2,
                "description": "what a service runs stays (a service runs one image: the count is never reached)",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPatternList": [f"{RUNNING}*"],
                    "countType": "imageCountMoreThan",
                    "countNumber": 1000,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 3,
                "description": f"the newest {keep} build images stay",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPatternList": ["*"],
                    "countType": "imageCountMoreThan",
                    "countNumber": keep,
                },
                "action": {"type": "expire"},
            },
        ]
    return json.dumps({"rules": rules})


def ensure_repository(
    ecr: Client, name: str, tags: dict[str, str], policy: str, *, immutable: bool = True
) -> Repository:
    """The repository `name`, created if missing (found again if a lost answer created it). Build
    images go to immutable ones (a key names one content); BuildKit's cache, rewritten by every
    build under one tag, to a mutable one beside it."""
    try:
        found = ecr.create_repository(
            repositoryName=name,
            tags=naming.tag_list(tags),
            imageTagMutability="IMMUTABLE" if immutable else "MUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
        )["repository"]
    except ClientError as exc:
        if error_code(exc) != "RepositoryAlreadyExistsException":
            raise
        found = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    # Every time, not only after a create: a create whose answer was lost made the repository
    # without it, and the policy follows SLIPWAY_BUILDS_KEPT as it changes (PutLifecyclePolicy replaces).
    ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=policy)
    return Repository(name=name, uri=str(found["repositoryUri"]), arn=str(found["repositoryArn"]))


def digest_of(ecr: Client, repository: str, tag: str) -> str | None:
    """The digest the tag points at, None if the repository has no such tag."""
    try:
        images = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"]
    except ClientError as exc:
        if error_code(exc) in IMAGE_NOT_FOUND:
            return None
        raise
    return str(images[0]["imageDigest"]) if images else None


def environment_repositories(ecr: Client, environment: str) -> Iterator[Repository]:
    """The repositories Slipway made for the environment: under its prefix and tagged with it."""
    prefix = naming.repository_prefix(environment)
    for page in ecr.get_paginator("describe_repositories").paginate():
        for repo in page["repositories"]:
            if not repo["repositoryName"].startswith(prefix):
                continue
            tags = {t["Key"]: t["Value"] for t in ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]}
            if tags.get(naming.TAG_ENVIRONMENT) == environment:
                yield Repository(repo["repositoryName"], repo["repositoryUri"], repo["repositoryArn"])


def delete_repository(ecr: Client, name: str) -> bool:
    """Delete the repository and its images; False if it was already gone."""
    try:
        ecr.delete_repository(repositoryName=name, force=True)
    except ClientError as exc:
        if error_code(exc) == "RepositoryNotFoundException":
            return False
        raise
    return True


def mark_running(ecr: Client, repository: str, key: str) -> list[str]:
    """Tag the image of build `key` `running-<key>` (a new tag on the same manifest: tags stay
    immutable) and take that tag off the images the service ran before, so the lifecycle policy
    keeps what runs, however old. Returns the tags taken off."""
    running = f"{RUNNING}{key}"
    marked: list[str] = []
    for page in ecr.get_paginator("describe_images").paginate(
        repositoryName=repository, filter={"tagStatus": "TAGGED"}
    ):
        for image in page["imageDetails"]:
            marked += [t for t in image.get("imageTags", []) if t.startswith(RUNNING)]
    if running not in marked:
        found = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": key}])["images"]
        if not found:
            raise ValueError(f"{repository} has no image {key} to mark as running")
        try:
            ecr.put_image(
                repositoryName=repository,
                imageManifest=found[0]["imageManifest"],
                imageManifestMediaType=found[0].get("imageManifestMediaType") or "",
                imageTag=running,
            )
        except ClientError as exc:
            if error_code(exc) not in ALREADY_TAGGED:  # a retried step put it already
                raise
    stale = [t for t in marked if t != running]
    if stale:
        ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageTag": t} for t in stale])
    return stale
