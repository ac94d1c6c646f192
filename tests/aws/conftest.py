import os
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from slipway.faults import error_response
from slipway.harness import CallRecorder

REGION = "us-east-1"


@pytest.fixture
def aws_env():
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    with mock.patch.dict(os.environ, env), mock_aws():
        yield


@pytest.fixture
def ec2(aws_env):
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def recorder(ec2):
    rec = CallRecorder()
    ec2.meta.events.register("provide-client-params.ec2.*", rec)
    return rec


@pytest.fixture
def ssm(aws_env):
    return boto3.client("ssm", region_name=REGION)


@pytest.fixture
def codebuild(aws_env):
    return boto3.client("codebuild", region_name=REGION)


@pytest.fixture
def s3(aws_env):
    return boto3.client("s3", region_name=REGION)


class Answer:
    """Answer `times` calls of `operation` on a client with AWS's error `code`, through botocore's
    own send path (a `before-send` handler, as tests/faults.py does), so the client's retry logic
    sees it as it would on AWS. `sent` counts the requests of `operation` that reached the wire."""

    def __init__(self, client, operation: str, code: str, *, times: int = 1, status: int = 400) -> None:
        self.operation, self.code, self.times, self.status = operation, code, times, status
        self.sent = 0
        self.service = client.meta.service_model.service_name
        client.meta.events.register_first(f"before-send.*.{operation}", self)

    def __call__(self, request, event_name: str, **kwargs):
        self.sent += 1
        if self.sent > self.times:
            return None
        request.url = "http://fault-injected.invalid/"  # moto must not execute this one
        return error_response(request, self.service, self.code, self.status)
