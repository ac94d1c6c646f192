"""The EC2 adapters (ec2, network) against moto: the network converges by tag and teardown removes only its own."""

from chalicelib import naming
from chalicelib.aws import ec2 as adapter
from chalicelib.aws import network as network_adapter


def converge(ec2, environment="dev", deployment="run-1", subnets=("10.42.0.0/24",)):
    return network_adapter.ensure_network(
        ec2,
        ec2,
        environment=environment,
        tags_for=lambda role: naming.tags(environment, deployment, "c0ffee", role),
        vpc_cidr="10.42.0.0/16",
        subnet_cidrs=subnets,
        service_ports=(80, 443),
    )


def test_first_converge_creates_every_piece_tagged(ec2):
    net = converge(ec2)
    assert net["created"] == ["vpc", "subnet", "internet-gateway", "route-table", "security-group"]
    vpc = ec2.describe_vpcs(VpcIds=[net["vpc_id"]])["Vpcs"][0]
    tags = {t["Key"]: t["Value"] for t in vpc["Tags"]}
    assert tags[naming.TAG_ENVIRONMENT] == "dev" and tags[naming.TAG_DEPLOYMENT] == "run-1"
    table = ec2.describe_route_tables(RouteTableIds=[net["route_table_id"]])["RouteTables"][0]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": net["internet_gateway_id"]}.items() <= next(
        r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"
    ).items()
    assert [a["SubnetId"] for a in table["Associations"] if not a.get("Main")] == net["subnet_ids"]


def test_second_converge_makes_no_create_call(ec2, recorder):
    first = converge(ec2)
    recorder.calls.clear()
    second = converge(ec2, deployment="run-2")
    assert "DescribeVpcs" in recorder.calls  # the recorder sees the calls
    assert recorder.mutating() == []
    assert second["created"] == [] and second["vpc_id"] == first["vpc_id"]


def test_security_group_opens_only_service_ports_to_the_world_and_never_ssh(ec2):
    net = converge(ec2)
    group = ec2.describe_security_groups(GroupIds=[net["security_group_id"]])["SecurityGroups"][0]
    world = sorted(
        p["FromPort"] for p in group["IpPermissions"] if any(r["CidrIp"] == "0.0.0.0/0" for r in p.get("IpRanges", []))
    )
    assert world == [80, 443]
    assert not any(p.get("FromPort") == 22 for p in group["IpPermissions"])
    swarm = {(p["IpProtocol"], p["FromPort"]) for p in group["IpPermissions"] if p.get("UserIdGroupPairs")}
    assert swarm == {("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789)}
    assert all(
        pair["GroupId"] == group["GroupId"] for p in group["IpPermissions"] for pair in p.get("UserIdGroupPairs", [])
    )


def test_delete_network_removes_only_what_the_scope_tags(ec2):
    mine = converge(ec2, environment="dev")
    other = converge(ec2, environment="prod")
    removed = network_adapter.delete_network(ec2, "dev")
    assert removed == {"security-group": 1, "route-table": 1, "internet-gateway": 1, "subnet": 1, "vpc": 1}
    assert ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [mine["vpc_id"]]}])["Vpcs"] == []
    assert ec2.describe_vpcs(VpcIds=[other["vpc_id"]])["Vpcs"]
    assert network_adapter.delete_network(ec2, "dev") == dict.fromkeys(removed, 0)


def test_deployment_scope_leaves_an_older_deployments_network(ec2):
    converge(ec2, deployment="run-1")
    assert network_adapter.delete_network(ec2, "dev", deployment="run-2") == {
        "security-group": 0,
        "route-table": 0,
        "internet-gateway": 0,
        "subnet": 0,
        "vpc": 0,
    }


def test_one_subnet_per_zone_all_routed(ec2):
    net = converge(ec2, subnets=("10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"))
    subnets = ec2.describe_subnets(SubnetIds=net["subnet_ids"])["Subnets"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 3
    assert all(s["MapPublicIpOnLaunch"] for s in subnets)
    table = ec2.describe_route_tables(RouteTableIds=[net["route_table_id"]])["RouteTables"][0]
    assert sorted(a["SubnetId"] for a in table["Associations"] if not a.get("Main")) == sorted(net["subnet_ids"])
    assert converge(ec2, subnets=("10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"))["created"] == []


def template_for(ec2, net, image):
    return adapter.ensure_launch_template(
        ec2,
        ec2,
        environment="dev",
        tags=naming.tags("dev", "run-1", "c0ffee", "launch-template"),
        image_id=image,
        instance_type="t3.small",
        security_group_id=net["security_group_id"],
        instance_profile="",
        client_token="tok-" + image,
    )


def test_launch_template_has_imdsv2_encrypted_gp3_and_one_version_per_image(ec2):
    net = converge(ec2)
    image = ec2.register_image(Name="slipway-dev-node-x", RootDeviceName="/dev/sda1")["ImageId"]
    template_id, version = template_for(ec2, net, image)
    assert template_for(ec2, net, image) == (template_id, version)  # found again, not recreated
    data = ec2.describe_launch_template_versions(LaunchTemplateId=template_id)["LaunchTemplateVersions"][0][
        "LaunchTemplateData"
    ]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["BlockDeviceMappings"][0]["Ebs"] == {
        "VolumeType": "gp3",
        "VolumeSize": 20,
        "Encrypted": True,
        "DeleteOnTermination": True,
    }
    newer = ec2.register_image(Name="slipway-dev-node-y", RootDeviceName="/dev/sda1")["ImageId"]
    assert template_for(ec2, net, newer) == (template_id, str(int(version) + 1))


def test_nodes_launch_from_the_template_spread_over_subnets_with_tags(ec2):
    net = converge(ec2, subnets=("10.42.0.0/24", "10.42.1.0/24"))
    image = ec2.register_image(Name="slipway-dev-node-x", RootDeviceName="/dev/sda1")["ImageId"]
    placement = {net["subnet_ids"][0]: 2, net["subnet_ids"][1]: 1}
    ids = adapter.launch_nodes(
        ec2,
        template=template_for(ec2, net, image),
        placement=placement,
        tags=naming.tags("dev", "run-1", "c0ffee", "node"),
        client_token="tok",
    )
    nodes = adapter.list_nodes(ec2, "dev")
    assert sorted(n.instance_id for n in nodes) == sorted(ids) and len(ids) == 3
    assert sorted(n.subnet_id for n in nodes) == sorted([net["subnet_ids"][0]] * 2 + [net["subnet_ids"][1]])
    assert adapter.list_nodes(ec2, "prod") == []


def test_delete_images_deregisters_the_environments_images(ec2):
    image = ec2.register_image(Name="slipway-dev-node-x", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": naming.TAG_ENVIRONMENT, "Value": "dev"}])
    untagged = ec2.register_image(Name="someone-elses", RootDeviceName="/dev/sda1")["ImageId"]
    images = adapter.list_images(ec2, "dev")
    assert [i["ImageId"] for i in images] == [image]
    assert adapter.delete_images(ec2, images) == 1
    assert adapter.delete_images(ec2, images) == 0  # already gone: nothing to do, no error
    remaining = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert image not in remaining and untagged in remaining
