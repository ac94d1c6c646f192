"""Removing things, for both machines: the deploy machine's undo of a failed run (scope: its own
deployment) and the teardown machine (scope: the whole environment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib import aws, naming, scripts
from chalicelib.aws import ec2, ecr, elb, network, ssm
from chalicelib.errors import TeardownIncomplete
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps import lease, load_balancer
from chalicelib.steps.common import deployment_of, scope, send
from chalicelib.steps.registry import task
from chalicelib.steps.state import Command, DeployRun, ImagesDeregistered, Leftover, NetworkRemoved, Removal, Terminated


@task("Take this deployment's nodes out of the swarm")
def leave_swarm(event: DeployRun) -> Command:
    """Compensation, first: take this deployment's nodes out of a swarm that was there before it
    (through one of that swarm's managers), so terminating them leaves no dead member behind.
    Nothing to do when they formed a swarm of their own, or never joined one."""
    deployment = deployment_of(event)
    client = aws.client("ec2")
    mine = ec2.list_nodes(client, deployment["environment"], deployment=deployment["id"])
    if not mine:
        return Command(command_id=None)
    managers = [
        n
        for n in ec2.list_nodes(client, deployment["environment"], states=["running"], swarm_role="manager")
        if n.deployment != deployment["id"]
    ]
    if not managers:
        return Command(command_id=None)
    return send(
        deployment, "leave", scripts.retire_script([n.hostname for n in mine if n.hostname]), managers[0].instance_id
    )


@task("Remove this deployment's nodes", "Terminate nodes")
def terminate_nodes(event: Mapping[str, Any]) -> Terminated:
    environment, deployment = scope(event)
    nodes = ec2.list_nodes(aws.client("ec2"), environment, deployment=deployment)
    ids = [n.instance_id for n in nodes]
    load_balancer.deregister_nodes(environment, deployment, ids)
    ec2.terminate(aws.client("ec2"), ids)
    logger.info("terminating nodes", extra={"instance_ids": ids, "scope": deployment or environment})
    return Terminated(instance_ids=ids, poll_seconds=get_settings().poll_seconds)


@task("Check removed nodes are gone", "Check nodes are gone")
def check_nodes_gone(event: Mapping[str, Any]) -> Removal:
    """Are the nodes being removed terminated? Counts its checks in `removal` (where both state
    machines keep its answer) and gives up after SLIPWAY_NODE_READY_ATTEMPTS of them, so an
    instance stuck shutting down fails the run, naming it, instead of holding it forever."""
    environment, deployment = scope(event)
    remaining = ec2.list_nodes(
        aws.client("ec2"), environment, deployment=deployment, states=ec2.LIVE_STATES + ["shutting-down"]
    )
    checks = int((event.get("removal") or {}).get("checks", 0)) + 1
    if remaining and checks >= get_settings().node_ready_attempts:
        raise TeardownIncomplete(
            f"nodes not terminated after {checks} checks: {sorted(n.instance_id for n in remaining)}"
        )
    return Removal(done=not remaining, remaining=len(remaining), checks=checks)


@task("Remove this deployment's network", "Delete network")
def delete_network(event: Mapping[str, Any]) -> NetworkRemoved:
    environment, deployment = scope(event)
    removed = network.delete_network(aws.client("ec2"), environment, deployment)
    removed["launch-template"] = ec2.delete_launch_templates(aws.client("ec2"), environment, deployment)
    swarm_left = ec2.list_nodes(aws.client("ec2"), environment)
    # A failed deployment that initialised a swarm of its own stored that swarm's tokens: its nodes
    # are gone, so the tokens must go too, or the next deployment would join the previous swarm
    # with them (and fail). Likewise when no node is left at all.
    own_swarm = bool(deployment and (event.get("swarm") or {}).get("initialised"))
    parameters = 0
    if not swarm_left or own_swarm:
        parameters = ssm.delete_tree(aws.client("ssm"), naming.swarm_path(environment))
    if deployment is None:  # the teardown: nothing deployed is left for a heal to deploy again
        parameters += ssm.delete(aws.client("ssm"), naming.deployed_parameter(environment))
    logger.info("network removed", extra={"removed": removed, "parameters": parameters})
    return NetworkRemoved(removed=removed, parameters=parameters)


@task("Deregister images")
def delete_images(event: Mapping[str, Any]) -> ImagesDeregistered:
    """The node images (AMIs and their snapshots), and the ECR repositories of the services'
    builds and their caches, with every image in them (docs/builds.md)."""
    environment, _ = scope(event)
    client = aws.client("ec2")
    images = ec2.delete_images(client, ec2.list_images(client, environment))
    registry = aws.client("ecr")
    removed = [
        r.name for r in ecr.environment_repositories(registry, environment) if ecr.delete_repository(registry, r.name)
    ]
    if removed:
        logger.info("build repositories deleted", extra={"repositories": removed})
    return ImagesDeregistered(images=images, repositories=len(removed))


@task("Confirm nothing is left")
def confirm_teardown(event: Mapping[str, Any]) -> Leftover:
    """The teardown's last step: nothing tagged for the environment is left, and the run gives up
    the environment's lease ('Look for earlier runs' took it as `queue.lease`). Something left fails
    it, and 'Release the lease' gives it up on the way to 'Teardown failed'."""
    environment, _ = scope(event)
    tagged = ec2.count_tagged(aws.client("ec2"), environment) | elb.count_tagged(aws.client("elbv2"), environment)
    tagged["ecr-repositories"] = sum(1 for _ in ecr.environment_repositories(aws.client("ecr"), environment))
    left = {k: v for k, v in tagged.items() if v}
    if left:
        raise TeardownIncomplete(f"still tagged for {environment}: {left}")
    held = ((event.get("queue") or {}).get("lease") or {}).get("owner")
    if held:
        lease.release(environment, str(held))
    return Leftover(environment=environment, leftover={})
