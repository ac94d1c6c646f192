"""Retiring what the deployment replaced: the previous image's nodes leave the swarm (surplus
managers demoted on the way), are terminated once they have, and old images are deregistered.
Members whose instances are gone (died between pushes: the health gate's `gone`) are forgotten by
the same command."""

from __future__ import annotations

from chalicelib import aws, plans, scripts
from chalicelib.aws import ec2, ecr
from chalicelib.errors import SwarmFailed
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import deployment_of, failure, finished, send
from chalicelib.steps.registry import task
from chalicelib.steps.state import DeployRun, ImagesRemoved, Retire


@task("Remove old nodes from swarm")
def retire_old_nodes(event: DeployRun) -> Retire:
    """Take the previous image's nodes out of the swarm, through a manager that stays."""
    deployment = deployment_of(event)
    nodes = event["nodes"]
    client = aws.client("ec2")
    promote = event.get("promote")
    promoted = (promote.get("promoted") if promote else None) or []
    ec2.tag_swarm_role(client, promoted, "manager")  # the promotion succeeded
    health = event.get("health")
    gone = list(health.get("gone") or []) if health else []
    if not nodes["old"] and not gone:
        return Retire(old=[], command_id=None)
    found = ec2.list_nodes(client, deployment["environment"], instance_ids=list(nodes["old"]) + list(nodes["current"]))
    hostnames = {n.instance_id: n.hostname for n in found if n.instance_id in nodes["old"] and n.hostname}
    # The promoted nodes are managers now, whether or not the tag just written reads back yet.
    managers = list(promoted) + [
        n.instance_id
        for n in found
        if n.instance_id in nodes["current"]
        and n.state == "running"
        and n.swarm_role == "manager"
        and n.instance_id not in promoted
    ]
    if not managers:
        raise SwarmFailed("no manager among the nodes that stay to remove the old ones through")
    staying = {n.instance_id: n.hostname for n in found if n.instance_id in nodes["current"]}
    surplus, candidates = plans.surplus_managers(managers, get_settings().node_count, managers[0])
    demote = {i: staying[i] for i in candidates if staying.get(i)}
    script = scripts.retire_script(
        list(hostnames.values()), list(demote.values()), forget=gone, surplus=min(surplus, len(demote))
    )
    sent = send(deployment, "retire", script, managers[0])
    if gone:
        logger.info("forgetting members whose instances are gone", extra={"hosts": gone})
    return Retire(
        old=list(nodes["old"]),
        forgotten=gone,
        hostnames=hostnames,
        demote=demote,
        command_id=sent["command_id"],
        targets=sent.get("targets") or [],
        what=sent.get("what") or "retire",
    )


@task("Terminate old nodes")
def terminate_old_nodes(event: DeployRun) -> Retire:
    """Once the retire command has finished, terminate the previous image's nodes (until then,
    say it has not: the state machine waits and asks again)."""
    deployment = deployment_of(event)
    retire = event["retire"]
    command_id, targets = retire["command_id"], retire.get("targets")
    if not (command_id and targets):
        raise SwarmFailed("no retire command to check: 'Any old nodes?' lets only a sent one through")
    results = finished(command_id, targets)
    if results is None:
        waiting: Retire = {**retire, "done": False}
        return waiting
    error = failure(retire.get("what", "retire"), results)
    output = "\n".join(r.output for r in results)
    # Surplus managers the command made workers: the tag tells later deployments who can take joins.
    became_workers = scripts.demoted(output)
    ec2.tag_swarm_role(
        aws.client("ec2"), [i for i, host in (retire.get("demote") or {}).items() if host in became_workers], "worker"
    )
    if error:
        # Nodes already out of the swarm go all the same: left running with their manager tag,
        # a later deployment could try to join or promote through them.
        left = scripts.left_swarm(output)
        gone = [i for i, host in retire.get("hostnames", {}).items() if host in left]
        ec2.terminate(aws.client("ec2"), gone)
        logger.error("retire failed half-way", extra={"terminated": gone})
        raise error
    ec2.terminate(aws.client("ec2"), retire["old"])
    logger.info("old nodes terminated", extra={"instance_ids": retire["old"], "deployment": deployment["id"]})
    done: Retire = {**retire, "done": True}
    return done


@task("Remove old images")
def remove_old_images(event: DeployRun) -> ImagesRemoved:
    """Keep the newest SLIPWAY_KEEP_IMAGES images and any a live node runs; deregister the rest.
    And mark the build images the services now run, which their repositories' lifecycle policy
    keeps however old (ecr.mark_running)."""
    deployment = deployment_of(event)
    registry = aws.client("ecr")
    for built in event["builds"]["services"] if "builds" in event else []:
        try:
            ecr.mark_running(registry, built["repository"], built["key"])
        except Exception as exc:  # noqa: BLE001  # the deploy is done; the next one marks it again
            logger.warning("running image not marked", extra={"service": built["name"], "why": str(exc)})
    settings = get_settings()
    client = aws.client("ec2")
    in_use = {n.image_id for n in ec2.list_nodes(client, deployment["environment"])}
    images = ec2.list_images(client, deployment["environment"])
    old = set(plans.images_to_remove(images, in_use, settings.keep_images))
    removed = ec2.delete_images(client, [i for i in images if i["ImageId"] in old])
    logger.info("old images removed", extra={"image_ids": sorted(old)})
    return ImagesRemoved(removed=sorted(old), count=removed)
