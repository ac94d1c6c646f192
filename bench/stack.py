"""The stack on the swarm: per push with a stack file (first, unchanged, one service changed, new
node image), the state transitions, the SSM commands sent, the services updated, and the time the
run's Wait states would spend on AWS's default settings (SLIPWAY_POLL_SECONDS=30, first poll 2 s),
from the waits the run went through and the schedule (chalicelib.plans.next_wait); "before" is
what the same run waited when every poll waited the full interval and a push that launched no
node still waited for nodes."""

from __future__ import annotations

import json
import os
from unittest import mock

from chalicelib import plans
from slipway.emulator import Emulator
from slipway.harness import commit_id, deploy

QUIET = {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}
# Images named, not built (bench/builds.py measures builds): one rebuilt is a new digest for a name.
STACK = b"""
version: "3.8"
services:
  web:
    image: slipway-example/web:1
    ports: ["80:8080"]
    secrets: [{source: app_token, target: web_token}]
    healthcheck: {test: ["CMD", "python3", "/srv/web/app.py", "check"], interval: 5s, timeout: 2s, retries: 3}
    deploy: {replicas: 2}
  worker:
    image: slipway-example/worker:1
    healthcheck: {disable: true}
secrets:
  app_token: {external: true}
"""
POLL, FIRST = 30, 2  # AWS defaults: SLIPWAY_POLL_SECONDS, SLIPWAY_POLL_FIRST_SECONDS
DELAY = 30  # SLIPWAY_DEREGISTRATION_DELAY_SECONDS's default


def waits(sfn, execution_arn: str) -> tuple[int, int]:
    """(after, before): seconds the run's Wait states take on the default settings, now and with
    every wait the full interval (plus the nodes wait a run without new nodes used to take)."""
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    after = before = 0
    for event in events:
        if event["type"] != "WaitStateEntered":
            continue
        name = event["stateEnteredEventDetails"]["name"]
        state = json.loads(event["stateEnteredEventDetails"]["input"])
        if name == "Wait out the deregistration delay":  # the target groups' delay, not a poll
            after += DELAY
            before += DELAY
            continue
        progress = (
            state.get("rollout")
            if "stack" in name
            else state.get("health")
            if "health" in name
            else state.get("traffic")
            if name == "Wait for the load balancer"
            else None
        )
        after += plans.next_wait(progress["checks"], FIRST, POLL) if progress else POLL
        before += POLL
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"] == "TaskStateEntered"]
    if "Check nodes are ready" in entered and not any(
        e["type"] == "WaitStateEntered" and e["stateEnteredEventDetails"]["name"] == "Wait for nodes" for e in events
    ):
        before += POLL  # 'Nodes launched?' skipped it
    return after, before


def main() -> list[dict]:
    rows = []
    with mock.patch.dict(os.environ, QUIET), Emulator(poll_seconds=0) as emu:
        emu.client("ssm").put_parameter(
            Name=f"/slipway/{emu.environment}/secrets/app_token", Value="bench", Type="SecureString"
        )
        emu.nodes.push("slipway-example/web:1")  # in every scenario the same names
        for label in ("first deploy", "push, nothing changed", "push, one image rebuilt", "push, new node image"):
            commit = commit_id()
            emu.github.files[commit] = {"stack.yml": STACK}
            if label == "push, one image rebuilt":
                emu.nodes.push("slipway-example/web:1")
            if label == "push, new node image":
                emu.github.trees[commit] = {"ansible": commit, "packer": "f" * 40}
            sent = len(emu.client("ssm").list_commands()["Commands"])
            run = deploy(emu, commit)
            assert run.status == "SUCCEEDED", (run.error, run.cause)
            after, before = waits(emu.client("stepfunctions"), run.execution_arn)
            rows.append(
                {
                    "push": label,
                    "transitions": run.state_transitions,
                    "commands": len(emu.client("ssm").list_commands()["Commands"]) - sent,
                    "updated": sum(s["updated"] for s in run.output["rollout"]["services"]),
                    "services": len(run.output["rollout"]["services"]),
                    "wait_s": after,
                    "wait_before_s": before,
                }
            )
    return rows


def report(rows: list[dict]) -> None:
    print("the stack on the swarm (example/stack.yml, 1 node; waits on AWS defaults: poll 30 s, first poll 2 s)")
    for r in rows:
        print(
            f"  {r['push']:<26} {r['transitions']:>3} transitions, {r['commands']:>2} SSM commands, "
            f"{r['updated']}/{r['services']} services updated, "
            f"waits {r['wait_s']:>3} s (before: {r['wait_before_s']} s)"
        )


if __name__ == "__main__":
    report(main())
