"""`slipway serve`'s setup: the emulator as a real HTTP AWS endpoint plus the webhook on a real
port. curl-like HTTP in, boto3 over HTTP to inspect, `aws lambda invoke` to run the prune."""

import json
import socket
import threading
import urllib.request

import boto3
import pytest

from slipway import github
from slipway.emulator import Emulator
from slipway.follow import follow
from slipway.harness import commit_id

# Starts the emulator (served over HTTP, or its nodes): not in `make test-fast`.
pytestmark = pytest.mark.emulator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served():
    from slipway.cli.serve import local_server

    aws_port, web_port = free_port(), free_port()
    with Emulator(mode="server", aws_port=aws_port, poll_seconds=0, webhook_secret="s3cret") as emu:
        server = local_server(emu.app.app, web_port)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield emu, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{aws_port}"
        server.shutdown()


def client(endpoint: str, service: str):
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="any", aws_secret_access_key="any"
    )


def test_a_signed_push_over_http_runs_the_deploy_visible_over_the_aws_endpoint(served):
    emu, web, aws_endpoint = served
    body = github.encode(github.push_payload(after=commit_id()))
    request = urllib.request.Request(
        f"{web}/github/webhook", data=body, method="POST", headers=github.delivery_headers("s3cret", body)
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        arn = json.load(response)["execution_arn"]
    sfn = client(aws_endpoint, "stepfunctions")
    listed = sfn.list_executions(stateMachineArn=emu.arns["deploy"])["executions"]
    assert [e["executionArn"] for e in listed] == [arn]
    run = follow(sfn, arn, say=None, poll=0.1, timeout=120)
    assert run.status == "SUCCEEDED", (run.error, run.cause)


def test_lambda_invoke_over_http_runs_the_prune_in_process(served):
    emu, _, aws_endpoint = served
    response = client(aws_endpoint, "lambda").invoke(FunctionName="slipway-dev-prune_now", Payload=b"{}")
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"command_id": None}  # no nodes yet
