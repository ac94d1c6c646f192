"""Elastic Load Balancing: moto's elbv2 holds the load balancers, listeners, target groups and
registrations. Filled in here: a target's health as an NLB reports it (`initial` until its first
checks pass, `healthy` while its node runs, `draining` for the deregistration delay after it
leaves); CreateLoadBalancer, CreateTargetGroup and CreateListener idempotent, as on AWS; the
network interfaces a load balancer holds in each subnet until a while after it is deleted, which
keep the subnets and security groups from being deleted (DependencyViolation) until released.
With real nodes, a real TCP load balancer on this machine (LocalLoadBalancer) follows moto's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from unittest import mock

from slipway.emulator.account import ACCOUNT, REGION

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator


@dataclass
class TargetHealth:
    """What the emulated NLB knows of its targets beyond moto's registrations: health checks since
    registration ((target group, instance) -> count), deregistrations still draining (-> until,
    time.monotonic()), deleted load balancers' interfaces not yet released (description -> how many
    more DescribeNetworkInterfaces answers still list them),
    and the instances a test makes fail their health checks (`failing`, or the predicate `fail`)."""

    initial_checks: int = 1  # DescribeTargetHealth answers `initial` this many times after a registration
    # AWS releases a deleted NLB's interfaces "a while" later. Counted in looks, not seconds, so the
    # teardown's wait loop sees them held for a few checks however fast the machine runs it.
    eni_release_looks: int = 3
    checks: dict[tuple[str, str], int] = field(default_factory=dict)
    draining: dict[tuple[str, str], float] = field(default_factory=dict)
    releasing: dict[str, int] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    fail: Callable[[str], bool] | None = None  # or: which instances fail, decided when asked
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalLoadBalancer:
    """Real nodes: the environment's NLB as a real TCP load balancer on this machine
    (slipway/realnodes/load_balancer.py), kept in step with moto's: a listener for each target group's port, its
    targets the registered instances at their node's address, their health as it checks it."""

    def __init__(self, emulator: Emulator, settings, *, log) -> None:
        from slipway.realnodes import load_balancer

        health = load_balancer.HealthCheck(
            protocol=settings.health_check_protocol.lower(),
            path=settings.health_check_path or "/",
            interval=0.5,
            healthy_threshold=2,
            unhealthy_threshold=2,
        )
        self.emulator = emulator
        self.balancer = load_balancer.LoadBalancer(
            health=health, deregistration_delay=settings.deregistration_delay_seconds, log=log
        )
        self._lock = threading.Lock()

    def sync(self, group) -> None:
        """The target group's registrations, now, as the local load balancer's targets."""
        from moto.ec2.models import ec2_backends

        ec2 = ec2_backends[ACCOUNT][REGION]
        targets = {}
        for instance_id in list(group.targets):
            instance = ec2.get_instance_by_id(instance_id)
            if instance is not None and instance.private_ip and self.emulator.nodes.container(instance_id):
                targets[instance_id] = (instance.private_ip, int(group.port))
        with self._lock:
            self.balancer.listen(int(group.port))
            self.balancer.set_targets(int(group.port), targets)

    def sync_listeners(self, backend) -> None:
        """A deleted load balancer's ports stop listening (its target groups' ports)."""
        ports = {int(li.port) for lb in backend.load_balancers.values() for li in lb.listeners.values()}
        with self._lock:
            for port in list(self.balancer.ports()):
                if port not in ports:
                    self.balancer.unlisten(port)

    def target_state(self, port: int, instance_id: str) -> tuple[str, str | None, str | None]:
        with self._lock:
            found = self.balancer.health(int(port)).get(instance_id) if int(port) in self.balancer.ports() else None
        if found is None:
            return ("initial", "Elb.RegistrationInProgress", "Target registration is in progress")
        return (found["state"], found.get("reason"), found.get("description"))

    def address(self, port: int) -> tuple[str, int]:
        """Where this machine's clients reach the load balancer's `port`."""
        return self.balancer.address(int(port))

    def stats(self, port: int) -> dict:
        return self.balancer.stats(int(port))

    def close(self) -> None:
        self.balancer.close()


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    _install_target_health(emu, patch)
    _install_idempotent_creates(emu, patch)
    _install_lingering_interfaces(emu, patch)


def _install_target_health(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    """Registrations, deregistrations (draining for the delay) and DescribeTargetHealth."""
    from moto.elbv2.exceptions import TargetGroupNotFoundError
    from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup

    targets = emu.targets
    original_register, original_deregister = FakeTargetGroup.register, FakeTargetGroup.deregister

    def register(group, registered):
        before = set(group.targets)
        original_register(group, registered)
        with targets.lock:
            for target in registered:
                if target["Id"] not in before:  # registering a registered target changes nothing
                    targets.checks[(group.arn, target["Id"])] = 0
                targets.draining.pop((group.arn, target["Id"]), None)
        emu.host.targets_changed(group)

    def deregister(group, leaving):
        original_deregister(group, leaving)
        # The delay the pipeline waits out in a Wait state: on the emulator's clock (wait_scale).
        delay = float(group.attributes.get("deregistration_delay.timeout_seconds", 300)) * emu.wait_scale
        with targets.lock:
            for target in leaving:
                targets.checks.pop((group.arn, target["Id"]), None)
                targets.draining[(group.arn, target["Id"])] = time.monotonic() + delay
        emu.host.targets_changed(group)

    def describe_target_health(backend, target_group_arn, asked):
        group = backend.target_groups.get(target_group_arn)
        if group is None:
            raise TargetGroupNotFoundError()
        with targets.lock:
            now = time.monotonic()
            draining = [i for (arn, i), until in targets.draining.items() if arn == group.arn and until > now]
        ids = (
            [t["Id"] for t in asked] if asked else list(group.targets) + [i for i in draining if i not in group.targets]
        )
        return [target_health(emu, backend, group, i, i in draining, FakeHealthStatus) for i in ids]

    patch(mock.patch.object(FakeTargetGroup, "register", register))
    patch(mock.patch.object(FakeTargetGroup, "deregister", deregister))
    patch(mock.patch.object(ELBv2Backend, "describe_target_health", describe_target_health))


def _install_idempotent_creates(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    """Creates that answer a repeat with what exists; a load balancer's interfaces in its subnets."""
    from moto.ec2.models import ec2_backends
    from moto.elbv2.models import ELBv2Backend

    targets = emu.targets
    original_create, original_delete = ELBv2Backend.create_load_balancer, ELBv2Backend.delete_load_balancer

    # CreateLoadBalancer, CreateTargetGroup and CreateListener are idempotent on AWS ("if you
    # attempt to create multiple ... with the same settings, each call succeeds"); moto refuses
    # the repeat (DuplicateLoadBalancerName, DuplicateTargetGroupName) or makes a second listener.
    def create_load_balancer(backend, *args, **kwargs):
        name = kwargs.get("name", args[0] if args else None)
        existing = next((lb for lb in backend.load_balancers.values() if lb.name == name), None)
        if existing is not None:
            return existing
        balancer = original_create(backend, *args, **kwargs)
        ec2 = ec2_backends[ACCOUNT][backend.region_name]
        lb_id = balancer.arn.rsplit("/", 1)[-1]
        for subnet in balancer.subnets:
            ec2.create_network_interface(
                subnet,
                None,  # type: ignore[arg-type]  # no private address asked: EC2 picks one, as moto does
                group_ids=list(balancer.security_groups or []),
                description=f"ELB net/{balancer.name}/{lb_id}",
            )
        return balancer

    def delete_load_balancer(backend, arn):
        balancer = backend.load_balancers.get(arn)
        original_delete(backend, arn)
        if balancer is not None:
            lb_id = arn.rsplit("/", 1)[-1]
            with targets.lock:
                targets.releasing[f"ELB net/{balancer.name}/{lb_id}"] = targets.eni_release_looks
        emu.host.listeners_changed(backend)

    original_group, original_listener = ELBv2Backend.create_target_group, ELBv2Backend.create_listener

    def create_target_group(backend, name, **kwargs):
        existing = next((g for g in backend.target_groups.values() if g.name == name), None)
        if existing is not None and (existing.port, existing.vpc_id) == (
            int(kwargs.get("port") or 0),
            kwargs.get("vpc_id"),
        ):
            return existing
        return original_group(backend, name, **kwargs)

    def create_listener(backend, load_balancer_arn, protocol, port, *args, **kwargs):
        balancer = backend.load_balancers.get(load_balancer_arn)
        for listener in balancer.listeners.values() if balancer else []:
            if str(listener.port) == str(port) and listener.protocol == protocol:
                return listener
        return original_listener(backend, load_balancer_arn, protocol, port, *args, **kwargs)

    patch(mock.patch.object(ELBv2Backend, "create_load_balancer", create_load_balancer))
    patch(mock.patch.object(ELBv2Backend, "create_target_group", create_target_group))
    patch(mock.patch.object(ELBv2Backend, "create_listener", create_listener))
    patch(mock.patch.object(ELBv2Backend, "delete_load_balancer", delete_load_balancer))


def _install_lingering_interfaces(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    """A deleted load balancer's interfaces, released a few looks later, hold its subnets and
    security groups until then (DependencyViolation)."""
    from moto.ec2.exceptions import DependencyViolationError
    from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
    from moto.ec2.models.security_groups import SecurityGroupBackend
    from moto.ec2.models.subnets import SubnetBackend

    targets = emu.targets

    def release(ec2, *, look: bool = False) -> None:
        with targets.lock:
            if look:  # a DescribeNetworkInterfaces answer: one look fewer until the release
                targets.releasing.update((d, n - 1) for d, n in targets.releasing.items())
            done = {d for d, n in targets.releasing.items() if n < 0}
            for description in done:
                del targets.releasing[description]
        for eni in list(ec2.enis.values()):
            if eni.description in done:
                ec2.enis.pop(eni.id, None)

    original_all = NetworkInterfaceBackend.get_all_network_interfaces

    def get_all_network_interfaces(ec2, *args, **kwargs):
        release(ec2, look=True)
        return original_all(ec2, *args, **kwargs)

    original_delete_subnet = SubnetBackend.delete_subnet

    def delete_subnet(ec2, subnet_id):
        release(ec2)
        held = [e.id for e in ec2.enis.values() if e.subnet.id == subnet_id and not e.instance]
        if held:
            raise DependencyViolationError(f"The subnet '{subnet_id}' has dependencies and cannot be deleted.")
        return original_delete_subnet(ec2, subnet_id)

    original_delete_group = SecurityGroupBackend.delete_security_group

    def delete_security_group(ec2, name=None, group_id=None):
        release(ec2)
        if group_id and any(group_id in [g.id for g in e.groups] for e in ec2.enis.values() if not e.instance):
            raise DependencyViolationError(f"resource {group_id} has a dependent object")
        return original_delete_group(ec2, name=name, group_id=group_id)

    patch(mock.patch.object(NetworkInterfaceBackend, "get_all_network_interfaces", get_all_network_interfaces))
    patch(mock.patch.object(SubnetBackend, "delete_subnet", delete_subnet))
    patch(mock.patch.object(SecurityGroupBackend, "delete_security_group", delete_security_group))


def target_health(emu: Emulator, backend, group, instance_id: str, draining: bool, status):
    """One target's health, as an NLB would report it (see `install`)."""
    port = str(group.port)
    if instance_id not in group.targets:
        if draining:
            return status(
                instance_id,
                port,
                port,
                "draining",
                "Target.DeregistrationInProgress",
                "Target deregistration is in progress",
            )
        return status(
            instance_id,
            port,
            port,
            "unused",
            "Target.NotRegistered",
            "Target is not registered to the target group",
        )
    from moto.ec2.models import ec2_backends

    instance = ec2_backends[ACCOUNT][backend.region_name].get_instance_by_id(instance_id)
    if instance is None or instance.state != "running":
        return status(
            instance_id,
            port,
            port,
            "unused",
            "Target.InvalidState",
            f"Target is in the {instance.state if instance else 'terminated'} state",
        )
    hosted = emu.host.target_state(group.port, instance_id)
    if hosted is not None:  # a real load balancer's health checks
        return status(instance_id, port, port, *hosted)
    with emu.targets.lock:
        key = (group.arn, instance_id)
        emu.targets.checks[key] = checks = emu.targets.checks.get(key, 0) + 1
        failing = instance_id in emu.targets.failing or bool(emu.targets.fail and emu.targets.fail(instance_id))
    if checks <= emu.targets.initial_checks:
        return status(
            instance_id, port, port, "initial", "Elb.InitialHealthChecking", "Initial health checks in progress"
        )
    if failing:
        return status(instance_id, port, port, "unhealthy", "Target.FailedHealthChecks", "Health checks failed")
    return status(instance_id, port, port, "healthy")
