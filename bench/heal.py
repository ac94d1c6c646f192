"""A node lost between pushes, healed: from the node's termination to the swarm back at N Ready
nodes (the heal execution's end), on the emulator with 1 s polls (the time measured) and as the
same execution's Wait states would take on AWS's defaults (poll 30 s, first poll 2 s, the target
groups' 30 s delay: chalicelib.plans.next_wait over the polls the run went through), for a 1-node
and a 3-node environment. On AWS add what the emulator does not model: EventBridge's delivery of
the state change (seconds), the replacement's boot until SSM lists it online (typically 1-2
minutes: the first 'Check nodes are ready' polls), and the load balancer's first health checks
(3 passes, 10 s apart)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from unittest import mock

from bench.stack import waits
from chalicelib.aws import ec2
from slipway.emulator import Emulator
from slipway.follow import follow
from slipway.harness import commit_id, deploy

QUIET = {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}
STACK = (Path(__file__).resolve().parent.parent / "example" / "stack.yml").read_bytes()


def scenario(node_count: int) -> dict:
    with mock.patch.dict(os.environ, QUIET), Emulator(poll_seconds=1, node_count=node_count) as emu:
        emu.client("ssm").put_parameter(
            Name=f"/slipway/{emu.environment}/secrets/app_token", Value="bench", Type="SecureString"
        )
        commit = commit_id()
        emu.github.files[commit] = {"stack.yml": STACK}
        first = deploy(emu, commit)
        assert first.status == "SUCCEEDED", (first.error, first.cause)
        managers = [n.instance_id for n in ec2.list_nodes(emu.client("ec2"), emu.environment, swarm_role="manager")]
        started = time.monotonic()
        emu.client("ec2").terminate_instances(InstanceIds=[managers[0]])
        sfn = emu.client("stepfunctions")
        deadline = time.monotonic() + 60
        while not (
            found := [
                e
                for e in sfn.list_executions(stateMachineArn=emu.arns["deploy"])["executions"]
                if e["name"].startswith("heal-")
            ]
        ):
            assert time.monotonic() < deadline, "no heal started"
            time.sleep(0.05)
        healed = follow(sfn, found[0]["executionArn"], say=None, poll=0.05, timeout=300)
        elapsed = time.monotonic() - started
        assert healed.status == "SUCCEEDED", (healed.error, healed.cause)
        aws_waits, _ = waits(sfn, healed.execution_arn)
        running = ec2.list_nodes(emu.client("ec2"), emu.environment, states=["running"])
        swarm = emu.nodes.swarm_of(running[0].instance_id)
        return {
            "nodes": node_count,
            "seconds": round(elapsed, 1),
            "transitions": healed.state_transitions,
            "aws_waits_s": aws_waits,
            "ready": sum(emu.nodes.state(n.instance_id) == "active" for n in running),
            "members": len(swarm.members) if swarm else 0,
            "managers": len(swarm.managers()) if swarm else 0,
        }


def main() -> list[dict]:
    return [scenario(1), scenario(3)]


def report(rows: list[dict]) -> None:
    print("a manager terminated between pushes -> healed (emulator, 1 s polls; AWS: the same run's waits on defaults)")
    for r in rows:
        print(
            f"  {r['nodes']} node(s): back at {r['ready']} Ready ({r['members']} members, {r['managers']} managers) "
            f"{r['seconds']} s after the termination, {r['transitions']} state transitions; "
            f"on AWS its waits come to {r['aws_waits_s']} s, plus the replacement's boot"
        )


if __name__ == "__main__":
    report(main())
