"""S3 adapter: the bake's source archives (one object per image content) and the stack files (one per content)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from chalicelib.aws import Client, error_code
from chalicelib.errors import ConfigurationError

# HeadObject has no body to carry a code: botocore gives the status ("404") as the code.
MISSING_OBJECT = frozenset({"404", "NoSuchKey", "NotFound"})


def _no_bucket(bucket: str, exc: ClientError) -> ConfigurationError:
    return ConfigurationError(
        f"SLIPWAY_BAKE_BUCKET names S3 bucket {bucket!r}, which does not exist (`slipway bootstrap` creates it): {exc}"
    )


def exists(s3: Client, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            raise _no_bucket(bucket, exc) from exc
        if error_code(exc) in MISSING_OBJECT:
            return False
        raise


def get(s3: Client, bucket: str, key: str) -> bytes:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            raise _no_bucket(bucket, exc) from exc
        raise


def put(s3: Client, bucket: str, key: str, data: bytes, content_type: str = "application/zip") -> None:
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":  # HeadObject's 404 could not tell
            raise _no_bucket(bucket, exc) from exc
        raise


def put_once(s3: Client, bucket: str, key: str, data: bytes, content_type: str) -> None:
    """Put a content-addressed object unless it is there already (its key names its bytes)."""
    if not exists(s3, bucket, key):
        put(s3, bucket, key, data, content_type=content_type)
