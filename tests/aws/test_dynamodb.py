"""The lease adapter on moto's DynamoDB, and steps/lease.py deciding over it: one holder at a time,
whatever order the writes come in."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from unittest import mock

import boto3
import pytest

from chalicelib import aws, settings
from chalicelib.aws import dynamodb
from chalicelib.errors import ConfigurationError
from chalicelib.steps import lease
from tests.aws.conftest import REGION

TABLE = "slipway-dev-leases"
EXECUTION = f"arn:aws:states:{REGION}:123456789012:execution:slipway-dev-deploy:"


@pytest.fixture
def table(aws_env):
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "environment", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "environment", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return client


def items(client) -> list[dict]:
    return client.scan(TableName=TABLE)["Items"]


def test_a_free_lease_is_taken_and_the_next_taker_learns_who_holds_it(table):
    assert dynamodb.take(table, TABLE, "dev", "run-1", expires_at=2000, now=1000) == (True, None)
    taken, holder = dynamodb.take(table, TABLE, "dev", "run-2", expires_at=2100, now=1100)
    assert not taken and holder == dynamodb.Holder(owner="run-1", expires_at=2000, taken_at=1000)
    # Another environment's lease is another item.
    assert dynamodb.take(table, TABLE, "prod", "run-2", expires_at=2100, now=1100) == (True, None)


def test_taking_a_lease_one_holds_again_succeeds(table):
    # A retried 'Look for earlier runs' whose first answer was lost.
    assert dynamodb.take(table, TABLE, "dev", "run-1", 2000, 1000)[0]
    assert dynamodb.take(table, TABLE, "dev", "run-1", 2000, 1010)[0]
    [item] = items(table)
    assert item["owner"] == {"S": "run-1"} and item["taken_at"] == {"N": "1010"}


def test_an_expired_lease_is_taken_over_and_one_not_yet_expired_is_not(table):
    dynamodb.take(table, TABLE, "dev", "run-1", expires_at=2000, now=1000)
    assert not dynamodb.take(table, TABLE, "dev", "run-2", 5000, now=2000)[0]  # expires_at < now, strictly
    assert dynamodb.take(table, TABLE, "dev", "run-2", 5000, now=2001) == (True, None)
    assert items(table)[0]["owner"] == {"S": "run-2"}


def test_a_reclaim_succeeds_only_from_the_holder_it_names(table):
    dynamodb.take(table, TABLE, "dev", "run-1", 2000, 1000)
    # Two runs found run-1 ended: the first takes the lease over, the second finds it taken.
    assert dynamodb.reclaim(table, TABLE, "dev", "run-2", "run-1", 3000, 1100) == (True, None)
    taken, holder = dynamodb.reclaim(table, TABLE, "dev", "run-3", "run-1", 3000, 1100)
    assert not taken and holder is not None and holder.owner == "run-2"
    # Released meanwhile: nothing to reclaim, no holder.
    assert dynamodb.release(table, TABLE, "dev", "run-2")
    assert dynamodb.reclaim(table, TABLE, "dev", "run-3", "run-2", 3000, 1200) == (False, None)


def test_only_the_holder_releases_a_lease(table):
    dynamodb.take(table, TABLE, "dev", "run-1", 2000, 1000)
    assert dynamodb.release(table, TABLE, "dev", "run-2") is False
    assert items(table) != []
    assert dynamodb.release(table, TABLE, "dev", "run-1") is True
    assert items(table) == []
    assert dynamodb.release(table, TABLE, "dev", "run-1") is False  # twice: nothing left, no error


def test_a_missing_table_is_a_configuration_error_naming_the_setting(aws_env):
    client = boto3.client("dynamodb", region_name=REGION)
    with pytest.raises(ConfigurationError, match="SLIPWAY_LEASE_TABLE.*slipway-dev-nope"):
        dynamodb.take(client, "slipway-dev-nope", "dev", "run-1", 2000, 1000)
    with pytest.raises(ConfigurationError, match="SLIPWAY_LEASE_TABLE.*slipway-dev-nope"):
        dynamodb.release(client, "slipway-dev-nope", "dev", "run-1")


# --- steps/lease.py: who may take a lease over -----------------------------------------------


@pytest.fixture
def stage(table):
    env = {"SLIPWAY_ENVIRONMENT": "dev", "SLIPWAY_NODE_INSTANCE_PROFILE": "slipway-dev-node"}
    with mock.patch.dict(os.environ, env):
        settings.reset()
        aws.reset()
        yield table
        settings.reset()
        aws.reset()


def machine() -> str:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    return sfn.create_state_machine(
        name="slipway-dev-deploy",
        definition='{"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": true}}}',
        roleArn="arn:aws:iam::123456789012:role/slipway-dev-states",
    )["stateMachineArn"]


def write_lease(client, owner: str, *, taken_at: float, expires_at: float) -> None:
    client.put_item(
        TableName=TABLE,
        Item={
            "environment": {"S": "dev"},
            "owner": {"S": owner},
            "taken_at": {"N": str(int(taken_at))},
            "expires_at": {"N": str(int(expires_at))},
        },
    )


NOW = datetime.now(UTC)


def test_a_lease_held_by_a_running_execution_is_waited_for(stage):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    holder = sfn.start_execution(stateMachineArn=machine(), name="ahead")["executionArn"]
    write_lease(stage, holder, taken_at=time.time() - 3600, expires_at=time.time() + 3600)
    assert lease.take("dev", EXECUTION + "me", NOW) == (None, holder)
    assert items(stage)[0]["owner"] == {"S": holder}


def test_a_lease_whose_holder_has_ended_is_reclaimed(stage):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    holder = sfn.start_execution(stateMachineArn=machine(), name="stopped")["executionArn"]
    sfn.stop_execution(executionArn=holder)
    write_lease(stage, holder, taken_at=time.time(), expires_at=time.time() + 3600)
    taken, blocker = lease.take("dev", EXECUTION + "me", NOW)
    assert blocker is None and taken == {
        "owner": EXECUTION + "me",
        "expires_at": int(NOW.timestamp()) + lease.LEASE_SECONDS,
        "reclaimed_from": "slipway-dev-deploy:stopped",
    }
    assert items(stage)[0]["owner"] == {"S": EXECUTION + "me"}


def test_a_holder_step_functions_does_not_know_is_given_its_grace_then_reclaimed(stage):
    # DescribeExecution is eventually consistent too: a holder it does not show yet may be a run
    # that has only just started; once its lease is older than the grace, it is taken over.
    ghost = EXECUTION + "ghost"
    write_lease(stage, ghost, taken_at=time.time(), expires_at=time.time() + 3600)
    assert lease.take("dev", EXECUTION + "me", NOW) == (None, ghost)
    write_lease(
        stage, ghost, taken_at=time.time() - lease.UNKNOWN_HOLDER_GRACE_SECONDS - 1, expires_at=time.time() + 3600
    )
    taken, _ = lease.take("dev", EXECUTION + "me", NOW)
    assert taken is not None and taken["reclaimed_from"] == "slipway-dev-deploy:ghost"


def test_a_lease_outlives_the_longest_run_of_either_machine():
    import json

    from slipway import statemachines

    for name in statemachines.MACHINES:
        timeout = json.loads(statemachines.path(name).read_text())["TimeoutSeconds"]
        assert timeout == lease.MACHINE_TIMEOUT_SECONDS, name
    assert lease.LEASE_SECONDS > lease.MACHINE_TIMEOUT_SECONDS


def answer_delete_item(client, code: str, status: int, times: int) -> None:
    """DynamoDB's own error answer (JSON 1.0) to the next `times` DeleteItem requests, through
    botocore's send path, so the client's retries see it as on AWS."""
    import json

    from botocore.awsrequest import AWSResponse
    from moto.core.botocore_stubber import MockRawResponse

    left = [times]

    def answer(request, **_):
        if left[0] == 0:
            return None
        left[0] -= 1
        request.url = "http://fault-injected.invalid/"  # moto must not execute this one
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": f"injected {code}"})
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.0"}, MockRawResponse(body))

    client.meta.events.register_first("before-send.dynamodb.DeleteItem", answer)


def test_a_release_that_fails_for_good_is_logged_and_the_run_goes_on(stage):
    from botocore.exceptions import ClientError

    write_lease(stage, EXECUTION + "me", taken_at=time.time(), expires_at=time.time() + 3600)
    answer_delete_item(aws.client("dynamodb"), "AccessDeniedException", 400, times=1)
    assert lease.release("dev", EXECUTION + "me") is False
    assert items(stage) != []  # the next run finds this one ended and takes the lease over
    # A fault worth retrying raises, after the client's own retries: the state machine retries the step.
    answer_delete_item(aws.client("dynamodb"), "InternalServerError", 500, times=5)
    with pytest.raises(ClientError) as transient:
        lease.release("dev", EXECUTION + "me")
    assert aws.error_code(transient.value) == "InternalServerError" and aws.is_transient(transient.value)
    assert lease.release("dev", EXECUTION + "me") is True and items(stage) == []


def test_the_lease_table_is_the_environments_unless_the_stage_names_another():
    base = {"SLIPWAY_ENVIRONMENT": "dev", "AWS_REGION": REGION, "SLIPWAY_NODE_INSTANCE_PROFILE": "slipway-dev-node"}
    assert settings.from_environment(base).lease_table == "slipway-dev-leases"  # as bootstrap names it
    assert settings.from_environment(base | {"SLIPWAY_LEASE_TABLE": "my.leases_1"}).lease_table == "my.leases_1"
    for bad in ("ab", "slipway dev", "leases/dev"):
        with pytest.raises(ConfigurationError, match="SLIPWAY_LEASE_TABLE must be a DynamoDB table's name"):
            settings.from_environment(base | {"SLIPWAY_LEASE_TABLE": bad})
