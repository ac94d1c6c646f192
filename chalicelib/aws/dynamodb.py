"""DynamoDB adapter: the environments' leases (SLIPWAY_LEASE_TABLE), one item per environment.

Each change is one conditional write, so two runs can never both believe they hold a lease:
DynamoDB evaluates the condition and writes in one step, with no read between them that could
be stale. Item: `environment` (the partition key), `owner` (the execution ARN holding it),
`expires_at` and `taken_at` (epoch seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import Client, error_code
from chalicelib.errors import ConfigurationError

# `owner` is one of DynamoDB's reserved words: expressions name it through #owner.
NAMES = {"#owner": "owner"}
# Free, ours already (a retried take), or past its expiry.
TAKE_CONDITION = "attribute_not_exists(environment) OR #owner = :me OR expires_at < :now"


@dataclass(frozen=True)
class Holder:
    """Who holds an environment's lease, as the failed condition found it."""

    owner: str
    expires_at: int
    taken_at: int


def _item(environment: str, owner: str, expires_at: int, now: int) -> dict[str, Any]:
    return {
        "environment": {"S": environment},
        "owner": {"S": owner},
        "expires_at": {"N": str(expires_at)},
        "taken_at": {"N": str(now)},
    }


def _holder(item: dict[str, Any] | None) -> Holder | None:
    if not item or "owner" not in item:
        return None
    return Holder(
        owner=str(item["owner"]["S"]),
        expires_at=int(item.get("expires_at", {}).get("N", 0)),
        taken_at=int(item.get("taken_at", {}).get("N", 0)),
    )


def _no_table(table: str, exc: ClientError) -> ConfigurationError:
    return ConfigurationError(
        f"SLIPWAY_LEASE_TABLE names DynamoDB table {table!r}, which does not exist "
        f"(`slipway bootstrap` creates it): {exc}"
    )


def _put(
    dynamodb: Client, table: str, item: dict[str, Any], condition: str, values: dict[str, Any]
) -> tuple[bool, Holder | None]:
    """Put `item` if `condition` holds: (True, None) when written, else (False, the holder DynamoDB
    found: the item as it was, returned with the failure, so no second read; None if there was none)."""
    try:
        dynamodb.put_item(
            TableName=table,
            Item=item,
            ConditionExpression=condition,
            ExpressionAttributeNames=NAMES,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return True, None
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            found = exc.response.get("Item")
            return False, _holder(found if isinstance(found, dict) else None)
        if error_code(exc) == "ResourceNotFoundException":
            raise _no_table(table, exc) from exc
        raise


def take(
    dynamodb: Client, table: str, environment: str, owner: str, expires_at: int, now: int
) -> tuple[bool, Holder | None]:
    """Take the environment's lease for `owner` until `expires_at`: (True, None) when it is now
    `owner`'s, else (False, the holder). Taking a lease one holds already renews it (a retry)."""
    return _put(
        dynamodb,
        table,
        _item(environment, owner, expires_at, now),
        TAKE_CONDITION,
        {":me": {"S": owner}, ":now": {"N": str(now)}},
    )


def reclaim(
    dynamodb: Client, table: str, environment: str, owner: str, stale_owner: str, expires_at: int, now: int
) -> tuple[bool, Holder | None]:
    """Take over a lease from `stale_owner`, a holder that has ended without releasing it: only if
    it still holds it (another run may have reclaimed it first). As `take` answers (the holder is
    None when the lease was released meanwhile)."""
    return _put(
        dynamodb, table, _item(environment, owner, expires_at, now), "#owner = :stale", {":stale": {"S": stale_owner}}
    )


def release(dynamodb: Client, table: str, environment: str, owner: str) -> bool:
    """Give the lease up: True if `owner` held it, False if it was not `owner`'s (never taken,
    released already, or reclaimed by a run that found `owner` ended)."""
    try:
        dynamodb.delete_item(
            TableName=table,
            Key={"environment": {"S": environment}},
            ConditionExpression="#owner = :me",
            ExpressionAttributeNames=NAMES,
            ExpressionAttributeValues={":me": {"S": owner}},
        )
        return True
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        if error_code(exc) == "ResourceNotFoundException":
            raise _no_table(table, exc) from exc
        raise
