"""The environment's stable address: its load balancer converged ('Provision the load balancer'),
the serving nodes put behind it once the stack runs on them and the load balancer finds them
healthy, the previous nodes taken out and drained before they leave the swarm, and, on the way out
(a failed run's undo, teardown), the load balancer removed and its network interfaces released.

With SLIPWAY_INGRESS=none there is no load balancer: each step says so and the run goes on as
before (clients use the nodes' own public addresses)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib import aws, plans
from chalicelib.aws import elb
from chalicelib.errors import ConfigurationError, IngressFailed
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import deployment_of, scope, tags_for
from chalicelib.steps.registry import task
from chalicelib.steps.state import DeployRun, Ingress, LoadBalancerRemoval, Traffic

# Target states that will not turn healthy by waiting (the rest: initial, unhealthy, unavailable).
_STUCK = {"unused", "draining"}


@task("Provision the load balancer")
def ensure_ingress(event: DeployRun) -> Ingress:
    """'Provision the load balancer': the environment's NLB, a TCP listener and target group per
    service port, found by name and converged; none with SLIPWAY_INGRESS=none (and one left from
    before that setting is removed: a load balancer costs money by the hour)."""
    deployment = deployment_of(event)
    settings = get_settings()
    network = event["network"]
    client = aws.client("elbv2")
    if settings.ingress == "none":
        removed, _ = elb.delete_load_balancer(client, deployment["environment"])
        if any(removed.values()):
            logger.info("load balancer removed: SLIPWAY_INGRESS=none", extra={"removed": removed})
        return Ingress(kind="none", url=None, dns_name=None, load_balancer_arn=None, target_groups={}, created=[])
    group = network.get("lb_security_group_id")
    if not group:
        raise ConfigurationError("SLIPWAY_INGRESS=nlb but the network has no load balancer security group")
    converged = elb.ensure_load_balancer(
        client,
        environment=deployment["environment"],
        tags_for=lambda role: tags_for(deployment, role),
        vpc_id=network["vpc_id"],
        subnet_ids=list(network["subnet_ids"]),
        security_group_id=group,
        ports=settings.service_ports,
        health_protocol=settings.health_check_protocol,
        health_path=settings.health_check_path,
        deregistration_delay=settings.deregistration_delay_seconds,
    )
    return Ingress(
        kind="nlb",
        url=f"http://{converged['dns_name']}",
        dns_name=converged["dns_name"],
        load_balancer_arn=converged["load_balancer_arn"],
        target_groups=converged["target_groups"],
        created=converged["created"],
    )


def _groups(event: Mapping[str, Any]) -> dict[str, str]:
    ingress = event.get("ingress") or {}
    groups: dict[str, str] = ingress.get("target_groups") or {}
    return groups


@task("Put the nodes behind the load balancer")
def register_targets(event: DeployRun) -> Traffic:
    """'Put the nodes behind the load balancer': register every node that serves once the run ends
    (repeating a registration is harmless, so a node that lost its registration gets it back), after
    the stack runs on them. The health of the target groups of the ports the stack publishes is then
    waited for (a port no service publishes has nothing to answer its health checks), unless every
    target is healthy already: a push that launched no node waits for nothing."""
    groups = _groups(event)
    if not groups:
        return _traffic(phase="none", done=True)
    settings = get_settings()
    client = aws.client("elbv2")
    current = list(event["nodes"]["current"])
    elb.register(client, groups.values(), current)
    stack = event.get("stack")
    published = set(stack["ports"]) if stack else set()
    ports = [int(p) for p in groups if int(p) in published]
    unhealthy = _unhealthy(client, groups, ports, current)
    logger.info("targets registered", extra={"instance_ids": current, "waiting_for_ports": ports})
    registered = _traffic(
        phase="register",
        done=not unhealthy,
        registered=current,
        ports=ports,
        wait_seconds=plans.next_wait(0, settings.poll_first_seconds, settings.poll_seconds),
    )
    return {**registered, "unhealthy": unhealthy}


def _unhealthy(client: Any, groups: dict[str, str], ports: list[int], instances: list[str]) -> dict[str, str]:
    """ "<instance>:<port>" -> its state (and reason), for each target not healthy yet."""
    unhealthy: dict[str, str] = {}
    for port in ports:
        health = elb.target_health(client, groups[str(port)])
        for instance in instances:
            found = health.get(instance)
            state = found["state"] if found else "unused"
            if state != "healthy":
                reason = f" ({found['reason']})" if found and found.get("reason") else ""
                unhealthy[f"{instance}:{port}"] = state + reason
    return unhealthy


@task("Check the targets")
def check_targets(event: DeployRun) -> Traffic:
    """'Check the targets': is every serving node healthy in the load balancer, for every port the
    stack publishes? Until SLIPWAY_TARGET_HEALTH_TIMEOUT_SECONDS (or SLIPWAY_NODE_READY_ATTEMPTS
    checks): then IngressFailed, naming the targets and their state; the new nodes are taken out
    again, the old ones stay registered (nothing was taken away yet)."""
    settings = get_settings()
    traffic = event["traffic"]
    groups = _groups(event)
    client = aws.client("elbv2")
    unhealthy = _unhealthy(client, groups, traffic["ports"], traffic["registered"])
    checks = traffic["checks"] + 1
    waited = traffic["waited"] + traffic["wait_seconds"]
    if not unhealthy:
        logger.info("targets healthy", extra={"checks": checks, "waited_seconds": waited})
        healthy: Traffic = {**traffic, "done": True, "unhealthy": {}, "checks": checks, "waited": waited}
        return healthy
    stuck = {k: v for k, v in unhealthy.items() if v.split(" ")[0] in _STUCK}
    # Bounded in time, and in checks (as the nodes' readiness is) where polls are very short.
    if stuck or waited >= settings.target_health_timeout_seconds or checks >= settings.node_ready_attempts:
        why = "not registered" if stuck else f"not healthy after {waited} s ({checks} checks)"
        # The new nodes leave the load balancer again; the previous ones were never taken out.
        elb.deregister(client, groups.values(), [i for i in traffic["registered"] if i in event["nodes"]["new"]])
        raise IngressFailed(
            f"the load balancer finds new targets {why}: "
            + ", ".join(f"{k} {v}" for k, v in sorted((stuck or unhealthy).items()))
            + "; the previous nodes stay registered"
        )
    pending: Traffic = {
        **traffic,
        "done": False,
        "unhealthy": unhealthy,
        "checks": checks,
        "waited": waited,
        "wait_seconds": plans.next_wait(checks, settings.poll_first_seconds, settings.poll_seconds),
    }
    return pending


@task("Take the old nodes out of the load balancer")
def deregister_old_targets(event: DeployRun) -> Traffic:
    """'Take the old nodes out of the load balancer': deregister every registered target that does
    not serve once the run ends (the previous image's nodes, surplus ones, strays), then wait out
    the deregistration delay before they leave the swarm: their open connections finish first."""
    groups = _groups(event)
    traffic = event["traffic"]
    if not groups:
        return traffic
    client = aws.client("elbv2")
    current = set(event["nodes"]["current"])
    leaving = sorted({i for arn in groups.values() for i in elb.target_health(client, arn) if i not in current})
    elb.deregister(client, groups.values(), leaving)
    delay = get_settings().deregistration_delay_seconds if leaving else 0
    logger.info("old targets deregistered", extra={"instance_ids": leaving, "draining_seconds": delay})
    drained: Traffic = {**traffic, "phase": "drain", "done": True, "deregistered": leaving, "wait_seconds": delay}
    return drained


def deregister_nodes(environment: str, deployment: str | None, instance_ids: list[str]) -> None:
    """Before nodes are terminated (a failed run's own, or every node at teardown): out of every
    target group of the environment, so the load balancer stops sending them connections first."""
    if not instance_ids:
        return
    client = aws.client("elbv2")
    groups = elb.environment_groups(client, environment)
    if groups:
        elb.deregister(client, groups, instance_ids)
        logger.info("targets deregistered", extra={"instance_ids": instance_ids, "scope": deployment or environment})


@task("Remove this deployment's load balancer", "Delete the load balancer")
def delete_load_balancer(event: Mapping[str, Any]) -> LoadBalancerRemoval:
    """Delete the load balancer and its target groups (the undo: only those this
    deployment created), then report whether AWS has released its network interfaces, which it
    does a while after the delete: until then the subnets and security groups cannot go. Bounded
    by SLIPWAY_NODE_READY_ATTEMPTS checks, as the nodes' removal."""
    environment, deployment = scope(event)
    settings = get_settings()
    removed, kept = elb.delete_load_balancer(aws.client("elbv2"), environment, deployment)
    # An older deployment's load balancer stays, and holds its interfaces: nothing to wait for.
    left = [] if kept else elb.interfaces_left(aws.client("ec2"), environment)
    checks = int((event.get("lb_removal") or {}).get("checks", 0)) + 1
    if left and checks >= settings.node_ready_attempts:
        raise IngressFailed(f"the load balancer's network interfaces are still there after {checks} checks: {left}")
    logger.info("load balancer removed", extra={"removed": removed, "interfaces_left": left})
    return LoadBalancerRemoval(
        removed=removed, interfaces=len(left), done=not left, checks=checks, poll_seconds=settings.poll_seconds
    )


def _traffic(
    *,
    phase: str,
    done: bool,
    registered: list[str] | None = None,
    ports: list[int] | None = None,
    wait_seconds: int = 0,
) -> Traffic:
    return Traffic(
        phase=phase,
        done=done,
        registered=registered or [],
        deregistered=[],
        ports=ports or [],
        unhealthy={},
        checks=0,
        waited=0,
        wait_seconds=wait_seconds,
    )
