"""The local rehearsal shows the nodes as AWS would: tried as a new user would, a push to
`slipway serve`'s webhook, then the AWS CLI's view through its AWS endpoint. The launch template
asks for IMDSv2 and the node instance profile; moto carries neither onto an instance, and the
emulator makes the profile as `slipway bootstrap` does (slipway/emulator/ fills both)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

import boto3
import pytest

from slipway import PROJECT_DIR, github
from slipway.deploy import bootstrap
from slipway.emulator import ACCOUNT, REGION, Emulator
from slipway.follow import follow
from slipway.harness import commit_id

# Starts the emulator (served over HTTP, or its nodes): not in `make test-fast`.
pytestmark = pytest.mark.emulator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(endpoint: str, service: str):
    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="any", aws_secret_access_key="any"
    )


@pytest.fixture(scope="module")
def pushed():
    """`slipway serve`'s setup, one signed push deployed; yields the AWS endpoint."""
    from slipway.cli.serve import local_server

    aws_port, web_port = _free_port(), _free_port()
    with Emulator(mode="server", aws_port=aws_port, poll_seconds=0, webhook_secret="s3cret") as emu:
        server = local_server(emu.app.app, web_port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            body = github.encode(github.push_payload(after=commit_id()))
            request = urllib.request.Request(
                f"http://127.0.0.1:{web_port}/github/webhook",
                data=body,
                method="POST",
                headers=github.delivery_headers("s3cret", body),
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                arn = json.load(response)["execution_arn"]
            endpoint = f"http://127.0.0.1:{aws_port}"
            run = follow(_client(endpoint, "stepfunctions"), arn, say=None, poll=0.1, timeout=120)
            assert run.status == "SUCCEEDED", (run.error, run.cause)
            yield endpoint
        finally:
            server.shutdown()


def _nodes(endpoint: str) -> list[dict]:
    pages = _client(endpoint, "ec2").describe_instances(
        Filters=[
            {"Name": "tag:slipway:role", "Values": ["node"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def test_a_pushed_node_runs_with_imdsv2_only_as_its_launch_template_asks(pushed):
    [node] = _nodes(pushed)
    options = node["MetadataOptions"]
    assert (options["HttpTokens"], options["HttpEndpoint"], options["HttpPutResponseHopLimit"]) == (
        "required",
        "enabled",
        1,
    )


def test_a_pushed_node_has_the_node_instance_profile_bootstrap_would_create(pushed):
    [node] = _nodes(pushed)
    assert node["IamInstanceProfile"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:instance-profile/slipway-dev-node"
    iam = _client(pushed, "iam")
    [role] = iam.get_instance_profile(InstanceProfileName="slipway-dev-node")["InstanceProfile"]["Roles"]
    # The role, policies and managed policy of .chalice/resources.yaml's NodeRole, resolved.
    expected = bootstrap.role_policies(
        bootstrap.load_template(PROJECT_DIR),
        "NodeRole",
        {"Stage": "dev", "Environment": "dev"},
        ACCOUNT,
        REGION,
        {"SourceBucket.Arn": f"arn:aws:s3:::slipway-dev-bake-{ACCOUNT}-{REGION}"},
    )
    assert role["RoleName"] == expected["RoleName"] == "slipway-dev-node"
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == expected["ManagedPolicyArns"]
    names = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    assert {n: iam.get_role_policy(RoleName=role["RoleName"], PolicyName=n)["PolicyDocument"] for n in names} == (
        expected["Policies"]
    )
