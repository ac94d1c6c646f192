"""'Launch nodes' and 'Check nodes are ready': the nodes of the image to run, launched from the
environment's launch template across its subnets, until each runs and is online with SSM."""

from __future__ import annotations

from chalicelib import aws, naming, plans
from chalicelib.aws import ec2, ssm
from chalicelib.errors import InvalidInput, NodesNotReady
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import client_token, deployment_of, tags_for
from chalicelib.steps.registry import task
from chalicelib.steps.state import DeployRun, Nodes, Readiness


@task("Launch nodes")
def launch_nodes(event: DeployRun) -> Nodes:
    deployment = deployment_of(event)
    settings = get_settings()
    client = aws.client("ec2")
    ami_id = event["image"]["ami_id"]
    if not ami_id:
        raise InvalidInput("no image to launch: 'Image already baked?' lets only a run with one through")
    network = event["network"]
    existing = ec2.list_nodes(client, deployment["environment"])
    plan = plans.plan_nodes(existing, ami_id, settings.node_count, deployment["id"])
    # A retried step finds the nodes its first attempt launched among the existing ones: they are
    # still this deployment's new nodes (they must join the swarm), not nodes kept from before.
    new = [n.instance_id for n in existing if n.instance_id in plan.current and n.deployment == deployment["id"]]
    if plan.launch:
        template = ec2.ensure_launch_template(
            client,
            aws.client("ec2", retries=False),
            environment=deployment["environment"],
            tags=tags_for(deployment, "launch-template"),
            image_id=ami_id,
            instance_type=settings.instance_type,
            security_group_id=network["security_group_id"],
            instance_profile=settings.node_instance_profile,
            client_token=client_token(deployment["id"], "template", ami_id),
        )
        current = [n for n in existing if n.instance_id in plan.current]
        per_subnet = {subnet: sum(1 for n in current if n.subnet_id == subnet) for subnet in network["subnet_ids"]}
        new += ec2.launch_nodes(
            client,
            template=template,
            placement=plans.spread(plan.launch, per_subnet),
            tags=tags_for(deployment, "node") | {naming.TAG_IMAGE: ami_id},
            client_token=client_token(deployment["id"], "launch", ami_id),
        )
    kept = [i for i in plan.current if i not in new]
    logger.info("nodes planned", extra={"new": new, "kept": kept, "old": plan.old})
    return Nodes(new=new, current=kept + new, old=list(plan.old))


@task("Check nodes are ready")
def check_nodes(event: DeployRun) -> Readiness:
    deployment = deployment_of(event)
    settings = get_settings()
    wanted = event["nodes"]["current"]
    readiness = event.get("readiness")
    attempts = (readiness.get("attempts", 0) if readiness else 0) + 1
    nodes = ec2.list_nodes(
        aws.client("ec2"), deployment["environment"], instance_ids=wanted, states=["pending", "running"]
    )
    running = [n.instance_id for n in nodes if n.state == "running"]
    online = ssm.online_instances(aws.client("ssm"), running)
    ready = len(online) == len(wanted)
    if not ready and attempts >= settings.node_ready_attempts:
        missing = sorted(set(wanted) - online)
        raise NodesNotReady(f"not running and online with SSM after {attempts} checks: {missing}")
    return Readiness(ready=ready, attempts=attempts, online=len(online), wanted=len(wanted))
