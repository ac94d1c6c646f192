import os
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from tests.conftest import CallRecorder

REGION = "us-east-1"


@pytest.fixture
def aws_env():
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
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
