"""Every mutating AWS call of a first deploy, under three faults: each run ends SUCCEEDED with no
duplicate resource, or FAILED with nothing left from its execution."""

import pytest

from chalicelib import aws
from slipway.faults import CASES, Fault
from slipway.harness import FIRST_DEPLOY, commit_id, deploy, tagged


@pytest.mark.parametrize("operation,kind", CASES, ids=[f"{o}-{k}" for o, k in CASES])
def test_first_deploy_survives_or_undoes_itself(make_emulator, operation, kind):
    emu = make_emulator(node_count=2)
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
    assert fault.fired == 1, f"{operation} ({kind}) was never injected"
    if run.status == "SUCCEEDED":
        assert tagged(emu) == FIRST_DEPLOY, "duplicate"
        assert len(emu.client("ec2").describe_images(Owners=["self"])["Images"]) == 1
    else:
        deployment = run.output.get("deployment", {}).get("id") or run.execution_arn.rsplit(":", 1)[-1]
        assert set(tagged(emu, deployment).values()) == {0}, (run.error, run.cause)
    pytest.outcome = run.status  # for the matrix printed by bench/faults.py


def test_a_launch_retried_after_one_subnet_succeeded_still_joins_every_node(make_emulator):
    # RunInstances succeeds in the first subnet, then is throttled in the second until botocore
    # gives up: the state machine retries the whole step, which must treat the nodes its first
    # attempt launched as new ones (they join the swarm), not as nodes kept from before.
    emu = make_emulator(node_count=2, extra_environment={"SLIPWAY_SUBNET_COUNT": "2"})
    fault = Fault("RunInstances", "throttle", skip=1, times=5)
    fault.install([aws.client("ec2")])
    run = deploy(emu, commit_id())
    assert fault.fired == 5
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    nodes = run.output["nodes"]
    assert len(nodes["new"]) == 2 and sorted(nodes["new"]) == sorted(nodes["current"])
    assert {emu.nodes.state(i) for i in nodes["current"]} == {"active"}
    assert tagged(emu)["instance"] == 2
