"""EC2 network adapter: the environment's VPC, subnets, internet gateway, route table and security
groups (the nodes', and the load balancer's), found and removed by tag; creation converges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import naming
from chalicelib.aws import Client, error_code, just_created
from chalicelib.aws.ec2 import AwsDict, gone, spec
from chalicelib.errors import ConfigurationError
from chalicelib.observability import logger

ANYWHERE = "0.0.0.0/0"
# Swarm's own traffic: cluster management, node gossip, overlay network.
SWARM_PORTS = (("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789))

# Not found right after a create (EC2 is eventually consistent: an id it has just given out may
# be unknown to the next call for a moment). Each is TransientError only in the call that reads
# what was just made, so that the state machine retries the step (see chalicelib.aws).
# ensure_network: every id it passes on was created by it, or found by its tags moments ago (by
# an attempt whose answer was lost, perhaps), so its calls may not see them yet.
NETWORK_NOT_VISIBLE = frozenset(
    {
        "InvalidVpcID.NotFound",  # the VPC, to the calls after CreateVpc
        "InvalidSubnetID.NotFound",  # a subnet, after CreateSubnet
        "InvalidInternetGatewayID.NotFound",  # the internet gateway, after CreateInternetGateway
        "InvalidGatewayID.NotFound",  # the same, as CreateRoute names it
        "InvalidRouteTableID.NotFound",  # the route table, after CreateRouteTable
        "InvalidGroup.NotFound",  # the security group, after CreateSecurityGroup
    }
)

TagsFor = Callable[[str], dict[str, str]]


def _tag(resource: AwsDict, key: str) -> str | None:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == key), None)


def ensure_network(
    ec2: Client,
    create: Client,
    *,
    environment: str,
    tags_for: TagsFor,
    vpc_cidr: str,
    subnet_cidrs: tuple[str, ...],
    service_ports: tuple[int, ...],
    ingress: str = "none",
) -> AwsDict:
    """Find each network resource by its environment tag, create only what is missing, and
    converge its settings (DNS names, public IPs, attachment, route, association, rules).

    `create` is a one-attempt client for the creates AWS cannot deduplicate (see chalicelib.aws):
    if such a call's response is lost, this step fails, is retried whole, and finds the resource
    by the tags it was created with. `tags_for(role)` gives the tags for a resource created now.
    A resource not visible yet to the call after its create (NETWORK_NOT_VISIBLE) is TransientError.
    """
    with just_created(f"part of the network of {environment}", NETWORK_NOT_VISIBLE):
        created: list[str] = []

        def lookup(describe: Callable[..., AwsDict], key: str, id_key: str, role: str) -> AwsDict | None:
            found = describe(Filters=naming.tag_filters(environment, role=role))[key]
            # Should a duplicate ever exist, every step agrees on the same one.
            return min(found, key=lambda r: str(r[id_key])) if found else None

        vpc = lookup(ec2.describe_vpcs, "Vpcs", "VpcId", "vpc")
        if vpc is None:
            vpc = create.create_vpc(CidrBlock=vpc_cidr, TagSpecifications=spec("vpc", tags_for("vpc")))["Vpc"]
            created.append("vpc")
        vpc_id = vpc["VpcId"]
        # Public DNS names let nodes reach the SSM endpoints by their regional names.
        if not ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]:
            ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})

        subnet_ids = _ensure_subnets(ec2, create, environment, vpc_id, subnet_cidrs, tags_for, created)

        igw = lookup(ec2.describe_internet_gateways, "InternetGateways", "InternetGatewayId", "internet-gateway")
        if igw is None:
            igw = create.create_internet_gateway(
                TagSpecifications=spec("internet-gateway", tags_for("internet-gateway"))
            )["InternetGateway"]
            created.append("internet-gateway")
        igw_id = igw["InternetGatewayId"]
        if not any(a.get("VpcId") == vpc_id for a in igw.get("Attachments", [])):
            _already_done(
                ec2.attach_internet_gateway, {"Resource.AlreadyAssociated"}, InternetGatewayId=igw_id, VpcId=vpc_id
            )

        table = lookup(ec2.describe_route_tables, "RouteTables", "RouteTableId", "route-table")
        if table is None:
            table = create.create_route_table(
                VpcId=vpc_id, TagSpecifications=spec("route-table", tags_for("route-table"))
            )["RouteTable"]
            created.append("route-table")
        table_id = table["RouteTableId"]
        if not any(r.get("DestinationCidrBlock") == ANYWHERE for r in table.get("Routes", [])):
            _already_done(
                ec2.create_route,
                {"RouteAlreadyExists"},
                RouteTableId=table_id,
                DestinationCidrBlock=ANYWHERE,
                GatewayId=igw_id,
            )
        associated = {a.get("SubnetId") for a in table.get("Associations", [])}
        for subnet_id in subnet_ids:
            if subnet_id not in associated:
                _already_done(
                    ec2.associate_route_table, {"Resource.AlreadyAssociated"}, RouteTableId=table_id, SubnetId=subnet_id
                )

        def ensure_group(role: str, name: str, description: str) -> AwsDict:
            group = lookup(ec2.describe_security_groups, "SecurityGroups", "GroupId", role)
            if group is None:
                group = {
                    "GroupId": create.create_security_group(
                        GroupName=name,
                        Description=description,
                        VpcId=vpc_id,
                        TagSpecifications=spec("security-group", tags_for(role)),
                    )["GroupId"],
                    "IpPermissions": [],
                }
                created.append(role)
            return group

        # With a load balancer, the service ports are open to the world on its group only, and on the
        # nodes' group only from the load balancer's (its health checks come from there too).
        lb_group = (
            ensure_group(
                LB_GROUP_ROLE,
                f"slipway-{environment}-lb",
                "Slipway load balancer: the service ports, from anywhere",
            )
            if ingress == "nlb"
            else None
        )
        group = ensure_group(
            "security-group",
            f"slipway-{environment}-nodes",
            "Slipway swarm nodes: service ports, swarm traffic within the group only",
        )
        group_id = group["GroupId"]
        service_source = lb_group["GroupId"] if lb_group else None
        _converge_rules(ec2, group, _ingress(group_id, service_ports, service_source))
        if lb_group:
            _converge_rules(ec2, lb_group, _ingress(None, service_ports, None))
        logger.info("network converged", extra={"vpc_id": vpc_id, "created_roles": created})
        return {
            "vpc_id": vpc_id,
            "subnet_ids": subnet_ids,
            "internet_gateway_id": igw_id,
            "route_table_id": table_id,
            "security_group_id": group_id,
            "lb_security_group_id": lb_group["GroupId"] if lb_group else None,
            "created": created,
        }


SUBNET_INDEX_TAG = "slipway:subnet"
LB_GROUP_ROLE = "lb-security-group"


def _ensure_subnets(
    ec2: Client,
    create: Client,
    environment: str,
    vpc_id: str,
    cidrs: tuple[str, ...],
    tags_for: TagsFor,
    created: list[str],
) -> list[str]:
    """One subnet per availability zone, each found by its index tag, public IPs on launch."""
    found = ec2.describe_subnets(Filters=naming.tag_filters(environment, role="subnet"))["Subnets"]
    by_index: dict[str, AwsDict] = {}
    for subnet in sorted(found, key=lambda x: x["SubnetId"]):
        index = {t["Key"]: t["Value"] for t in subnet.get("Tags", [])}.get(SUBNET_INDEX_TAG, "0")
        by_index.setdefault(index, subnet)
    zones: list[str] | None = None
    ids: list[str] = []
    for index, cidr in enumerate(cidrs):
        subnet = by_index.get(str(index))
        if subnet is None:
            if zones is None:
                zones = sorted(
                    z["ZoneName"]
                    for z in ec2.describe_availability_zones(
                        Filters=[
                            {"Name": "state", "Values": ["available"]},
                            {"Name": "zone-type", "Values": ["availability-zone"]},
                        ]
                    )["AvailabilityZones"]
                )
            if index >= len(zones):
                raise ConfigurationError(f"{len(cidrs)} subnets asked for, the region has {len(zones)} zones")
            subnet = create.create_subnet(
                VpcId=vpc_id,
                CidrBlock=cidr,
                AvailabilityZone=zones[index],
                TagSpecifications=spec("subnet", tags_for("subnet") | {SUBNET_INDEX_TAG: str(index)}),
            )["Subnet"]
            created.append("subnet")
        if not subnet.get("MapPublicIpOnLaunch"):
            ec2.modify_subnet_attribute(SubnetId=subnet["SubnetId"], MapPublicIpOnLaunch={"Value": True})
        ids.append(subnet["SubnetId"])
    return ids


def _already_done(call: Callable[..., object], codes: set[str], **kwargs: Any) -> None:
    """Make a call whose repeat AWS refuses with `codes`: a retry after a lost response lands
    there, and the work it asked for is done."""
    try:
        call(**kwargs)
    except ClientError as exc:
        if error_code(exc) not in codes:
            raise


def _rule_keys(permissions: list[AwsDict]) -> set[tuple[Any, ...]]:
    keys: set[tuple[Any, ...]] = set()
    for p in permissions:
        base = (p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"))
        keys |= {base + ("cidr", r["CidrIp"]) for r in p.get("IpRanges", [])}
        keys |= {base + ("group", g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
    return keys


def _missing_rules(existing: list[AwsDict], wanted: list[AwsDict]) -> list[AwsDict]:
    have = _rule_keys(existing)
    return [rule for rule in wanted if not _rule_keys([rule]) <= have]


def _converge_rules(ec2: Client, group: AwsDict, wanted: list[AwsDict]) -> None:
    """Make the group's inbound rules exactly `wanted`: add the missing, revoke the rest (a service
    port open to the world from before a load balancer came in front, a port no longer served)."""
    existing = group.get("IpPermissions", [])
    missing = _missing_rules(existing, wanted)
    if missing:
        _already_done(
            ec2.authorize_security_group_ingress,
            {"InvalidPermission.Duplicate"},
            GroupId=group["GroupId"],
            IpPermissions=missing,
        )
    extra = _extra_rules(existing, wanted)
    if extra:
        _already_done(
            ec2.revoke_security_group_ingress,
            {"InvalidPermission.NotFound"},
            GroupId=group["GroupId"],
            IpPermissions=extra,
        )


def _extra_rules(existing: list[AwsDict], wanted: list[AwsDict]) -> list[AwsDict]:
    """The rules of `existing` no rule of `wanted` grants, one permission per source."""
    keep = _rule_keys(wanted)
    extra: list[AwsDict] = []
    for p in existing:
        base = {k: p[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in p}
        key = (p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"))
        extra += [
            base | {"IpRanges": [{"CidrIp": r["CidrIp"]}]}
            for r in p.get("IpRanges", [])
            if key + ("cidr", r["CidrIp"]) not in keep
        ]
        extra += [
            base | {"UserIdGroupPairs": [{"GroupId": g["GroupId"]}]}
            for g in p.get("UserIdGroupPairs", [])
            if key + ("group", g["GroupId"]) not in keep
        ]
        extra += [base | {"Ipv6Ranges": [{"CidrIpv6": r["CidrIpv6"]}]} for r in p.get("Ipv6Ranges", [])]
    return extra


def _ingress(group_id: str | None, service_ports: tuple[int, ...], service_source: str | None) -> list[AwsDict]:
    """The inbound rules of a group: the service ports from `service_source` (a group) or from
    anywhere, and, for the nodes' group (`group_id`), the swarm's ports from within itself."""
    source: AwsDict = (
        {"UserIdGroupPairs": [{"GroupId": service_source, "Description": "service, from the load balancer"}]}
        if service_source
        else {"IpRanges": [{"CidrIp": ANYWHERE, "Description": "service"}]}
    )
    rules: list[AwsDict] = [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source} for port in service_ports]
    if group_id:
        rules += [
            {
                "IpProtocol": proto,
                "FromPort": port,
                "ToPort": port,
                "UserIdGroupPairs": [{"GroupId": group_id, "Description": "swarm"}],
            }
            for proto, port in SWARM_PORTS
        ]
    return rules


def delete_network(ec2: Client, environment: str, deployment: str | None = None) -> dict[str, int]:
    """Remove tagged network resources in dependency order; 'already gone' counts as done."""
    filters = naming.tag_filters(environment, deployment)
    removed = {"security-group": 0, "route-table": 0, "internet-gateway": 0, "subnet": 0, "vpc": 0}
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    # The nodes' group names the load balancer's in its rules: AWS refuses to delete the latter first.
    for group in sorted(groups, key=lambda g: _tag(g, naming.TAG_ROLE) == LB_GROUP_ROLE):
        removed["security-group"] += gone(ec2.delete_security_group, GroupId=group["GroupId"])
    for table in ec2.describe_route_tables(Filters=filters)["RouteTables"]:
        for assoc in table.get("Associations", []):
            if not assoc.get("Main"):
                gone(ec2.disassociate_route_table, AssociationId=assoc["RouteTableAssociationId"])
        removed["route-table"] += gone(ec2.delete_route_table, RouteTableId=table["RouteTableId"])
    for igw in ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]:
        for attachment in igw.get("Attachments", []):
            gone(ec2.detach_internet_gateway, InternetGatewayId=igw["InternetGatewayId"], VpcId=attachment["VpcId"])
        removed["internet-gateway"] += gone(ec2.delete_internet_gateway, InternetGatewayId=igw["InternetGatewayId"])
    for subnet in ec2.describe_subnets(Filters=filters)["Subnets"]:
        removed["subnet"] += gone(ec2.delete_subnet, SubnetId=subnet["SubnetId"])
    for vpc in ec2.describe_vpcs(Filters=filters)["Vpcs"]:
        removed["vpc"] += gone(ec2.delete_vpc, VpcId=vpc["VpcId"])
    return removed
