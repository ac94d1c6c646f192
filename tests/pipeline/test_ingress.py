"""One stable address per environment: the load balancer in front of the swarm, converged by the
deploy machine, nodes behind it only once the stack runs on them and it finds them healthy, old
nodes taken out and drained before they leave, nothing left behind by a failed run or teardown."""

import os
from unittest import mock

from chalicelib import aws, naming, settings
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.aws import elb
from slipway.faults import break_after
from slipway.harness import commit_id, deploy, scale, teardown

STACK = b"""
version: "3.8"
services:
  web:
    image: slipway-example/web:1
    ports: ["80:8080"]
    deploy:
      replicas: 2
"""
ANYWHERE = "0.0.0.0/0"


def with_stack(emu, *, new_image: bool = False) -> str:
    commit = commit_id()
    emu.github.files[commit] = {"stack.yml": STACK}
    if new_image:  # the push changes the role: a new image, new nodes
        emu.github.trees[commit] = {"ansible": commit, "packer": "f" * 40}
    return commit


class OrderedCalls:
    """Every call (operation, parameters) the functions' clients make, in order."""

    def __init__(self, *services: str) -> None:
        self.calls: list[tuple[str, dict]] = []
        for service in services:
            aws.client(service).meta.events.register(f"provide-client-params.{_event_name(service)}.*", self)

    def __call__(self, model, params, **kwargs) -> None:
        self.calls.append((model.name, dict(params)))

    def index(self, operation: str, where=lambda params: True) -> int:
        return next(i for i, (name, params) in enumerate(self.calls) if name == operation and where(params))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def _event_name(service: str) -> str:
    return aws.client(service).meta.service_model.service_id.hyphenize()


def registered(emu) -> dict[str, dict[str, str]]:
    """{port: {instance: state}} of every target group of the environment."""
    client = emu.client("elbv2")
    found = {}
    for arn in elb.environment_groups(client, emu.environment):
        port = client.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]["Port"]
        found[str(port)] = {i: h["state"] for i, h in elb.target_health(client, arn).items()}
    return found


def group_rules(emu, group_id: str) -> list[dict]:
    return emu.client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissions"]


def sources(rules: list[dict], port: int) -> set[str]:
    return {
        source
        for rule in rules
        if rule.get("FromPort") == port
        for source in [r["CidrIp"] for r in rule.get("IpRanges", [])]
        + [g["GroupId"] for g in rule.get("UserIdGroupPairs", [])]
    }


def test_the_environment_gets_one_address_and_a_second_deploy_creates_nothing(emulator):
    commit = with_stack(emulator)
    first = deploy(emulator, commit)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    ingress = first.output["ingress"]
    balancer = emulator.client("elbv2").describe_load_balancers(Names=[naming.elb_name(emulator.environment)])[
        "LoadBalancers"
    ][0]
    assert ingress["kind"] == "nlb" and ingress["url"] == f"http://{balancer['DNSName']}"
    assert (balancer["Scheme"], balancer["Type"]) == ("internet-facing", "network")
    attributes = emulator.client("elbv2").describe_load_balancer_attributes(
        LoadBalancerArn=balancer["LoadBalancerArn"]
    )["Attributes"]
    assert {"Key": "load_balancing.cross_zone.enabled", "Value": "true"} in attributes
    listeners = emulator.client("elbv2").describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert sorted(listener["Port"] for listener in listeners) == [80, 443]
    # Every serving node is a healthy target of every service port's group.
    assert registered(emulator) == {
        p: dict.fromkeys(first.output["nodes"]["current"], "healthy") for p in ("80", "443")
    }
    [success] = [s for s in emulator.github.statuses if s["sha"] == commit and s["state"] == "success"]
    assert ingress["url"] in success["description"]

    calls = OrderedCalls("elbv2", "ec2")
    second = deploy(emulator, commit, before=commit_id())
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert second.output["ingress"]["url"] == ingress["url"]
    assert "Wait for the load balancer" not in second.states  # every target was healthy already
    changed = [n for n in calls.names() if not n.startswith(("Describe", "Get", "List"))]
    # Registering the serving nodes again is how a lost registration comes back; nothing is created.
    assert set(changed) <= {"RegisterTargets", "CreateTags"}, changed


def test_nodes_admit_the_service_ports_only_from_the_load_balancer(emulator):
    run = deploy(emulator, with_stack(emulator))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    network = run.output["network"]
    lb_group = network["lb_security_group_id"]
    assert lb_group and lb_group != network["security_group_id"]
    nodes = group_rules(emulator, network["security_group_id"])
    for port in (80, 443):
        assert sources(nodes, port) == {lb_group}, port
        assert sources(group_rules(emulator, lb_group), port) == {ANYWHERE}, port
    # Nothing on the nodes is open to the internet any more, on any port.
    assert not [r for r in nodes for source in r.get("IpRanges", []) if source["CidrIp"] == ANYWHERE]
    balancer = elb.find_load_balancer(emulator.client("elbv2"), emulator.environment)
    assert balancer["SecurityGroups"] == [lb_group]


def test_ingress_none_keeps_public_node_ports_and_turning_the_balancer_on_closes_them(make_emulator):
    emu = make_emulator(extra_environment={"SLIPWAY_INGRESS": "none"})
    run = deploy(emu, with_stack(emu))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["ingress"] == {
        "kind": "none",
        "url": None,
        "dns_name": None,
        "load_balancer_arn": None,
        "target_groups": {},
        "created": [],
    }
    assert "Wait for the load balancer" not in run.states
    assert elb.find_load_balancer(emu.client("elbv2"), emu.environment) is None
    group = run.output["network"]["security_group_id"]
    assert sources(group_rules(emu, group), 80) == {ANYWHERE}

    with mock.patch.dict(os.environ, {"SLIPWAY_INGRESS": "nlb"}):
        settings.reset()
        try:
            again = deploy(emu, with_stack(emu))
        finally:
            settings.reset()
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    lb_group = again.output["network"]["lb_security_group_id"]
    assert sources(group_rules(emu, group), 80) == {lb_group}  # the public rule was revoked


def test_new_nodes_take_requests_before_the_old_ones_leave(make_emulator):
    emu = make_emulator(node_count=2)
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    old = sorted(first.output["nodes"]["current"])
    calls = OrderedCalls("elbv2", "ec2")
    second = deploy(emu, with_stack(emu, new_image=True))
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    new = sorted(second.output["nodes"]["new"])
    assert len(new) == 2 and not set(new) & set(old)

    def names(params):
        return sorted(t["Id"] for t in params.get("Targets", []))

    registered_new = calls.index("RegisterTargets", lambda p: names(p) == new)
    deregistered_old = calls.index("DeregisterTargets", lambda p: names(p) == old)
    terminated_old = calls.index("TerminateInstances", lambda p: sorted(p["InstanceIds"]) == old)
    assert registered_new < deregistered_old < terminated_old
    # The run went on only once the load balancer found every new target healthy...
    states = second.states
    assert states.index("All nodes healthy?") < states.index("Put the nodes behind the load balancer")
    assert states.index("Stack rolled out?") < states.index("Put the nodes behind the load balancer")
    [registration] = [r for f, r in emu.results if f.endswith("-register_targets") and sorted(r["registered"]) == new]
    assert registration["done"] is False  # new targets are `initial` first, as on AWS
    assert set(registration["unhealthy"]) == {f"{i}:80" for i in new}
    assert {v.split(" ")[0] for v in registration["unhealthy"].values()} == {"initial"}
    checks = [r for f, r in emu.results if f.endswith("-check_targets") and isinstance(r, dict)]
    assert checks[-1]["done"] is True and checks[-1]["unhealthy"] == {}
    # ...and the old ones drained for the deregistration delay before they left the swarm.
    assert (
        states.index("Take the old nodes out of the load balancer")
        < states.index("Wait out the deregistration delay")
        < states.index("Remove old nodes from swarm")
    )
    assert registered(emu) == {p: dict.fromkeys(new, "healthy") for p in ("80", "443")}


def test_targets_that_never_turn_healthy_fail_the_run_and_the_old_nodes_keep_serving(make_emulator):
    emu = make_emulator(extra_environment={"SLIPWAY_NODE_READY_ATTEMPTS": "5"})
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    old = first.output["nodes"]["current"]
    emu.targets.fail = lambda instance_id: instance_id not in old
    commit = with_stack(emu, new_image=True)
    run = deploy(emu, commit)
    assert run.status == "FAILED" and run.error == "IngressFailed", (run.error, run.cause)
    assert "the previous nodes stay registered" in run.cause
    # The new nodes are out of the load balancer again (draining); the old ones never left it.
    targets = registered(emu)
    assert {p: {i: s for i, s in t.items() if s != "draining"} for p, t in targets.items()} == {
        p: dict.fromkeys(old, "healthy") for p in ("80", "443")
    }
    running = {n.instance_id for n in ec2_adapter.list_nodes(emu.client("ec2"), emu.environment, states=["running"])}
    assert set(old) <= running
    new = running - set(old)
    # Draining for the (1 s) delay, or gone from the groups already: in either case out.
    assert new and not new & {i for t in targets.values() for i, s in t.items() if s != "draining"}
    assert "Take the old nodes out of the load balancer" not in run.states
    [status] = [s for s in emu.github.statuses if s["sha"] == commit and s["state"] != "pending"]
    assert status["state"] == "error" and "load balancer" in status["description"]


def test_a_run_undone_before_the_load_balancer_leaves_no_target_of_its_own(make_emulator):
    emu = make_emulator()
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED"
    old = first.output["nodes"]["current"]
    emu.nodes.push("slipway-example/web:2", healthy=False)
    commit = commit_id()
    emu.github.files[commit] = {"stack.yml": STACK.replace(b"web:1", b"web:2")}
    emu.github.trees[commit] = {"ansible": commit, "packer": "f" * 40}
    run = deploy(emu, commit)
    assert run.status == "FAILED" and run.error == "StackFailed", (run.error, run.cause)
    assert "Remove this deployment's nodes" in run.states
    assert registered(emu) == {p: dict.fromkeys(old, "healthy") for p in ("80", "443")}
    # The load balancer is the first deployment's: the undo keeps it, and waits for nothing.
    assert elb.find_load_balancer(emu.client("elbv2"), emu.environment) is not None
    assert "Wait for the load balancer to be released" not in run.states


def test_a_failed_first_deploy_removes_its_load_balancer_and_waits_for_its_interfaces(make_emulator):
    emu = make_emulator()
    break_after(emu, "swarm-init")  # the first node's dockerd dies once it made the swarm
    run = deploy(emu, with_stack(emu))
    assert run.status == "FAILED" and run.error == "NodesUnhealthy", (run.error, run.cause)
    # The subnets could go only once AWS released the load balancer's network interfaces.
    assert "Wait for the load balancer to be released" in run.states
    assert run.states.index("Remove this deployment's load balancer") < run.states.index(
        "Remove this deployment's network"
    )
    assert elb.count_tagged(emu.client("elbv2"), emu.environment) == {"load-balancer": 0, "target-group": 0}
    assert elb.interfaces_left(emu.client("ec2"), emu.environment) == []
    left = ec2_adapter.count_tagged(emu.client("ec2"), emu.environment)
    assert {k: v for k, v in left.items() if v} == {"image": 1}  # the baked image stays for the next push


def test_scaling_down_takes_the_surplus_nodes_out_of_the_load_balancer_first(make_emulator):
    emu = make_emulator(node_count=3)
    first = deploy(emu, with_stack(emu))
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    scale(1)
    calls = OrderedCalls("elbv2", "ec2")
    second = deploy(emu, with_stack(emu))
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    surplus = sorted(second.output["nodes"]["old"])
    assert len(surplus) == 2
    deregistered = calls.index("DeregisterTargets", lambda p: sorted(t["Id"] for t in p["Targets"]) == surplus)
    assert deregistered < calls.index("TerminateInstances", lambda p: sorted(p["InstanceIds"]) == surplus)
    assert {p: set(t) for p, t in registered(emu).items() if set(t) - set(surplus)} == {
        p: set(second.output["nodes"]["current"]) | {i for i in surplus if registered(emu)[p].get(i) == "draining"}
        for p in ("80", "443")
    }


def test_teardown_removes_the_load_balancer_and_a_second_teardown_still_succeeds(emulator):
    run = deploy(emulator, with_stack(emulator))
    assert run.status == "SUCCEEDED"
    assert len(elb.interfaces_left(emulator.client("ec2"), emulator.environment)) == 1  # one per subnet
    first = teardown(emulator)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    assert "Wait for the load balancer to be released" in first.states
    assert first.states.index("Delete the load balancer") < first.states.index("Delete network")
    assert elb.count_tagged(emulator.client("elbv2"), emulator.environment) == {"load-balancer": 0, "target-group": 0}
    assert elb.interfaces_left(emulator.client("ec2"), emulator.environment) == []
    again = teardown(emulator)
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    assert again.output["lb_removal"]["removed"] == {"load-balancer": 0, "target-group": 0}


def test_the_emulated_balancer_holds_its_subnets_until_its_interfaces_are_released(emulator):
    # What AWS does, and what the undo and the teardown wait for: DependencyViolation until then.
    ec2, client = emulator.client("ec2"), emulator.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    arn = client.create_load_balancer(Name="held", Subnets=[subnet], Type="network")["LoadBalancers"][0][
        "LoadBalancerArn"
    ]
    again = client.create_load_balancer(Name="held", Subnets=[subnet], Type="network")["LoadBalancers"][0]
    assert again["LoadBalancerArn"] == arn  # idempotent, as on AWS
    client.delete_load_balancer(LoadBalancerArn=arn)
    try:
        ec2.delete_subnet(SubnetId=subnet)
    except ec2.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "DependencyViolation"
    else:
        raise AssertionError("the subnet was deleted while the load balancer's interface held it")
    emulator.targets.releasing.update(dict.fromkeys(emulator.targets.releasing, -1))  # released now
    ec2.delete_subnet(SubnetId=subnet)
