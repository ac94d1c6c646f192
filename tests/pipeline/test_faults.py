"""Every mutating AWS call of a first deploy, under three faults: each run ends SUCCEEDED with no
duplicate resource, or FAILED with nothing left from its execution."""

import pytest

from chalicelib import aws, naming
from chalicelib.aws import elb
from tests.conftest import commit_id, deploy
from tests.faults import FIRST_READ_AFTER, Fault

MUTATING = [
    "StartBuild",
    "CreateVpc",
    "ModifyVpcAttribute",
    "CreateSubnet",
    "ModifySubnetAttribute",
    "CreateInternetGateway",
    "AttachInternetGateway",
    "CreateRouteTable",
    "CreateRoute",
    "AssociateRouteTable",
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "CreateLaunchTemplate",
    "RunInstances",
    "SendCommand",
    "PutParameter",
    "AddTagsToResource",
    "CreateTags",
    "CreateLoadBalancer",
    "ModifyLoadBalancerAttributes",
    "CreateTargetGroup",
    "ModifyTargetGroupAttributes",
    "CreateListener",
    "RegisterTargets",
]
CASES = [
    (op, kind)
    for op in MUTATING
    for kind in ("throttle", "lost", "not-found")
    if kind != "not-found" or op in FIRST_READ_AFTER
]


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
}


def tagged(emu, deployment=None):
    ec2 = emu.client("ec2")
    filters = naming.tag_filters(emu.environment, deployment)
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    return {
        "instance": sum(len(r["Instances"]) for r in ec2.describe_instances(Filters=filters + live)["Reservations"]),
        "vpc": len(ec2.describe_vpcs(Filters=filters)["Vpcs"]),
        "subnet": len(ec2.describe_subnets(Filters=filters)["Subnets"]),
        "internet-gateway": len(ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]),
        "route-table": len(ec2.describe_route_tables(Filters=filters)["RouteTables"]),
        "security-group": len(ec2.describe_security_groups(Filters=filters)["SecurityGroups"]),
        "launch-template": len(ec2.describe_launch_templates(Filters=filters)["LaunchTemplates"]),
        "load-balancer": int(_balancer(emu, deployment)),
        "target-group": len(elb.environment_groups(emu.client("elbv2"), emu.environment, deployment)),
        # A deleted load balancer's interfaces: until AWS releases them the subnets cannot go.
        "lb-interface": len(elb.interfaces_left(ec2, emu.environment)),
    }


def _balancer(emu, deployment) -> bool:
    found = elb.find_load_balancer(emu.client("elbv2"), emu.environment)
    if found is None or deployment is None:
        return found is not None
    tags = emu.client("elbv2").describe_tags(ResourceArns=[found["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]
    return {"Key": naming.TAG_DEPLOYMENT, "Value": deployment} in tags


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
