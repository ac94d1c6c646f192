"""Settings validation and naming rules."""

import pytest

from chalicelib import naming
from chalicelib.errors import ConfigurationError
from chalicelib.settings import from_environment

BASE = {"SLIPWAY_ENVIRONMENT": "dev", "AWS_REGION": "eu-west-1"}


def test_defaults_are_usable():
    s = from_environment(BASE)
    assert (s.environment, s.region, s.node_count, s.poll_seconds) == ("dev", "eu-west-1", 1, 30)
    assert (s.vpc_cidr, s.subnet_cidrs, s.service_ports, s.branches) == (
        "10.42.0.0/16", ("10.42.0.0/24",), (80, 443), ("main",))
    assert (s.skip_superseded, s.prune_volumes) == (True, False)
    assert from_environment(BASE | {"SLIPWAY_SKIP_SUPERSEDED": "False"}).skip_superseded is False


def test_one_subnet_per_zone_each_its_own_slice():
    s = from_environment(BASE | {"SLIPWAY_SUBNET_COUNT": "3", "SLIPWAY_VPC_CIDR": "10.9.0.0/20"})
    assert s.subnet_cidrs == ("10.9.0.0/24", "10.9.1.0/24", "10.9.2.0/24")


@pytest.mark.parametrize("override,message", [
    ({"SLIPWAY_ENVIRONMENT": ""}, "SLIPWAY_ENVIRONMENT"),
    ({"SLIPWAY_ENVIRONMENT": "Prod!"}, "SLIPWAY_ENVIRONMENT"),
    ({"AWS_REGION": ""}, "AWS_REGION"),
    ({"SLIPWAY_NODE_COUNT": "many"}, "SLIPWAY_NODE_COUNT"),
    ({"SLIPWAY_NODE_COUNT": "0"}, "SLIPWAY_NODE_COUNT"),
    ({"SLIPWAY_VPC_CIDR": "10.0.0.0/8"}, "SLIPWAY_VPC_CIDR"),
    ({"SLIPWAY_VPC_CIDR": "nonsense"}, "SLIPWAY_VPC_CIDR"),
    ({"SLIPWAY_SERVICE_PORTS": "80,70000"}, "SLIPWAY_SERVICE_PORTS"),
    ({"SLIPWAY_SKIP_SUPERSEDED": "yes"}, "SLIPWAY_SKIP_SUPERSEDED must be true or false, got 'yes'"),
    ({"SLIPWAY_PRUNE_VOLUMES": "1"}, "SLIPWAY_PRUNE_VOLUMES must be true or false"),
])
def test_bad_configuration_is_named(override, message):
    with pytest.raises(ConfigurationError, match=message):
        from_environment(BASE | override)


def test_every_resource_tag_set_names_environment_deployment_and_commit():
    tags = naming.tags("dev", "exec-1", "abc", "vpc")
    assert {tags[naming.TAG_ENVIRONMENT], tags[naming.TAG_DEPLOYMENT], tags[naming.TAG_COMMIT]} == {"dev", "exec-1", "abc"}


def test_the_sibling_state_machine_is_in_the_same_account_and_region():
    deploy = "arn:aws-cn:states:cn-north-1:111122223333:stateMachine:slipway-prod-deploy"
    assert naming.sibling_state_machine(deploy, "prod", "teardown") == (
        "arn:aws-cn:states:cn-north-1:111122223333:stateMachine:slipway-prod-teardown")
    with pytest.raises(ValueError, match="not a state machine ARN"):
        naming.sibling_state_machine("arn:aws:states:us-east-1:1:execution:x:y", "prod", "deploy")


def test_the_commit_status_links_to_the_execution_in_its_region():
    arn = "arn:aws:states:eu-west-1:111122223333:execution:slipway-dev-deploy:abc"
    assert naming.execution_console_url(arn) == (
        "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1"
        "#/v2/executions/details/" + arn)
    assert naming.status_context("prod") == "slipway/prod"
