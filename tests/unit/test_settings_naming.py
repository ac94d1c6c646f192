"""Settings validation and naming rules."""

import pytest

from chalicelib import naming
from chalicelib.errors import ConfigurationError
from chalicelib.settings import from_environment
from tests import SETTINGS_BASE as BASE


def test_defaults_are_usable():
    s = from_environment(BASE)
    assert (s.environment, s.region, s.node_count, s.poll_seconds) == ("dev", "eu-west-1", 1, 30)
    assert (s.vpc_cidr, s.subnet_cidrs, s.service_ports, s.branches) == (
        "10.42.0.0/16",
        ("10.42.0.0/24",),
        (80, 443),
        ("main",),
    )
    assert (s.skip_superseded, s.prune_volumes) == (True, False)
    assert from_environment(BASE | {"SLIPWAY_SKIP_SUPERSEDED": "False"}).skip_superseded is False


def test_one_subnet_per_zone_each_its_own_slice():
    s = from_environment(BASE | {"SLIPWAY_SUBNET_COUNT": "3", "SLIPWAY_VPC_CIDR": "10.9.0.0/20"})
    assert s.subnet_cidrs == ("10.9.0.0/24", "10.9.1.0/24", "10.9.2.0/24")


@pytest.mark.parametrize(
    "override,message",
    [
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
    ],
)
def test_bad_configuration_is_named(override, message):
    with pytest.raises(ConfigurationError, match=message):
        from_environment(BASE | override)


def test_too_many_subnets_for_the_vpc_says_what_would_fit():
    with pytest.raises(ConfigurationError) as excinfo:
        from_environment(BASE | {"SLIPWAY_VPC_CIDR": "10.0.0.0/24", "SLIPWAY_SUBNET_COUNT": "3"})
    assert str(excinfo.value) == (
        "SLIPWAY_VPC_CIDR 10.0.0.0/24 has room for 1 subnet of /24; SLIPWAY_SUBNET_COUNT=3 needs a "
        "/22 or larger (e.g. SLIPWAY_VPC_CIDR=10.0.0.0/22), or SLIPWAY_SUBNET_COUNT=1"
    )
    with pytest.raises(ConfigurationError, match="room for 4 subnets of /24; SLIPWAY_SUBNET_COUNT=5 needs a /21"):
        from_environment(BASE | {"SLIPWAY_VPC_CIDR": "10.8.4.0/22", "SLIPWAY_SUBNET_COUNT": "5"})
    fits = from_environment(BASE | {"SLIPWAY_VPC_CIDR": "10.8.4.0/22", "SLIPWAY_SUBNET_COUNT": "4"})
    assert fits.subnet_cidrs == ("10.8.4.0/24", "10.8.5.0/24", "10.8.6.0/24", "10.8.7.0/24")


@pytest.mark.parametrize(
    "override,variable,value",
    [
        ({"SLIPWAY_SERVICE_PORTS": "80,http"}, "SLIPWAY_SERVICE_PORTS", "'http'"),
        ({"SLIPWAY_SERVICE_PORTS": "80,0"}, "SLIPWAY_SERVICE_PORTS", "0"),
        ({"SLIPWAY_SERVICE_PORTS": "443,-1"}, "SLIPWAY_SERVICE_PORTS", "-1"),
        ({"SLIPWAY_SERVICE_PORTS": "80,65536"}, "SLIPWAY_SERVICE_PORTS", "65536"),
        ({"SLIPWAY_SERVICE_PORTS": "80.5"}, "SLIPWAY_SERVICE_PORTS", "'80.5'"),
        ({"SLIPWAY_SERVICE_PORTS": "22,80"}, "SLIPWAY_SERVICE_PORTS", "22 (SSH)"),
        ({"SLIPWAY_SERVICE_PORTS": "2377"}, "SLIPWAY_SERVICE_PORTS", "2377 (swarm"),
        ({"SLIPWAY_VPC_CIDR": "10.0.0.0/24", "SLIPWAY_SUBNET_COUNT": "2"}, "SLIPWAY_SUBNET_COUNT=2", "10.0.0.0/24"),
        ({"SLIPWAY_VPC_CIDR": "10.0.0.1/16"}, "SLIPWAY_VPC_CIDR", "'10.0.0.1/16'"),
        ({"SLIPWAY_VPC_CIDR": "fd00::/16"}, "SLIPWAY_VPC_CIDR", "'fd00::/16'"),
        ({"SLIPWAY_VPC_CIDR": "10.0.0.0/25"}, "SLIPWAY_VPC_CIDR", "'10.0.0.0/25'"),
        ({"SLIPWAY_SUBNET_COUNT": "7"}, "SLIPWAY_SUBNET_COUNT", "7"),
        ({"SLIPWAY_SUBNET_COUNT": "two"}, "SLIPWAY_SUBNET_COUNT", "'two'"),
        ({"SLIPWAY_POLL_SECONDS": "1e3"}, "SLIPWAY_POLL_SECONDS", "'1e3'"),
        ({"SLIPWAY_POLL_SECONDS": "9" * 5000}, "SLIPWAY_POLL_SECONDS", "999"),  # past int()'s digit limit
        ({"SLIPWAY_KEEP_IMAGES": ""}, "SLIPWAY_KEEP_IMAGES", "''"),
        ({"SLIPWAY_COMMAND_TIMEOUT_SECONDS": "5"}, "SLIPWAY_COMMAND_TIMEOUT_SECONDS", "5"),
        ({"SLIPWAY_PRUNE_MAX_CONCURRENCY": "0"}, "SLIPWAY_PRUNE_MAX_CONCURRENCY", "'0'"),
        ({"SLIPWAY_PRUNE_MAX_CONCURRENCY": "150%"}, "SLIPWAY_PRUNE_MAX_CONCURRENCY", "'150%'"),
        ({"SLIPWAY_PRUNE_MAX_ERRORS": "some"}, "SLIPWAY_PRUNE_MAX_ERRORS", "'some'"),
        ({"SLIPWAY_ENVIRONMENT": "dev\n"}, "SLIPWAY_ENVIRONMENT", "'dev\\n'"),
    ],
)
def test_every_bad_value_is_a_configuration_error_naming_variable_and_value(override, variable, value):
    with pytest.raises(ConfigurationError) as excinfo:
        from_environment(BASE | override)
    assert variable in str(excinfo.value) and value in str(excinfo.value)


def test_service_ports_tolerate_spaces_and_repeats():
    s = from_environment(BASE | {"SLIPWAY_SERVICE_PORTS": " 443, 80 ,443,"})
    assert s.service_ports == (443, 80)
    assert from_environment(BASE | {"SLIPWAY_SERVICE_PORTS": ""}).service_ports == ()


def test_run_command_rate_controls_take_counts_and_percentages():
    s = from_environment(BASE | {"SLIPWAY_PRUNE_MAX_CONCURRENCY": "2", "SLIPWAY_PRUNE_MAX_ERRORS": "10%"})
    assert (s.prune_max_concurrency, s.prune_max_errors) == ("2", "10%")
    s = from_environment(BASE | {"SLIPWAY_PRUNE_MAX_CONCURRENCY": "100%", "SLIPWAY_PRUNE_MAX_ERRORS": "0"})
    assert (s.prune_max_concurrency, s.prune_max_errors) == ("100%", "0")


def test_every_resource_tag_set_names_environment_deployment_and_commit():
    tags = naming.tags("dev", "exec-1", "abc", "vpc")
    assert {tags[naming.TAG_ENVIRONMENT], tags[naming.TAG_DEPLOYMENT], tags[naming.TAG_COMMIT]} == {
        "dev",
        "exec-1",
        "abc",
    }


def test_the_sibling_state_machine_is_in_the_same_account_and_region():
    deploy = "arn:aws-cn:states:cn-north-1:111122223333:stateMachine:slipway-prod-deploy"
    assert naming.sibling_state_machine(deploy, "prod", "teardown") == (
        "arn:aws-cn:states:cn-north-1:111122223333:stateMachine:slipway-prod-teardown"
    )
    with pytest.raises(ValueError, match="not a state machine ARN"):
        naming.sibling_state_machine("arn:aws:states:us-east-1:1:execution:x:y", "prod", "deploy")


def test_the_commit_status_links_to_the_execution_in_its_region():
    arn = "arn:aws:states:eu-west-1:111122223333:execution:slipway-dev-deploy:abc"
    assert naming.execution_console_url(arn) == (
        "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/" + arn
    )
    assert naming.status_context("prod") == "slipway/prod"


def test_a_stage_without_a_node_instance_profile_is_refused_naming_the_setting():
    # Without a profile the nodes never register with SSM: the run would fail only after every
    # readiness check. Refused when the settings are read, that is when the deploy starts.
    without = {k: v for k, v in BASE.items() if k != "SLIPWAY_NODE_INSTANCE_PROFILE"}
    for env in (without, BASE | {"SLIPWAY_NODE_INSTANCE_PROFILE": " "}):
        with pytest.raises(ConfigurationError, match="SLIPWAY_NODE_INSTANCE_PROFILE is not set.*slipway bootstrap"):
            from_environment(env)
    with pytest.raises(ConfigurationError, match="SLIPWAY_NODE_INSTANCE_PROFILE must be .*'no/slash'"):
        from_environment(BASE | {"SLIPWAY_NODE_INSTANCE_PROFILE": "no/slash"})
    assert from_environment(BASE).node_instance_profile == "slipway-dev-node"


def test_the_stages_kms_key_is_a_key_arn_in_its_region_or_nothing():
    key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert from_environment(BASE).kms_key_arn == ""
    assert from_environment(BASE | {"SLIPWAY_KMS_KEY_ARN": key}).kms_key_arn == key
    for bad, message in (
        ("arn:aws:kms:eu-west-1:111122223333:alias/slipway", "not an alias"),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", "must be a KMS key's ARN"),
        (key.replace("eu-west-1", "us-east-1"), "a key in us-east-1; the stage runs in eu-west-1"),
    ):
        with pytest.raises(ConfigurationError, match=f"SLIPWAY_KMS_KEY_ARN .*{message}"):
            from_environment(BASE | {"SLIPWAY_KMS_KEY_ARN": bad})


def test_every_field_and_every_variable_is_declared_once():
    # Given SETTINGS, then each Settings field is filled by one declared variable alone or is one
    # from_environment combines; and every SLIPWAY_* variable the shipped code names is declared.
    import dataclasses
    import re
    from pathlib import Path

    from chalicelib import settings

    variables = [s.variable for s in settings.SETTINGS]
    assert len(variables) == len(set(variables))
    alone = [s.field for s in settings.SETTINGS if s.field]
    assert len(alone) == len(set(alone))
    assert {f.name for f in dataclasses.fields(settings.Settings)} == set(alone) | set(settings.COMBINED)
    root = Path(__file__).resolve().parents[2]
    named = {
        name
        for path in [root / "app.py", *sorted((root / "chalicelib").rglob("*.py"))]
        for name in re.findall(r"\bSLIPWAY_[A-Z_]+\b", path.read_text())
    }
    assert named <= set(variables), named - set(variables)


def test_a_declared_default_is_what_an_unset_variable_reads_as():
    # The table's default is the value the code takes, for every variable read alone.
    from chalicelib import settings

    read = from_environment(BASE)
    for setting in settings.SETTINGS:
        if setting.field and setting.default:
            default = setting.default.replace("{environment}", "dev")
            assert getattr(read, setting.field) == setting.reader(setting.variable, default), setting.variable
