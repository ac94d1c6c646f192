"""Elastic Load Balancing (v2) adapter: the environment's Network Load Balancer, one listener and one
instance target group per service port, and the nodes registered in them.

Found by name (`naming.elb_name`) and checked by tag: ELB's names are unique per account and region,
and CreateLoadBalancer / CreateTargetGroup are idempotent for the same name and settings, so a call
whose answer was lost is simply made again. Settings that differ from what is there converge
(subnets, security group, health check, deregistration delay, cross-zone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import naming
from chalicelib.aws import Client, error_code, just_created
from chalicelib.errors import ConfigurationError
from chalicelib.observability import logger

AwsDict = dict[str, Any]

# The target groups' health checks: every 10 s, 3 passes to be healthy, 3 failures to be unhealthy
# (a new node takes ~30 s once it answers; a dead one stops getting connections within ~30 s).
HEALTH_INTERVAL_SECONDS = 10
HEALTHY_THRESHOLD = 3
UNHEALTHY_THRESHOLD = 3
DESCRIBE_TAGS_LIMIT = 20  # ResourceArns per DescribeTags call

# Not found right after a create: the load balancer or a target group the same step (or its lost
# first attempt) has just created, to the calls that configure it.
LB_NOT_VISIBLE = frozenset({"LoadBalancerNotFound", "TargetGroupNotFound", "ListenerNotFound"})


def _tags(values: dict[str, str]) -> list[dict[str, str]]:
    return naming.tag_list(values)


def _tags_of(elb: Client, arns: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(arns), DESCRIBE_TAGS_LIMIT):
        for description in elb.describe_tags(ResourceArns=arns[start : start + DESCRIBE_TAGS_LIMIT])["TagDescriptions"]:
            found[description["ResourceArn"]] = {t["Key"]: t["Value"] for t in description.get("Tags", [])}
    return found


def _owned(tags: dict[str, str], environment: str, deployment: str | None = None) -> bool:
    return tags.get(naming.TAG_ENVIRONMENT) == environment and (
        deployment is None or tags.get(naming.TAG_DEPLOYMENT) == deployment
    )


def find_load_balancer(elb: Client, environment: str) -> AwsDict | None:
    """The environment's load balancer, or None. One of the same name that is not tagged for the
    environment is someone else's: a ConfigurationError, never adopted."""
    name = naming.elb_name(environment)
    try:
        found = elb.describe_load_balancers(Names=[name])["LoadBalancers"]
    except ClientError as exc:
        if error_code(exc) == "LoadBalancerNotFound":
            return None
        raise
    if not found:
        return None
    balancer: AwsDict = found[0]
    if not _owned(_tags_of(elb, [balancer["LoadBalancerArn"]]).get(balancer["LoadBalancerArn"], {}), environment):
        raise ConfigurationError(
            f"a load balancer named {name} exists in this account and region but is not tagged "
            f"{naming.TAG_ENVIRONMENT}={environment}: rename or remove it, or choose another environment name"
        )
    return balancer


def ensure_load_balancer(
    elb: Client,
    *,
    environment: str,
    tags_for: Callable[[str], dict[str, str]],
    vpc_id: str,
    subnet_ids: list[str],
    security_group_id: str,
    ports: tuple[int, ...],
    health_protocol: str,
    health_path: str,
    deregistration_delay: int,
) -> AwsDict:
    """Converge the environment's internet-facing NLB, its target groups and listeners.
    `tags_for(role)` gives the tags of a resource created now."""
    created: list[str] = []
    with just_created(f"the load balancer of {environment} or its target groups", LB_NOT_VISIBLE):
        balancer = find_load_balancer(elb, environment)
        if balancer is None:
            balancer = elb.create_load_balancer(
                Name=naming.elb_name(environment),
                Subnets=subnet_ids,
                SecurityGroups=[security_group_id],
                Scheme="internet-facing",
                Type="network",
                IpAddressType="ipv4",
                Tags=_tags(tags_for("load-balancer")),
            )["LoadBalancers"][0]
            created.append("load-balancer")
        arn = balancer["LoadBalancerArn"]
        have_subnets = sorted(z["SubnetId"] for z in balancer.get("AvailabilityZones", []) if z.get("SubnetId"))
        if have_subnets and have_subnets != sorted(subnet_ids):
            elb.set_subnets(LoadBalancerArn=arn, Subnets=subnet_ids)
        if balancer.get("SecurityGroups") and sorted(balancer["SecurityGroups"]) != [security_group_id]:
            elb.set_security_groups(LoadBalancerArn=arn, SecurityGroups=[security_group_id])
        attributes = {
            a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
        }
        if attributes.get("load_balancing.cross_zone.enabled") != "true":
            elb.modify_load_balancer_attributes(
                LoadBalancerArn=arn, Attributes=[{"Key": "load_balancing.cross_zone.enabled", "Value": "true"}]
            )
        groups = {
            str(port): _ensure_target_group(
                elb,
                environment=environment,
                port=port,
                vpc_id=vpc_id,
                tags=tags_for("target-group"),
                health_protocol=health_protocol,
                health_path=health_path,
                deregistration_delay=deregistration_delay,
                created=created,
            )
            for port in ports
        }
        _converge_listeners(elb, arn, groups, created)
    logger.info("load balancer converged", extra={"dns_name": balancer["DNSName"], "created_roles": created})
    return {
        "load_balancer_arn": arn,
        "dns_name": balancer["DNSName"],
        "target_groups": groups,
        "created": created,
    }


def _health_settings(protocol: str, path: str) -> AwsDict:
    settings: AwsDict = {
        "HealthCheckProtocol": protocol,
        "HealthCheckPort": "traffic-port",
        "HealthCheckIntervalSeconds": HEALTH_INTERVAL_SECONDS,
        "HealthyThresholdCount": HEALTHY_THRESHOLD,
        "UnhealthyThresholdCount": UNHEALTHY_THRESHOLD,
    }
    if protocol == "HTTP":
        settings |= {"HealthCheckPath": path, "Matcher": {"HttpCode": "200-399"}}
    return settings


def _ensure_target_group(
    elb: Client,
    *,
    environment: str,
    port: int,
    vpc_id: str,
    tags: dict[str, str],
    health_protocol: str,
    health_path: str,
    deregistration_delay: int,
    created: list[str],
) -> str:
    name = naming.elb_name(environment, str(port))
    health = _health_settings(health_protocol, health_path)
    try:
        found = elb.describe_target_groups(Names=[name])["TargetGroups"]
    except ClientError as exc:
        if error_code(exc) != "TargetGroupNotFound":
            raise
        found = []
    if found:
        group = found[0]
        arn = str(group["TargetGroupArn"])
        if not _owned(_tags_of(elb, [arn]).get(arn, {}), environment):
            raise ConfigurationError(f"a target group named {name} exists but is not tagged for {environment}")
        if group.get("VpcId") != vpc_id:
            raise ConfigurationError(
                f"target group {name} belongs to {group.get('VpcId')}, not the environment's VPC {vpc_id}: "
                "tear the environment down (slipway teardown) to start it afresh"
            )
        if any(group.get(k) != v for k, v in health.items()):
            elb.modify_target_group(TargetGroupArn=arn, **health)
    else:
        arn = str(
            elb.create_target_group(
                Name=name,
                Protocol="TCP",
                Port=port,
                VpcId=vpc_id,
                TargetType="instance",
                Tags=_tags(tags | {"slipway:port": str(port)}),
                **health,
            )["TargetGroups"][0]["TargetGroupArn"]
        )
        created.append("target-group")
    attributes = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
    if attributes.get("deregistration_delay.timeout_seconds") != str(deregistration_delay):
        elb.modify_target_group_attributes(
            TargetGroupArn=arn,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay)}],
        )
    return arn


def _converge_listeners(elb: Client, balancer_arn: str, groups: dict[str, str], created: list[str]) -> None:
    """One TCP listener per port forwarding to its target group; a listener of a port no longer
    served is deleted (its target group goes with the environment's, in `delete_load_balancer`)."""
    listeners = {
        str(listener["Port"]): listener
        for page in elb.get_paginator("describe_listeners").paginate(LoadBalancerArn=balancer_arn)
        for listener in page["Listeners"]
    }
    for port, group_arn in groups.items():
        action = [{"Type": "forward", "TargetGroupArn": group_arn}]
        listener = listeners.get(port)
        if listener is None:
            elb.create_listener(LoadBalancerArn=balancer_arn, Protocol="TCP", Port=int(port), DefaultActions=action)
            created.append("listener")
        elif [a.get("TargetGroupArn") for a in listener.get("DefaultActions", [])] != [group_arn]:
            elb.modify_listener(ListenerArn=listener["ListenerArn"], DefaultActions=action)
    for port, listener in listeners.items():
        if port not in groups:
            elb.delete_listener(ListenerArn=listener["ListenerArn"])


def register(elb: Client, group_arns: Iterable[str], instance_ids: list[str]) -> None:
    """Register the instances (on the group's own port) in each group; repeating it is harmless."""
    if instance_ids:
        for arn in group_arns:
            elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in instance_ids])


def deregister(elb: Client, group_arns: Iterable[str], instance_ids: list[str]) -> None:
    """Deregister the instances from each group: each starts draining (no new connection, the open
    ones kept for the group's deregistration delay). One not registered (any more) is done."""
    if not instance_ids:
        return
    for arn in group_arns:
        try:
            elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in instance_ids])
        except ClientError as exc:
            if error_code(exc) not in ("InvalidTarget", "TargetGroupNotFound"):
                raise


def target_health(elb: Client, group_arn: str) -> dict[str, AwsDict]:
    """{instance id: {"state": ..., "reason": ...}} for every target the group knows."""
    answer = elb.describe_target_health(TargetGroupArn=group_arn)["TargetHealthDescriptions"]
    return {
        d["Target"]["Id"]: {
            "state": d["TargetHealth"]["State"],
            "reason": d["TargetHealth"].get("Reason", ""),
            "description": d["TargetHealth"].get("Description", ""),
        }
        for d in answer
    }


def environment_groups(elb: Client, environment: str, deployment: str | None = None) -> list[str]:
    """The ARNs of the target groups tagged for the environment (and deployment, if given)."""
    arns = [
        g["TargetGroupArn"]
        for page in elb.get_paginator("describe_target_groups").paginate()
        for g in page["TargetGroups"]
        if g["TargetGroupName"].startswith("slipway-")
    ]
    tags = _tags_of(elb, arns) if arns else {}
    return sorted(a for a in arns if _owned(tags.get(a, {}), environment, deployment))


def delete_load_balancer(elb: Client, environment: str, deployment: str | None = None) -> tuple[dict[str, int], bool]:
    """Delete the environment's load balancer (its listeners go with it) and target groups (of
    one deployment, if given: what a failed first deployment created). A target group still in use
    while its load balancer is being deleted answers ResourceInUse: transient, the step is retried.
    Returns what was deleted, and whether a load balancer stays (an older deployment's)."""
    removed = {"load-balancer": 0, "target-group": 0}
    balancer = find_load_balancer(elb, environment)
    kept = False
    if balancer is not None:
        arn = balancer["LoadBalancerArn"]
        if deployment is None or _owned(_tags_of(elb, [arn]).get(arn, {}), environment, deployment):
            try:
                elb.delete_load_balancer(LoadBalancerArn=arn)
                removed["load-balancer"] += 1
            except ClientError as exc:
                if error_code(exc) != "LoadBalancerNotFound":
                    raise
        else:
            kept = True
    for group in environment_groups(elb, environment, deployment):
        try:
            elb.delete_target_group(TargetGroupArn=group)
            removed["target-group"] += 1
        except ClientError as exc:
            if error_code(exc) != "TargetGroupNotFound":
                raise
    return removed, kept


def interfaces_left(ec2: Client, environment: str) -> list[str]:
    """The network interfaces the environment's load balancer still holds: AWS releases them some
    time after DeleteLoadBalancer, and refuses to delete the subnets and security groups until then."""
    page = ec2.describe_network_interfaces(
        Filters=[{"Name": "description", "Values": [f"ELB net/{naming.elb_name(environment)}/*"]}]
    )
    return sorted(i["NetworkInterfaceId"] for i in page["NetworkInterfaces"])


def count_tagged(elb: Client, environment: str) -> dict[str, int]:
    return {
        "load-balancer": int(find_load_balancer(elb, environment) is not None),
        "target-group": len(environment_groups(elb, environment)),
    }
