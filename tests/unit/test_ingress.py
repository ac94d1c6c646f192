"""The load balancer's pure parts: its settings, names, the ports a stack publishes, the security
group rules it implies, and what the commit status says with an address."""

import pytest

from chalicelib import naming, plans, stack
from chalicelib.aws import network
from chalicelib.errors import ConfigurationError
from chalicelib.settings import from_environment
from tests import SETTINGS_BASE as BASE


def test_the_load_balancer_is_on_by_default_with_tcp_checks_and_aws_delay():
    s = from_environment(BASE)
    assert (s.ingress, s.health_check_protocol, s.health_check_path) == ("nlb", "TCP", "")
    assert s.deregistration_delay_seconds == 30
    http = from_environment(BASE | {"SLIPWAY_HEALTH_CHECK": "http:/healthz", "SLIPWAY_INGRESS": "none"})
    assert (http.ingress, http.health_check_protocol, http.health_check_path) == ("none", "HTTP", "/healthz")


@pytest.mark.parametrize(
    "env,named",
    [
        ({"SLIPWAY_INGRESS": "alb"}, "SLIPWAY_INGRESS"),
        ({"SLIPWAY_HEALTH_CHECK": "http"}, "SLIPWAY_HEALTH_CHECK"),
        ({"SLIPWAY_HEALTH_CHECK": "http:healthz"}, "SLIPWAY_HEALTH_CHECK"),
        ({"SLIPWAY_HEALTH_CHECK": "udp"}, "SLIPWAY_HEALTH_CHECK"),
        ({"SLIPWAY_HEALTH_CHECK": "http:/a b"}, "SLIPWAY_HEALTH_CHECK"),
        ({"SLIPWAY_DEREGISTRATION_DELAY_SECONDS": "3601"}, "SLIPWAY_DEREGISTRATION_DELAY_SECONDS"),
        ({"SLIPWAY_TARGET_HEALTH_TIMEOUT_SECONDS": "soon"}, "SLIPWAY_TARGET_HEALTH_TIMEOUT_SECONDS"),
    ],
)
def test_bad_load_balancer_settings_are_refused_naming_the_variable(env, named):
    with pytest.raises(ConfigurationError, match=named):
        from_environment(BASE | env)


@pytest.mark.parametrize("environment", ["dev", "a" * 31, "prod-eu-west-1-customer-facing", "x"])
@pytest.mark.parametrize("suffix", ["", "80", "65535"])
def test_load_balancer_names_fit_elb_and_stay_distinct(environment, suffix):
    name = naming.elb_name(environment, suffix)
    assert len(name) <= 32 and name[0] != "-" and name[-1] != "-" and "--" not in name
    assert all(c.isalnum() or c == "-" for c in name)
    assert not name.startswith("internal-")
    assert name.endswith(suffix)
    others = {naming.elb_name(e, suffix) for e in ("dev", "a" * 31, "a" * 30 + "b", "prod-eu-west-1-customer-facing")}
    assert len(others) == 4


def test_the_ports_a_stack_publishes_in_every_syntax():
    document = {
        "services": {
            "web": {"ports": ["80:8080", "127.0.0.1:81:80", "[::1]:82:80/tcp", "9000", "5000-5002:5000-5002"]},
            "dns": {"ports": ["53:53/udp", {"target": 53, "published": 54, "protocol": "udp"}]},
            "api": {"ports": [{"target": 8443, "published": 443, "mode": "host"}, {"target": 1, "published": "444"}]},
            "worker": {},
        }
    }
    assert stack.published_ports(document) == [80, 81, 82, 5000, 5001, 5002, 443, 444]


def test_the_nodes_group_opens_service_ports_to_the_load_balancer_group_only():
    rules = network._ingress("sg-nodes", (80, 443), "sg-lb")
    service = [r for r in rules if r["FromPort"] in (80, 443)]
    assert all(r["UserIdGroupPairs"][0]["GroupId"] == "sg-lb" and "IpRanges" not in r for r in service)
    swarm = [r for r in rules if r["FromPort"] not in (80, 443)]
    assert {(r["IpProtocol"], r["FromPort"]) for r in swarm} == set(network.SWARM_PORTS)
    assert all(r["UserIdGroupPairs"][0]["GroupId"] == "sg-nodes" for r in swarm)
    public = network._ingress(None, (80,), None)  # the load balancer's own group, or nodes without one
    assert public == [
        {
            "IpProtocol": "tcp",
            "FromPort": 80,
            "ToPort": 80,
            "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "service"}],
        }
    ]


def test_rules_beyond_what_is_wanted_are_the_ones_revoked():
    existing = [
        {
            "IpProtocol": "tcp",
            "FromPort": 80,
            "ToPort": 80,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            "UserIdGroupPairs": [{"GroupId": "sg-lb"}],
        },
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ]
    wanted = network._ingress(None, (80,), "sg-lb")
    assert network._extra_rules(existing, wanted) == [
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ]
    assert network._missing_rules(existing, wanted) == []


def test_the_success_status_gives_the_address_and_fits_githubs_limit():
    url = "http://slipway-prod-0123456789abcdef.elb.eu-west-1.amazonaws.com"
    state = {
        "nodes": {"current": ["i-1", "i-2", "i-3"]},
        "image": {"ami_id": "ami-0123456789abcdef0"},
        "ingress": {"url": url},
        "stack": {"present": True},
        "rollout": {"services": [{"updated": True}, {"updated": False}]},
    }
    description = plans.status_description("success", "prod", state)
    assert description == f"Deployed to prod at {url}: 3 nodes; 2 services, 1 updated"
    assert len(description) <= 140
    without = plans.status_description("success", "prod", {**state, "ingress": {"url": None}})
    assert without == "Deployed to prod: 3 nodes on ami-0123456789abcdef0; 2 services, 1 updated"


def test_a_load_balancer_failure_says_the_previous_nodes_stay_registered():
    error = {"Error": "IngressFailed", "Cause": '{"errorMessage": "the load balancer finds new targets ..."}'}
    description = plans.status_description("error", "dev", {"error": error})
    assert description.startswith("Deployed to dev, but the load balancer does not serve the new nodes")
