"""EC2 adapter: images, the network and nodes, found and removed by tag; creation converges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import naming
from chalicelib.aws import Client, error_code, is_not_found, just_created
from chalicelib.errors import ConfigurationError
from chalicelib.observability import logger

ANYWHERE = "0.0.0.0/0"
# Swarm's own traffic: cluster management, node gossip, overlay network.
SWARM_PORTS = (("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789))
LIVE_STATES = ["pending", "running", "stopping", "stopped"]

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
# launch_nodes: RunInstances names the launch template (version) the same step has just created,
# the subnets and security group `ensure_network` created one step before, and the image the
# bake may just have registered.
LAUNCH_NOT_VISIBLE = frozenset(
    {
        "InvalidLaunchTemplateId.NotFound",
        "InvalidLaunchTemplateId.VersionNotFound",
        "InvalidSubnetID.NotFound",
        "InvalidGroup.NotFound",
        "InvalidAMIID.NotFound",
    }
)
# DescribeImages by id: the image check_bake read from the bake that has just registered it.
IMAGE_NOT_VISIBLE = frozenset({"InvalidAMIID.NotFound"})
# DescribeInstances by id: the ids a step passes are always the run's own nodes, read first by
# check_nodes right after RunInstances.
INSTANCE_NOT_VISIBLE = frozenset({"InvalidInstanceID.NotFound"})

AwsDict = dict[str, Any]
TagsFor = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class Node:
    instance_id: str
    image_id: str
    state: str
    hostname: str
    private_ip: str
    deployment: str
    subnet_id: str = ""
    swarm_role: str = ""


def _tag(resource: AwsDict, key: str) -> str | None:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == key), None)


def _spec(resource_type: str, tags: dict[str, str]) -> list[AwsDict]:
    return [{"ResourceType": resource_type, "Tags": naming.tag_list(tags)}]


def find_image(ec2: Client, name: str) -> str | None:
    images = ec2.describe_images(
        Owners=["self"],
        Filters=[{"Name": "name", "Values": [name]}, {"Name": "state", "Values": ["available"]}],
    )["Images"]
    return str(images[0]["ImageId"]) if images else None


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
        return _converge_network(
            ec2,
            create,
            environment=environment,
            tags_for=tags_for,
            vpc_cidr=vpc_cidr,
            subnet_cidrs=subnet_cidrs,
            service_ports=service_ports,
            ingress=ingress,
        )


def _converge_network(
    ec2: Client,
    create: Client,
    *,
    environment: str,
    tags_for: TagsFor,
    vpc_cidr: str,
    subnet_cidrs: tuple[str, ...],
    service_ports: tuple[int, ...],
    ingress: str,
) -> AwsDict:
    created: list[str] = []

    def lookup(describe: Callable[..., AwsDict], key: str, id_key: str, role: str) -> AwsDict | None:
        found = describe(Filters=naming.tag_filters(environment, role=role))[key]
        # Should a duplicate ever exist, every step agrees on the same one.
        return min(found, key=lambda r: str(r[id_key])) if found else None

    vpc = lookup(ec2.describe_vpcs, "Vpcs", "VpcId", "vpc")
    if vpc is None:
        vpc = create.create_vpc(CidrBlock=vpc_cidr, TagSpecifications=_spec("vpc", tags_for("vpc")))["Vpc"]
        created.append("vpc")
    vpc_id = vpc["VpcId"]
    # Public DNS names let nodes reach the SSM endpoints by their regional names.
    if not ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]:
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})

    subnet_ids = _ensure_subnets(ec2, create, environment, vpc_id, subnet_cidrs, tags_for, created)

    igw = lookup(ec2.describe_internet_gateways, "InternetGateways", "InternetGatewayId", "internet-gateway")
    if igw is None:
        igw = create.create_internet_gateway(TagSpecifications=_spec("internet-gateway", tags_for("internet-gateway")))[
            "InternetGateway"
        ]
        created.append("internet-gateway")
    igw_id = igw["InternetGatewayId"]
    if not any(a.get("VpcId") == vpc_id for a in igw.get("Attachments", [])):
        _already_done(
            ec2.attach_internet_gateway, {"Resource.AlreadyAssociated"}, InternetGatewayId=igw_id, VpcId=vpc_id
        )

    table = lookup(ec2.describe_route_tables, "RouteTables", "RouteTableId", "route-table")
    if table is None:
        table = create.create_route_table(
            VpcId=vpc_id, TagSpecifications=_spec("route-table", tags_for("route-table"))
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
                    TagSpecifications=_spec("security-group", tags_for(role)),
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
                TagSpecifications=_spec("subnet", tags_for("subnet") | {SUBNET_INDEX_TAG: str(index)}),
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


def _template_data(
    image_id: str, instance_type: str, security_group_id: str, instance_profile: str, root_device: str
) -> AwsDict:
    data: AwsDict = {
        "ImageId": image_id,
        "InstanceType": instance_type,
        "SecurityGroupIds": [security_group_id],
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [
            {
                "DeviceName": root_device,
                "Ebs": {"VolumeType": "gp3", "VolumeSize": 20, "Encrypted": True, "DeleteOnTermination": True},
            }
        ],
    }
    if instance_profile:
        data["IamInstanceProfile"] = {"Name": instance_profile}
    return data


def ensure_launch_template(
    ec2: Client,
    create: Client,
    *,
    environment: str,
    tags: dict[str, str],
    image_id: str,
    instance_type: str,
    security_group_id: str,
    instance_profile: str,
    client_token: str,
) -> tuple[str, str]:
    """The environment's launch template, with one version per image: (template id, version).
    The template itself is created through the one-attempt `create` client, like the network."""
    with just_created(f"image {image_id}", IMAGE_NOT_VISIBLE):
        root = ec2.describe_images(ImageIds=[image_id])["Images"][0].get("RootDeviceName", "/dev/sda1")
    data = _template_data(image_id, instance_type, security_group_id, instance_profile, root)
    found = ec2.describe_launch_templates(Filters=naming.tag_filters(environment, role="launch-template"))[
        "LaunchTemplates"
    ]
    if not found:
        template = create.create_launch_template(
            LaunchTemplateName=f"slipway-{environment}-nodes",
            LaunchTemplateData=data,
            TagSpecifications=_spec("launch-template", tags),
            ClientToken=client_token,
        )["LaunchTemplate"]
        return str(template["LaunchTemplateId"]), str(template["LatestVersionNumber"])
    template_id = str(min(t["LaunchTemplateId"] for t in found))
    paginator = ec2.get_paginator("describe_launch_template_versions")
    for page in paginator.paginate(LaunchTemplateId=template_id):
        for version in page["LaunchTemplateVersions"]:
            if (
                version["LaunchTemplateData"].get("ImageId") == image_id
                and version["LaunchTemplateData"].get("InstanceType") == instance_type
            ):
                return template_id, str(version["VersionNumber"])
    version = ec2.create_launch_template_version(
        LaunchTemplateId=template_id,
        LaunchTemplateData=data,
        ClientToken=client_token,
        VersionDescription=f"image {image_id}",
    )["LaunchTemplateVersion"]
    return template_id, str(version["VersionNumber"])


def launch_nodes(
    ec2: Client, *, template: tuple[str, str], placement: dict[str, int], tags: dict[str, str], client_token: str
) -> list[str]:
    """Launch `placement[subnet]` nodes in each subnet from the template version. One RunInstances
    per subnet, each with its own ClientToken, so a retried call never makes a second node (nor
    a retried step: the nodes a failed attempt launched are found by their tags)."""
    ids: list[str] = []
    for subnet_id, count in placement.items():
        with just_created(
            f"launch template {template[0]} version {template[1]}, subnet {subnet_id} or their security group",
            LAUNCH_NOT_VISIBLE,
        ):
            reservation = ec2.run_instances(
                LaunchTemplate={"LaunchTemplateId": template[0], "Version": template[1]},
                SubnetId=subnet_id,
                MinCount=count,
                MaxCount=count,
                ClientToken=f"{client_token}-{subnet_id}"[-64:],
                TagSpecifications=_spec("instance", tags) + _spec("volume", tags),
            )
        ids += [i["InstanceId"] for i in reservation["Instances"]]
    return ids


def delete_launch_templates(ec2: Client, environment: str, deployment: str | None = None) -> int:
    found = ec2.describe_launch_templates(Filters=naming.tag_filters(environment, deployment, role="launch-template"))[
        "LaunchTemplates"
    ]
    return sum(_gone(ec2.delete_launch_template, LaunchTemplateId=t["LaunchTemplateId"]) for t in found)


def list_nodes(
    ec2: Client,
    environment: str,
    *,
    deployment: str | None = None,
    states: list[str] | None = None,
    instance_ids: list[str] | None = None,
    swarm_role: str | None = None,
) -> list[Node]:
    """The environment's nodes (of one deployment, in these states, among these ids, of one swarm
    role). An id not visible yet, just after RunInstances, is TransientError (INSTANCE_NOT_VISIBLE)."""
    filters = naming.tag_filters(environment, deployment, role="node")
    if swarm_role:
        filters.append({"Name": f"tag:{naming.TAG_SWARM_ROLE}", "Values": [swarm_role]})
    filters.append({"Name": "instance-state-name", "Values": states or LIVE_STATES})
    kwargs: AwsDict = {"Filters": filters}
    if instance_ids:
        kwargs["InstanceIds"] = instance_ids
    with just_created(f"instances {instance_ids}", INSTANCE_NOT_VISIBLE if instance_ids else ()):
        pages = list(ec2.get_paginator("describe_instances").paginate(**kwargs))
    nodes: list[Node] = []
    for page in pages:
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                nodes.append(
                    Node(
                        instance_id=inst["InstanceId"],
                        image_id=inst["ImageId"],
                        state=inst["State"]["Name"],
                        hostname=(inst.get("PrivateDnsName") or "").split(".")[0],
                        private_ip=inst.get("PrivateIpAddress", ""),
                        deployment=tags.get(naming.TAG_DEPLOYMENT, ""),
                        subnet_id=inst.get("SubnetId", ""),
                        swarm_role=tags.get(naming.TAG_SWARM_ROLE, ""),
                    )
                )
    return sorted(nodes, key=lambda n: n.instance_id)


def node_environment(ec2: Client, instance_id: str) -> str | None:
    """The environment a node is tagged for (None: not a Slipway node, or no such instance). A
    terminated instance stays visible, with its tags, for about an hour."""
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if error_code(exc) == "InvalidInstanceID.NotFound":
            return None
        raise
    for reservation in reservations:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if tags.get(naming.TAG_ROLE) == "node":
                return tags.get(naming.TAG_ENVIRONMENT)
    return None


def tag_swarm_role(ec2: Client, instance_ids: list[str], role: str) -> None:
    """Record a node's swarm role on the instance: later deployments find managers by it."""
    if instance_ids:
        ec2.create_tags(Resources=instance_ids, Tags=naming.tag_list({naming.TAG_SWARM_ROLE: role}))


def any_node(ec2: Client, environment: str) -> bool:
    """Whether a running node is tagged for the environment (one page, whatever the fleet size)."""
    filters = naming.tag_filters(environment, role="node")
    filters.append({"Name": "instance-state-name", "Values": ["running"]})
    page = ec2.describe_instances(Filters=filters, MaxResults=5)
    return any(r["Instances"] for r in page["Reservations"])


def terminate(ec2: Client, instance_ids: list[str]) -> None:
    """Terminate; repeating it is harmless (terminating a terminated instance succeeds)."""
    if instance_ids:
        ec2.terminate_instances(InstanceIds=instance_ids)


def _gone(call: Callable[..., object], **kwargs: Any) -> bool:
    """Make a delete; True if it deleted, False if the resource was already gone."""
    try:
        call(**kwargs)
        return True
    except ClientError as exc:
        # A deregistered image answers "Unavailable" for a while before it is "NotFound".
        if is_not_found(exc) or error_code(exc) == "InvalidAMIID.Unavailable":
            return False
        raise


def delete_network(ec2: Client, environment: str, deployment: str | None = None) -> dict[str, int]:
    """Remove tagged network resources in dependency order; 'already gone' counts as done."""
    filters = naming.tag_filters(environment, deployment)
    removed = {"security-group": 0, "route-table": 0, "internet-gateway": 0, "subnet": 0, "vpc": 0}
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    # The nodes' group names the load balancer's in its rules: AWS refuses to delete the latter first.
    for group in sorted(groups, key=lambda g: _tag(g, naming.TAG_ROLE) == LB_GROUP_ROLE):
        removed["security-group"] += _gone(ec2.delete_security_group, GroupId=group["GroupId"])
    for table in ec2.describe_route_tables(Filters=filters)["RouteTables"]:
        for assoc in table.get("Associations", []):
            if not assoc.get("Main"):
                _gone(ec2.disassociate_route_table, AssociationId=assoc["RouteTableAssociationId"])
        removed["route-table"] += _gone(ec2.delete_route_table, RouteTableId=table["RouteTableId"])
    for igw in ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]:
        for attachment in igw.get("Attachments", []):
            _gone(ec2.detach_internet_gateway, InternetGatewayId=igw["InternetGatewayId"], VpcId=attachment["VpcId"])
        removed["internet-gateway"] += _gone(ec2.delete_internet_gateway, InternetGatewayId=igw["InternetGatewayId"])
    for subnet in ec2.describe_subnets(Filters=filters)["Subnets"]:
        removed["subnet"] += _gone(ec2.delete_subnet, SubnetId=subnet["SubnetId"])
    for vpc in ec2.describe_vpcs(Filters=filters)["Vpcs"]:
        removed["vpc"] += _gone(ec2.delete_vpc, VpcId=vpc["VpcId"])
    return removed


def list_images(ec2: Client, environment: str) -> list[AwsDict]:
    images: list[AwsDict] = ec2.describe_images(Owners=["self"], Filters=naming.tag_filters(environment))["Images"]
    return images


def delete_images(ec2: Client, images: list[AwsDict]) -> int:
    """Deregister these images (as DescribeImages gave them) and delete their snapshots."""
    count = 0
    for image in images:
        count += _gone(ec2.deregister_image, ImageId=image["ImageId"])
        for mapping in image.get("BlockDeviceMappings", []):
            snapshot = mapping.get("Ebs", {}).get("SnapshotId")
            if snapshot:
                _gone(ec2.delete_snapshot, SnapshotId=snapshot)
    return count


def count_tagged(ec2: Client, environment: str) -> dict[str, int]:
    """How many resources of each type still carry the environment's tag (live instances only)."""
    filters = naming.tag_filters(environment)
    live = [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    return {
        "instance": sum(len(r["Instances"]) for r in ec2.describe_instances(Filters=filters + live)["Reservations"]),
        "vpc": len(ec2.describe_vpcs(Filters=filters)["Vpcs"]),
        "subnet": len(ec2.describe_subnets(Filters=filters)["Subnets"]),
        "internet-gateway": len(ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]),
        "route-table": len(ec2.describe_route_tables(Filters=filters)["RouteTables"]),
        "security-group": len(ec2.describe_security_groups(Filters=filters)["SecurityGroups"]),
        "image": len(ec2.describe_images(Owners=["self"], Filters=filters)["Images"]),
        "launch-template": len(ec2.describe_launch_templates(Filters=filters)["LaunchTemplates"]),
    }
