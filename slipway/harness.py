"""Driving the emulator as GitHub, the console and an operator would: the one harness shared by
`slipway demo`, the tests and the benchmarks (as chalice.test.Client is chalice's).

Push a commit, follow its run, wait until a run enters a state, stop it there, let the events it
sent settle, and count what is tagged for the environment. Every function takes the Emulator it
drives; none keeps state of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipway import github
from slipway.emulator import Emulator
from slipway.follow import Run, follow

# How often a run is asked whether it has ended: each DescribeExecution costs moto a few
# milliseconds of the CPU the execution itself runs on (a tenth of a test's, at 0.05 s).
FOLLOW_POLL = 0.25
# On emulated nodes a second of a Wait state or a Retry interval lasts a fifth of one
# (Emulator.wait_scale): a queued run still waits its turn, sooner. A test that stops a run while
# it is in a given state keeps whole seconds, its window to act in.
QUICK_WAIT_SCALE = 0.2
WHOLE_SECONDS = {"poll_seconds": 1, "wait_scale": 1}
# How long a run may take to reach a state a caller waits for.
REACH_SECONDS = 60.0


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (a committer named, whatever the machine's config) and give its output."""
    names = {"GIT_AUTHOR_NAME": "Slipway", "GIT_AUTHOR_EMAIL": "slipway@example.com"}
    names |= {"GIT_COMMITTER_NAME": "Slipway", "GIT_COMMITTER_EMAIL": "slipway@example.com"}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=os.environ | names
    )
    return done.stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str = "change") -> str:
    """Write `files` (path -> text) into the repository, commit everything, and give the commit."""
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def application_repository(path: Path, files: dict[str, str]) -> Path:
    """A new git repository at `path` with `files` as its first commit: an application's, to serve
    through `Emulator(repo=path)`."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    commit_files(path, files, "first")
    return path


def commit_id() -> str:
    """A new 40-hex commit id."""
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def deliver_push(
    emu: Emulator,
    commit: str,
    *,
    ref: str = "refs/heads/main",
    delivery: str | None = None,
    secret: str | None = None,
    before: str = "0" * 40,
    repository: str = "example/app",
) -> tuple[int, dict[str, Any]]:
    """GitHub's push event for `commit`, signed and delivered to the webhook: (status, answer)."""
    body = github.encode(github.push_payload(repository=repository, after=commit, ref=ref, before=before))
    headers = github.delivery_headers(secret or emu.webhook_secret, body, delivery=delivery)
    return emu.deliver(headers, body)


def follow_run(
    emu: Emulator, arn: str, *, timeout: float = 120, say: Callable[..., None] | None = None, poll: float = FOLLOW_POLL
) -> Run:
    """Follow an execution to its end (quietly, unless given `say`)."""
    return follow(emu.client("stepfunctions"), arn, say=say, poll=poll, timeout=timeout)


def deploy(
    emu: Emulator,
    commit: str | None = None,
    before: str = "0" * 40,
    timeout: float = 120,
    repository: str = "example/app",
) -> Run:
    """Push `commit` (new by default) of `repository` and follow the execution to its end."""
    status, answer = deliver_push(emu, commit or commit_id(), before=before, repository=repository)
    assert status == 202, answer
    return follow_run(emu, answer["execution_arn"], timeout=timeout)


def teardown(
    emu: Emulator, environment: str | None = None, *, timeout: float = 120, say: Callable[..., None] | None = None
) -> Run:
    """Run the teardown machine for the environment (the emulator's by default) to its end."""
    arn = emu.client("stepfunctions").start_execution(
        stateMachineArn=emu.arns["teardown"], input=json.dumps({"environment": environment or emu.environment})
    )["executionArn"]
    return follow_run(emu, arn, timeout=timeout, say=say)


def history(emu: Emulator, arn: str) -> list[dict[str, Any]]:
    """The execution's whole event history."""
    pages = emu.client("stepfunctions").get_paginator("get_execution_history").paginate(executionArn=arn)
    return [event for page in pages for event in page["events"]]


def entered(emu: Emulator, arn: str, state: str) -> Any:
    """When the execution first entered `state` (None if it never did)."""
    return next(
        (
            e["timestamp"]
            for e in history(emu, arn)
            if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] == state
        ),
        None,
    )


def exited(emu: Emulator, arn: str, state: str) -> Any:
    """When the execution last left `state` (None if it never did)."""
    found = [
        e["timestamp"]
        for e in history(emu, arn)
        if e["type"].endswith("StateExited") and e["stateExitedEventDetails"]["name"] == state
    ]
    return found[-1] if found else None


def wait_until_entered(emu: Emulator, arn: str, state: str, timeout: float = REACH_SECONDS) -> None:
    """Return once the execution has entered `state`; fail if it has not within `timeout`."""
    deadline = time.monotonic() + timeout
    while entered(emu, arn, state) is None:
        if time.monotonic() >= deadline:
            raise AssertionError(f"{arn} never entered {state!r} in {timeout:.0f} s")
        time.sleep(0.05)


def settle(emu: Emulator) -> None:
    """Wait until every event the emulator has sent (EventBridge to Lambda) has been handled."""
    emu.wait_for_events()


def stop_in(emu: Emulator, arn: str, state: str) -> Run:
    """Stop the execution, as from the console, once it has entered `state`; follow it to its end
    and let the events its stop sends settle."""
    wait_until_entered(emu, arn, state)
    emu.client("stepfunctions").stop_execution(executionArn=arn, error="Operator", cause="console")
    run = follow_run(emu, arn)
    settle(emu)
    return run


def new_content(emu: Emulator, commit: str) -> str:
    """Give `commit` an ansible/ tree of its own, as a push that changes the role would."""
    emu.github.trees[commit] = {"ansible": commit, "packer": "f" * 40}
    return commit


def scale(node_count: int) -> None:
    """What an operator does: change SLIPWAY_NODE_COUNT and redeploy Slipway."""
    from chalicelib import settings

    os.environ["SLIPWAY_NODE_COUNT"] = str(node_count)
    settings.reset()


def scheduled_event(at: float | None = None) -> dict[str, Any]:
    """The event EventBridge sends a scheduled Lambda, at epoch seconds `at` (default: now)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/slipway-dev-prune"],
        "detail": {},
    }


def tagged_instances(emu: Emulator, states: tuple[str, ...] = ("pending", "running")) -> list[Any]:
    """The environment's nodes in these states, as the pipeline lists them."""
    from chalicelib.aws import ec2

    return ec2.list_nodes(emu.client("ec2"), emu.environment, states=list(states))


# What a first deploy of two nodes leaves, by `tagged`: one of each, never a duplicate.
FIRST_DEPLOY = {
    "instance": 2,
    "vpc": 1,
    "subnet": 1,
    "internet-gateway": 1,
    "route-table": 1,
    "security-group": 2,  # the nodes' and the load balancer's
    "launch-template": 1,
    "load-balancer": 1,
    "target-group": 2,  # one per service port: 80, 443
    "lb-interface": 1,  # one per subnet, held by the load balancer that serves
    "ecr-repository": 0,  # a stack that builds nothing (builds: two per built service)
}


def tagged(emu: Emulator, deployment: str | None = None) -> dict[str, int]:
    """How many of each kind of resource carry the environment's tags (and the deployment's, if
    given): what a teardown must bring to zero and a failed run must leave as it found."""
    from chalicelib.aws import ecr, elb
    from chalicelib.aws.ec2 import count_tagged

    counts = count_tagged(emu.client("ec2"), emu.environment, deployment)
    counts.pop("image", None)  # not one of a run's resources here; the teardown's check counts images
    return {
        **counts,
        "load-balancer": int(_balancer(emu, deployment)),
        "target-group": len(elb.environment_groups(emu.client("elbv2"), emu.environment, deployment)),
        # A deleted load balancer's interfaces: until AWS releases them the subnets cannot go.
        "lb-interface": len(elb.interfaces_left(emu.client("ec2"), emu.environment)),
        # The builds' repositories belong to the environment, not to a run: teardown removes them.
        **(
            {}
            if deployment
            else {"ecr-repository": len(list(ecr.environment_repositories(emu.client("ecr"), emu.environment)))}
        ),
    }


def _balancer(emu: Emulator, deployment: str | None) -> bool:
    from chalicelib import naming
    from chalicelib.aws import elb

    found = elb.find_load_balancer(emu.client("elbv2"), emu.environment)
    if found is None or deployment is None:
        return found is not None
    tags = emu.client("elbv2").describe_tags(ResourceArns=[found["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]
    return {"Key": naming.TAG_DEPLOYMENT, "Value": deployment} in tags


class CallRecorder:
    """Counts the AWS API calls made by clients of one boto3 event system; with `thread`, only those
    made on that thread (the emulator runs an execution's Lambdas on threads of their own, with the
    same cached clients). Register it on a client's `provide-client-params` event."""

    def __init__(self, thread: threading.Thread | None = None) -> None:
        self.calls: list[str] = []
        self.thread = thread

    def __call__(self, model: Any, params: Any, **kwargs: Any) -> None:
        if self.thread is None or threading.current_thread() is self.thread:
            self.calls.append(model.name)

    def mutating(self) -> list[str]:
        readers = ("Describe", "Get", "List", "BatchGet")
        return [c for c in self.calls if not c.startswith(readers)]
