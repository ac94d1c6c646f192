"""The health gate: every node that stays reports an active swarm, and a manager lists each of
them Ready and Active. Nothing old is touched before it passes."""

from __future__ import annotations

from chalicelib import aws, plans, scripts
from chalicelib.aws import ec2, ssm
from chalicelib.errors import NodesUnhealthy, SwarmFailed
from chalicelib.settings import get_settings
from chalicelib.steps.common import deployment_of, finished
from chalicelib.steps.registry import task
from chalicelib.steps.state import DeployRun, Health, NodeView


@task("Check health")
def start_health_check(event: DeployRun) -> Health:
    """Ask every node that stays for its own swarm state, and a manager for the swarm's view of
    them (each must be listed Ready and Active)."""
    deployment = deployment_of(event)
    nodes = event["nodes"]
    targets = nodes["current"]
    found = ec2.list_nodes(
        aws.client("ec2"),
        deployment["environment"],
        states=["running"],
        instance_ids=list(targets) + list(nodes["old"]),
    )
    # Managers of the swarm the nodes that stay are in: theirs if any of them is one (a swarm of
    # their own, or kept nodes), else the previous image's (they joined its swarm as workers).
    # All are asked, so one manager that is down cannot block the deployment that replaces it.
    managers = [n.instance_id for n in found if n.swarm_role == "manager" and n.instance_id in targets] or [
        n.instance_id for n in found if n.swarm_role == "manager"
    ]
    if not managers:
        raise SwarmFailed("no running manager to ask for the swarm's view of its nodes")
    command_id = ssm.run_shell(
        aws.client("ssm"),
        commands=scripts.HEALTH_SCRIPT,
        comment=f"slipway health {deployment['id']}",
        timeout_seconds=60,
        instance_ids=targets,
    )
    view = ssm.run_shell(
        aws.client("ssm"),
        commands=scripts.NODE_LIST_SCRIPT,
        comment=f"slipway node list {deployment['id']}",
        timeout_seconds=60,
        instance_ids=managers,
    )
    hostnames = {n.instance_id: n.hostname for n in found if n.instance_id in targets}
    return Health(
        command_id=command_id,
        targets=targets,
        status="PENDING",
        view=NodeView(command_id=view, targets=managers, hostnames=hostnames),
        checks=0,
        wait_seconds=_wait(0),
    )


def _wait(checks: int) -> int:
    settings = get_settings()
    return plans.next_wait(checks, settings.poll_first_seconds, settings.poll_seconds)


@task("Evaluate health")
def evaluate_health(event: DeployRun) -> Health:
    deployment = deployment_of(event)
    health = event["health"]
    results = finished(health["command_id"], health["targets"])
    view = finished(health["view"]["command_id"], health["view"]["targets"])
    if results is None or view is None:
        checks = health["checks"] + 1
        pending: Health = {**health, "status": "PENDING", "checks": checks, "wait_seconds": _wait(checks)}
        return pending
    # The first manager that answered speaks for the swarm; if none did, the first failure says why.
    answer = next((r for r in view if r.status == "Success"), view[0])
    problems = scripts.swarm_view_verdict(answer, health["view"]["hostnames"]) | scripts.health_verdict(results)
    if problems:
        raise NodesUnhealthy("; ".join(f"{node}: {why}" for node, why in sorted(problems.items())))
    # A manager that just answered: the promotion goes through it. Members listed Down whose
    # instance is gone (a node that died between pushes) are forgotten when the old nodes retire.
    live = [n.hostname for n in ec2.list_nodes(aws.client("ec2"), deployment["environment"]) if n.hostname]
    gone = scripts.gone_members(answer, health["view"]["hostnames"].values(), live)
    healthy: Health = {**health, "status": "HEALTHY", "manager": answer.instance_id, "gone": gone}
    return healthy
