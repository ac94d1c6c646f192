"""`slipway deploy COMMIT` and `slipway runs`: operating an environment from the shell, with the shell's
AWS credentials and region (boto3's default chain), or `slipway serve`'s emulated AWS with
`--endpoint-url`. `deploy` starts the environment's deploy state machine for a commit of the
repository it runs (the input checked as the webhook's is: chalicelib/deploy_input.py); deploying an
earlier commit is the rollback. `runs` lists the latest runs. A missing environment, refused
credentials, a bad commit: one line on stderr and exit 1, never a traceback."""

from __future__ import annotations

import getpass
import json
import secrets
import sys
import time
from typing import Any

from chalicelib import deploy_input, naming
from chalicelib.errors import InvalidInput


class Failure(Exception):
    """One line for the operator."""


def _clients(endpoint_url: str | None, region: str | None) -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    if not session.region_name:
        raise Failure("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region), or pass --region")
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20)
    return (
        session.client("stepfunctions", endpoint_url=endpoint_url, config=config),
        session.client("ssm", endpoint_url=endpoint_url, config=config),
    )


def _aws(call: Any, *args: Any, **kwargs: Any) -> Any:
    """An AWS call whose failure is one line (credentials refused, endpoint unreachable, ...)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(*args, **kwargs)
    except ClientError as exc:
        error = exc.response.get("Error") or {}
        raise Failure(f"AWS refused {exc.operation_name}: {error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as exc:
        raise Failure(f"AWS could not be reached or asked: {exc}") from None


def _state_machine(sfn: Any, environment: str, kind: str) -> str:
    name = naming.state_machine_name(environment, kind)
    for page in _aws(lambda: list(sfn.get_paginator("list_state_machines").paginate())):
        for machine in page["stateMachines"]:
            if machine["name"] == name:
                return str(machine["stateMachineArn"])
    raise Failure(
        f"no environment {environment} here: no state machine {name} in {sfn.meta.region_name} (is the stage "
        "deployed, and the region right? for slipway serve, pass --endpoint-url)"
    )


def _deployed(ssm: Any, environment: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        raw = ssm.get_parameter(Name=naming.deployed_parameter(environment))["Parameter"]["Value"]
    except ClientError as exc:
        error = exc.response.get("Error") or {}
        if error.get("Code") == "ParameterNotFound":
            return None
        raise Failure(f"AWS refused GetParameter: {error.get('Code')}: {error.get('Message')}") from None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def deploy(
    commit: str,
    *,
    environment: str,
    repository: str | None,
    endpoint_url: str | None,
    region: str | None,
    as_json: bool,
) -> int:
    try:
        sfn, ssm = _clients(endpoint_url, region)
        arn = _state_machine(sfn, environment, "deploy")
        record = _deployed(ssm, environment) or {}
        repository = repository or record.get("repository")
        if not repository:
            raise Failure(
                f"environment {environment} has deployed nothing yet: name the repository, --repository OWNER/NAME"
            )
        try:
            started = deploy_input.parse(
                {"repository": repository, "commit": commit.strip(), "ref": record.get("ref") or "", "pusher": _who()}
            )
        except InvalidInput as exc:
            raise Failure(str(exc)) from None
        name = f"{started.commit[:12]}-cli-{int(time.time())}-{secrets.token_hex(4)}"
        payload = {"repository": started.repository, "commit": started.commit, "pusher": started.pusher}
        if started.ref:
            payload["ref"] = started.ref
        answer = _aws(sfn.start_execution, stateMachineArn=arn, name=name, input=json.dumps(payload))
    except Failure as exc:
        print(f"slipway deploy: {exc}", file=sys.stderr)
        return 1
    execution = str(answer["executionArn"])
    if as_json:
        print(json.dumps({"execution_arn": execution, "repository": started.repository, "commit": started.commit}))
    else:
        print(f"Deploying {started.repository} {started.commit[:12]} to {environment}: {execution}")
        print(f"  {naming.execution_console_url(execution)}")
    return 0


def _who() -> str:
    try:
        return f"{getpass.getuser()} (slipway deploy)"
    except (KeyError, OSError):
        return "slipway deploy"


def runs(*, environment: str, endpoint_url: str | None, region: str | None, as_json: bool, limit: int) -> int:
    try:
        sfn, _ = _clients(endpoint_url, region)
        found = []
        for kind in ("deploy", "teardown"):
            arn = _state_machine(sfn, environment, kind)
            listed = _aws(sfn.list_executions, stateMachineArn=arn, maxResults=limit)["executions"]
            for execution in listed:
                described = _aws(sfn.describe_execution, executionArn=execution["executionArn"])
                found.append(_run(kind, execution, described))
    except Failure as exc:
        print(f"slipway runs: {exc}", file=sys.stderr)
        return 1
    found.sort(key=lambda r: r["started"], reverse=True)
    found = found[:limit]
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    for run in found:
        line = f"{run['started']}  {run['kind']:<8} {run['status']:<10} {run['commit'][:12]:<12} {run['name']}"
        print(line + (f"\n    {run['error']}: {run['cause']}" if run.get("error") else ""))
    return 0


def _run(kind: str, execution: dict[str, Any], described: dict[str, Any]) -> dict[str, Any]:
    try:
        given = json.loads(described.get("input") or "{}")
    except ValueError:
        given = {}
    run = {
        "kind": kind,
        "name": execution["name"],
        "execution_arn": execution["executionArn"],
        "status": execution["status"],
        "started": execution["startDate"].isoformat(timespec="seconds"),
        "stopped": execution["stopDate"].isoformat(timespec="seconds") if execution.get("stopDate") else None,
        "commit": str(given.get("commit") or ""),
        "repository": str(given.get("repository") or ""),
    }
    if described.get("error"):
        cause = str(described.get("cause") or "")
        try:
            cause = str(json.loads(cause).get("errorMessage") or cause).splitlines()[0]
        except (ValueError, AttributeError):
            cause = cause.splitlines()[0] if cause else ""
        run |= {"error": described["error"], "cause": cause[:300]}
    return run
