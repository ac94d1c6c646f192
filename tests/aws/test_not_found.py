"""Not found is transient only in the read right after a create (AWS's eventual consistency):
everywhere else it is an answer, and where it means the configuration is wrong, a
ConfigurationError naming the setting, at once. Against moto; the not-yet-visible answers are
injected through botocore's send path (tests/faults.py), since moto always shows what it made."""

import pytest
from botocore.exceptions import ClientError

from chalicelib import aws, naming
from chalicelib.aws import codebuild as codebuild_adapter
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.aws import network as network_adapter
from chalicelib.aws import s3 as s3_adapter
from chalicelib.aws import ssm as ssm_adapter
from chalicelib.errors import ConfigurationError, TransientError
from slipway.faults import FIRST_READ_AFTER, Fault
from tests.aws.conftest import Answer

READ_AFTER_CREATE_CODES = sorted(
    network_adapter.NETWORK_NOT_VISIBLE
    | ec2_adapter.LAUNCH_NOT_VISIBLE
    | ec2_adapter.IMAGE_NOT_VISIBLE
    | ec2_adapter.INSTANCE_NOT_VISIBLE
    | codebuild_adapter.BUILD_NOT_VISIBLE
    | ssm_adapter.COMMAND_NOT_VISIBLE
    | ssm_adapter.PARAMETER_NOT_VISIBLE
    | {"ParameterNotFound"}
)


def client_error(code: str, operation: str = "AnyCall") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "not found"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation
    )


def not_visible(excinfo: pytest.ExceptionInfo[TransientError], code: str) -> None:
    """The TransientError came from AWS answering `code`."""
    cause = excinfo.value.__cause__
    assert isinstance(cause, ClientError) and aws.error_code(cause) == code, cause
    assert code in str(excinfo.value)


# --- the generic rule ---------------------------------------------------------------------


@pytest.mark.parametrize("code", READ_AFTER_CREATE_CODES + ["InvalidKeyPair.NotFound", "NoSuchBucket"])
def test_not_found_is_never_transient_by_itself(code):
    assert not aws.is_transient(client_error(code))


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "RequestLimitExceeded", "InternalError", "DependencyViolation"]
)
def test_throttling_faults_and_dependencies_still_are(code):
    assert aws.is_transient(client_error(code))


def test_a_step_lets_a_not_found_through_as_it_is():
    @aws.transient_errors
    def step(event: dict) -> dict:
        raise client_error("InvalidInstanceID.NotFound", "DescribeInstances")

    with pytest.raises(ClientError) as excinfo:
        step({})
    assert not isinstance(excinfo.value, TransientError)


def test_just_created_converts_only_its_codes():
    with (
        pytest.raises(TransientError, match="not visible yet, just after its create: vpc-1"),
        aws.just_created("vpc-1", {"InvalidVpcID.NotFound"}),
    ):
        raise client_error("InvalidVpcID.NotFound")
    with pytest.raises(ClientError), aws.just_created("vpc-1", {"InvalidVpcID.NotFound"}):
        raise client_error("InvalidSubnetID.NotFound")


# --- read after create: ensure_network -----------------------------------------------------


def converge(ec2, deployment="run-1", subnets=("10.42.0.0/24",)):
    return network_adapter.ensure_network(
        ec2,
        ec2,
        environment="dev",
        tags_for=lambda role: naming.tags("dev", deployment, "c0ffee", role),
        vpc_cidr="10.42.0.0/16",
        subnet_cidrs=subnets,
        service_ports=(80, 443),
    )


@pytest.mark.parametrize(
    "create,role",
    [
        ("CreateVpc", "vpc"),
        ("CreateSubnet", "subnet"),
        ("CreateInternetGateway", "internet-gateway"),
        ("CreateRouteTable", "route-table"),
        ("CreateSecurityGroup", "security-group"),
    ],
)
def test_the_network_not_visible_after_its_create_is_transient_and_the_retry_converges(ec2, create, role):
    fault = Fault(create, "not-found")
    fault.install([ec2])
    with pytest.raises(TransientError) as excinfo:
        converge(ec2)
    assert fault.fired == 1
    not_visible(excinfo, FIRST_READ_AFTER[create][1])
    # The state machine retries the step: it finds what the first attempt made, by its tags.
    net = converge(ec2)
    assert role not in net["created"]
    assert {k: v for k, v in ec2_adapter.count_tagged(ec2, "dev").items() if v} == {
        "vpc": 1,
        "subnet": 1,
        "internet-gateway": 1,
        "route-table": 1,
        "security-group": 1,
    }


@pytest.mark.parametrize(
    "operation,code",
    [
        ("CreateRoute", "InvalidGatewayID.NotFound"),  # CreateRoute's name for the new gateway
        ("AssociateRouteTable", "InvalidSubnetID.NotFound"),
        ("CreateSubnet", "InvalidVpcID.NotFound"),  # the VPC, to the create that needs it
        ("AttachInternetGateway", "InvalidVpcID.NotFound"),
    ],
)
def test_every_id_ensure_network_just_made_may_be_not_visible_yet(ec2, operation, code):
    Answer(ec2, operation, code)
    with pytest.raises(TransientError) as excinfo:
        converge(ec2)
    not_visible(excinfo, code)


def test_a_not_found_of_something_else_in_ensure_network_is_not_transient(ec2):
    # Not one of the network's ids: nothing ensure_network created answers this.
    Answer(ec2, "DescribeVpcAttribute", "InvalidKeyPair.NotFound")
    with pytest.raises(ClientError) as excinfo:
        converge(ec2)
    assert not isinstance(excinfo.value, TransientError)


# --- read after create: launch_nodes, check_nodes and the nodes' later steps ----------------


def image(ec2):
    return ec2.register_image(Name="slipway-dev-node-x", RootDeviceName="/dev/sda1")["ImageId"]


def template(ec2, net, image_id):
    return ec2_adapter.ensure_launch_template(
        ec2,
        ec2,
        environment="dev",
        tags=naming.tags("dev", "run-1", "c0ffee", "launch-template"),
        image_id=image_id,
        instance_type="t3.small",
        security_group_id=net["security_group_id"],
        instance_profile="",
        client_token="tok-" + image_id,
    )


def launch(ec2, net, lt):
    return ec2_adapter.launch_nodes(
        ec2,
        template=lt,
        placement={net["subnet_ids"][0]: 1},
        tags=naming.tags("dev", "run-1", "c0ffee", "node"),
        client_token="tok",
    )


def test_a_launch_template_not_visible_to_run_instances_is_transient_and_the_retry_launches_once(ec2):
    net = converge(ec2)
    fault = Fault("CreateLaunchTemplate", "not-found")
    fault.install([ec2])
    lt = template(ec2, net, image(ec2))
    with pytest.raises(TransientError) as excinfo:
        launch(ec2, net, lt)
    not_visible(excinfo, FIRST_READ_AFTER["CreateLaunchTemplate"][1])
    assert len(launch(ec2, net, lt)) == 1
    assert len(ec2_adapter.list_nodes(ec2, "dev")) == 1


@pytest.mark.parametrize("code", sorted(ec2_adapter.LAUNCH_NOT_VISIBLE))
def test_run_instances_may_not_see_what_was_made_just_before(ec2, code):
    net = converge(ec2)
    lt = template(ec2, net, image(ec2))
    Answer(ec2, "RunInstances", code)
    with pytest.raises(TransientError) as excinfo:
        launch(ec2, net, lt)
    not_visible(excinfo, code)


def test_the_image_the_bake_just_registered_may_not_be_visible_yet(ec2):
    net = converge(ec2)
    Answer(ec2, "DescribeImages", "InvalidAMIID.NotFound")
    with pytest.raises(TransientError) as excinfo:
        template(ec2, net, image(ec2))
    not_visible(excinfo, "InvalidAMIID.NotFound")


def test_nodes_not_visible_right_after_run_instances_are_transient(ec2):
    net = converge(ec2)
    fault = Fault("RunInstances", "not-found")
    fault.install([ec2])
    ids = launch(ec2, net, template(ec2, net, image(ec2)))
    with pytest.raises(TransientError) as excinfo:
        ec2_adapter.list_nodes(ec2, "dev", instance_ids=ids, states=["pending", "running"])
    not_visible(excinfo, "InvalidInstanceID.NotFound")
    assert [n.instance_id for n in ec2_adapter.list_nodes(ec2, "dev", instance_ids=ids)] == ids


def test_listing_nodes_by_tag_passes_an_unexpected_not_found_through(ec2):
    # Without ids nothing was just created: whatever AWS answers is not "not visible yet".
    Answer(ec2, "DescribeInstances", "InvalidInstanceID.NotFound")
    with pytest.raises(ClientError) as excinfo:
        ec2_adapter.list_nodes(ec2, "dev")
    assert not isinstance(excinfo.value, TransientError)


# --- read after create: SSM ------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(ssm_adapter.COMMAND_NOT_VISIBLE))
def test_a_command_not_visible_right_after_send_command_is_transient(ssm, code):
    Answer(ssm, "ListCommandInvocations", code)
    with pytest.raises(TransientError) as excinfo:
        ssm_adapter.invocations(ssm, "11111111-2222-3333-4444-555555555555")
    not_visible(excinfo, code)


def test_tagging_a_parameter_right_after_its_put_is_transient_and_the_retry_tags_it(ssm):
    fault = Fault("PutParameter", "not-found")
    fault.install([ssm])
    tags = {naming.TAG_ENVIRONMENT: "dev"}
    with pytest.raises(TransientError) as excinfo:
        ssm_adapter.put_secure(ssm, "/slipway/dev/swarm/worker-token", "t0ken", tags)
    not_visible(excinfo, FIRST_READ_AFTER["PutParameter"][1])
    ssm_adapter.put_secure(ssm, "/slipway/dev/swarm/worker-token", "t0ken", tags)
    listed = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/slipway/dev/swarm/worker-token")
    assert {t["Key"]: t["Value"] for t in listed["TagList"]} == tags


def test_a_parameter_just_put_but_not_found_is_transient_otherwise_absent(ssm):
    assert ssm_adapter.get_secure(ssm, "/slipway/dev/swarm/manager-token") is None
    with pytest.raises(TransientError, match="ParameterNotFound"):
        ssm_adapter.get_secure(ssm, "/slipway/dev/swarm/manager-token", just_put=True)
    ssm.put_parameter(Name="/slipway/dev/swarm/manager-token", Value="m", Type="SecureString")
    assert ssm_adapter.get_secure(ssm, "/slipway/dev/swarm/manager-token", just_put=True) == "m"


# --- CodeBuild and S3 --------------------------------------------------------------------------


@pytest.fixture
def project(codebuild):
    codebuild.create_project(
        name="slipway-dev-bake",
        source={"type": "S3", "location": "bucket/source.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_SMALL",
        },
        serviceRole="arn:aws:iam::123456789012:role/slipway-dev-bake",
    )
    return "slipway-dev-bake"


def start(codebuild, project_name):
    return codebuild_adapter.start(
        codebuild, project_name, {"PKR_VAR_commit": "c0ffee"}, "tok", "bucket/sources/abc.zip"
    )


def test_start_build_on_a_missing_project_is_a_configuration_error_at_once(codebuild, project):
    starts = Answer(codebuild, "StartBuild", "unused", times=0)  # counts, answers nothing
    step = aws.transient_errors(lambda event: start(codebuild, "slipway-dev-bkae"))
    with pytest.raises(ConfigurationError, match="SLIPWAY_BAKE_PROJECT.*slipway-dev-bkae") as excinfo:
        step({})
    assert not isinstance(excinfo.value, TransientError)
    assert aws.error_code(excinfo.value.__cause__) == "ResourceNotFoundException"
    assert starts.sent == 1  # no retry, by botocore or by us
    assert start(codebuild, project)  # the project that exists starts


def test_a_build_not_visible_right_after_start_build_is_transient(codebuild, project):
    fault = Fault("StartBuild", "not-found")
    fault.install([codebuild])
    build_id = start(codebuild, project)
    with pytest.raises(TransientError) as excinfo:
        codebuild_adapter.describe(codebuild, build_id)
    not_visible(excinfo, FIRST_READ_AFTER["StartBuild"][1])
    assert codebuild_adapter.describe(codebuild, build_id).build_id == build_id


def test_a_missing_bake_bucket_is_a_configuration_error(s3):
    with pytest.raises(ConfigurationError, match="SLIPWAY_BAKE_BUCKET.*slipway-dev-bake-nope"):
        s3_adapter.exists(s3, "slipway-dev-bake-nope", "sources/abc.zip")
    with pytest.raises(ConfigurationError, match="SLIPWAY_BAKE_BUCKET.*slipway-dev-bake-nope"):
        s3_adapter.put(s3, "slipway-dev-bake-nope", "sources/abc.zip", b"zip")
    s3.create_bucket(Bucket="slipway-dev-bake")
    assert not s3_adapter.exists(s3, "slipway-dev-bake", "sources/abc.zip")
    s3_adapter.put(s3, "slipway-dev-bake", "sources/abc.zip", b"zip")
    assert s3_adapter.exists(s3, "slipway-dev-bake", "sources/abc.zip")
