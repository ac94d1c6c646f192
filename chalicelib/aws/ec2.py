"""EC2 adapter: images, launch templates and nodes, found and removed by tag; creation converges.
The network (VPC, subnets, gateway, routes, security groups) is chalicelib.aws.network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import naming
from chalicelib.aws import Client, error_code, is_not_found, just_created

LIVE_STATES = ["pending", "running", "stopping", "stopped"]

# Not found right after a create (EC2 is eventually consistent: an id it has just given out may
# be unknown to the next call for a moment). Each is TransientError only in the call that reads
# what was just made, so that the state machine retries the step (see chalicelib.aws).
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


def spec(resource_type: str, tags: dict[str, str]) -> list[AwsDict]:
    return [{"ResourceType": resource_type, "Tags": naming.tag_list(tags)}]


def find_image(ec2: Client, name: str) -> str | None:
    images = ec2.describe_images(
        Owners=["self"],
        Filters=[{"Name": "name", "Values": [name]}, {"Name": "state", "Values": ["available"]}],
    )["Images"]
    return str(images[0]["ImageId"]) if images else None


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
            TagSpecifications=spec("launch-template", tags),
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
                TagSpecifications=spec("instance", tags) + spec("volume", tags),
            )
        ids += [i["InstanceId"] for i in reservation["Instances"]]
    return ids


def delete_launch_templates(ec2: Client, environment: str, deployment: str | None = None) -> int:
    found = ec2.describe_launch_templates(Filters=naming.tag_filters(environment, deployment, role="launch-template"))[
        "LaunchTemplates"
    ]
    return sum(gone(ec2.delete_launch_template, LaunchTemplateId=t["LaunchTemplateId"]) for t in found)


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


def gone(call: Callable[..., object], **kwargs: Any) -> bool:
    """Make a delete; True if it deleted, False if the resource was already gone."""
    try:
        call(**kwargs)
        return True
    except ClientError as exc:
        # A deregistered image answers "Unavailable" for a while before it is "NotFound".
        if is_not_found(exc) or error_code(exc) == "InvalidAMIID.Unavailable":
            return False
        raise


def list_images(ec2: Client, environment: str) -> list[AwsDict]:
    images: list[AwsDict] = ec2.describe_images(Owners=["self"], Filters=naming.tag_filters(environment))["Images"]
    return images


def delete_images(ec2: Client, images: list[AwsDict]) -> int:
    """Deregister these images (as DescribeImages gave them) and delete their snapshots."""
    count = 0
    for image in images:
        count += gone(ec2.deregister_image, ImageId=image["ImageId"])
        for mapping in image.get("BlockDeviceMappings", []):
            snapshot = mapping.get("Ebs", {}).get("SnapshotId")
            if snapshot:
                gone(ec2.delete_snapshot, SnapshotId=snapshot)
    return count


def count_tagged(ec2: Client, environment: str, deployment: str | None = None) -> dict[str, int]:
    """How many resources of each type still carry the environment's tag, and the deployment's if
    given (live instances only)."""
    filters = naming.tag_filters(environment, deployment)
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
