"""The fault matrix of tests/pipeline/test_faults.py, printed: for every mutating call of a first
deploy and each fault, how the execution ended, how many state transitions it took, and what
it left behind (duplicates if it succeeded, resources of its own if it failed)."""

from __future__ import annotations

import os
from unittest import mock

from chalicelib import aws
from slipway.emulator import Emulator
from slipway.faults import CASES, Fault
from slipway.harness import FIRST_DEPLOY, commit_id, deploy, tagged


def main() -> list[tuple]:
    rows = []
    with mock.patch.dict(os.environ, {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}):
        for operation, kind in CASES:
            with Emulator(poll_seconds=0, node_count=2, quick_retries=True) as emu:
                fault = Fault(operation, kind)
                fault.install(
                    [
                        aws.client("ec2"),
                        aws.client("ec2", retries=False),
                        aws.client("elbv2"),
                        aws.client("ssm"),
                        aws.client("codebuild"),
                    ]
                )
                run = deploy(emu, commit_id())
                if run.status == "SUCCEEDED":
                    left = {k: v - FIRST_DEPLOY[k] for k, v in tagged(emu).items() if v != FIRST_DEPLOY[k]}
                else:
                    deployment = run.execution_arn.rsplit(":", 1)[-1]
                    left = {k: v for k, v in tagged(emu, deployment).items() if v}
                rows.append((operation, kind, fault.fired, run.status, run.error or "", run.state_transitions, left))
    return rows


def report(rows: list[tuple]) -> None:
    print("fault matrix: first deploy, 2 nodes; a fault on the first call of one operation")
    print(f"  {'call':<30} {'fault':<10} {'outcome':<10} {'error':<16} {'transitions':>11}  orphans/duplicates")
    for operation, kind, fired, status, error, transitions, left in rows:
        print(
            f"  {operation:<30} {kind:<10} {status:<10} {error:<16} {transitions:>11}  {left or 'none'}"
            + ("" if fired else "  (NOT INJECTED)")
        )
    ok = sum(1 for r in rows if r[3] == "SUCCEEDED")
    print(
        f"  {len(rows)} runs: {ok} SUCCEEDED, {len(rows) - ok} FAILED; "
        f"{sum(1 for r in rows if r[6])} with anything left over"
    )


if __name__ == "__main__":
    report(main())
