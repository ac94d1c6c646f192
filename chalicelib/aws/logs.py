"""CloudWatch Logs adapter: the last lines of a build's log, for the message of a failed build."""

from __future__ import annotations

from botocore.exceptions import ClientError

from chalicelib.aws import Client, error_code


def last_lines(logs: Client, group: str, stream: str, count: int = 15) -> list[str]:
    """The stream's last `count` lines (empty if the stream is not there, or not yet)."""
    try:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=count, startFromHead=False)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return []
        raise
    return [str(e.get("message", "")).rstrip("\n") for e in events.get("events", [])]
