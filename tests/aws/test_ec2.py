"""The EC2 adapter against moto: the network converges by tag and teardown removes only its own."""

import pytest

from chalicelib import naming
from chalicelib.aws import ec2 as adapter


def converge(ec2, environment="dev", deployment="run-1"):
    return adapter.ensure_network(
        ec2, ec2, environment=environment,
        tags_for=lambda role: naming.tags(environment, deployment, "c0ffee", role),
        vpc_cidr="10.42.0.0/16", subnet_cidr="10.42.0.0/24", service_ports=(80, 443))


def test_first_converge_creates_every_piece_tagged(ec2):
    net = converge(ec2)
    assert net["created"] == ["vpc", "subnet", "internet-gateway", "route-table", "security-group"]
    vpc = ec2.describe_vpcs(VpcIds=[net["vpc_id"]])["Vpcs"][0]
    tags = {t["Key"]: t["Value"] for t in vpc["Tags"]}
    assert tags[naming.TAG_ENVIRONMENT] == "dev" and tags[naming.TAG_DEPLOYMENT] == "run-1"
    table = ec2.describe_route_tables(RouteTableIds=[net["route_table_id"]])["RouteTables"][0]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": net["internet_gateway_id"]}.items() <= \
        next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0").items()
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
    world = sorted(p["FromPort"] for p in group["IpPermissions"]
                   if any(r["CidrIp"] == "0.0.0.0/0" for r in p.get("IpRanges", [])))
    assert world == [80, 443]
    assert not any(p.get("FromPort") == 22 for p in group["IpPermissions"])
    swarm = {(p["IpProtocol"], p["FromPort"]) for p in group["IpPermissions"]
             if p.get("UserIdGroupPairs")}
    assert swarm == {("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789)}
    assert all(pair["GroupId"] == group["GroupId"]
               for p in group["IpPermissions"] for pair in p.get("UserIdGroupPairs", []))


def test_delete_network_removes_only_what_the_scope_tags(ec2):
    mine = converge(ec2, environment="dev")
    other = converge(ec2, environment="prod")
    removed = adapter.delete_network(ec2, "dev")
    assert removed == {"security-group": 1, "route-table": 1, "internet-gateway": 1, "subnet": 1, "vpc": 1}
    assert ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [mine["vpc_id"]]}])["Vpcs"] == []
    assert ec2.describe_vpcs(VpcIds=[other["vpc_id"]])["Vpcs"]
    assert adapter.delete_network(ec2, "dev") == dict.fromkeys(removed, 0)


def test_deployment_scope_leaves_an_older_deployments_network(ec2):
    converge(ec2, deployment="run-1")
    assert adapter.delete_network(ec2, "dev", deployment="run-2") == {
        "security-group": 0, "route-table": 0, "internet-gateway": 0, "subnet": 0, "vpc": 0}


def test_nodes_launch_with_imdsv2_encrypted_gp3_and_tags(ec2):
    net = converge(ec2)
    image = ec2.register_image(Name="slipway-dev-node-x", RootDeviceName="/dev/sda1")["ImageId"]
    ids = adapter.launch_nodes(
        ec2, image_id=image, count=2, instance_type="t3.small", subnet_id=net["subnet_ids"][0],
        security_group_id=net["security_group_id"], instance_profile="",
        tags=naming.tags("dev", "run-1", "c0ffee", "node"), client_token="tok")
    assert len(ids) == 2
    inst = ec2.describe_instances(InstanceIds=ids[:1])["Reservations"][0]["Instances"][0]
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert [n.instance_id for n in adapter.list_nodes(ec2, "dev")] == sorted(ids)
    assert adapter.list_nodes(ec2, "prod") == []


@pytest.mark.parametrize("keep", [set(), None])
def test_delete_images_deregisters_the_environments_images(ec2, keep):
    image = ec2.register_image(Name="slipway-dev-node-x", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": naming.TAG_ENVIRONMENT, "Value": "dev"}])
    untagged = ec2.register_image(Name="someone-elses", RootDeviceName="/dev/sda1")["ImageId"]
    assert adapter.delete_images(ec2, "dev", keep) == 1
    remaining = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert image not in remaining and untagged in remaining
