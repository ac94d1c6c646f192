"""EC2: RunInstances honours its ClientToken (a repeat returns the first reservation; moto would
launch again), an instance launched from a template gets the template's MetadataOptions and
instance profile, and each state change is told to EventBridge ("EC2 Instance State-change
Notification"), which the heal listens for. With real nodes, each instance is a node container."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from unittest import mock

from slipway.emulator.account import ACCOUNT, REGION
from slipway.emulator.nodes import Machine

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator


def _from_template(backend, reservation, kwargs: dict):
    """What EC2 takes from a launch template and moto leaves out: its MetadataOptions and its
    instance profile, for each instance launched from one (the request's own, if any, win)."""
    if not kwargs.get("launch_template"):
        return reservation
    from moto.ec2.models.instances import MetadataOptions

    data = backend._get_template_from_args(kwargs["launch_template"]).data
    profile = data.get("IamInstanceProfile") or {}
    asked = kwargs.get("iam_instance_profile_name") or kwargs.get("iam_instance_profile_arn")
    for instance in reservation.instances:
        if data.get("MetadataOptions") and not kwargs.get("metadata_options"):
            instance.metadata_options = MetadataOptions(data["MetadataOptions"])
        if profile and not asked and instance.id not in backend.iam_instance_profile_associations:
            backend.associate_iam_instance_profile(
                instance_id=instance.id,
                iam_instance_profile_name=profile.get("Name"),
                iam_instance_profile_arn=profile.get("Arn"),
            )
    return reservation


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    from moto.ec2.models.instances import InstanceBackend

    original_run_instances = InstanceBackend.run_instances

    def run_instances(backend, image_id, count, user_data, security_group_names, **kwargs):
        # EC2 answers a repeated ClientToken with the first call's reservation (moto ignores
        # it and would launch again: a retried RunInstances must not double the fleet).
        token = kwargs.get("client_token")
        if token and token != "ABCDE":  # moto's placeholder when no token is sent
            with emu._lock:
                for reservation in backend.reservations.values():
                    if reservation.instances and reservation.instances[0].client_token == token:
                        return reservation
                return _from_template(
                    backend,
                    original_run_instances(backend, image_id, count, user_data, security_group_names, **kwargs),
                    kwargs,
                )
        return _from_template(
            backend,
            original_run_instances(backend, image_id, count, user_data, security_group_names, **kwargs),
            kwargs,
        )

    patch(mock.patch.object(InstanceBackend, "run_instances", run_instances))

    # The host runs each instance the call makes, and ends each it terminates (hosts.py).
    hosted_run, hosted_terminate = InstanceBackend.run_instances, InstanceBackend.terminate_instances

    def run_hosted_instances(backend, image_id, count, user_data, security_group_names, **kwargs):
        reservation = hosted_run(backend, image_id, count, user_data, security_group_names, **kwargs)
        emu.host.launched(reservation.instances)
        return reservation

    def terminate_hosted_instances(backend, instance_ids):
        result = hosted_terminate(backend, instance_ids)
        emu.host.terminated(instance_ids)
        return result

    patch(mock.patch.object(InstanceBackend, "run_instances", run_hosted_instances))
    patch(mock.patch.object(InstanceBackend, "terminate_instances", terminate_hosted_instances))

    # EC2 tells EventBridge of each state change ("EC2 Instance State-change Notification");
    # moto sends none. Stopping and terminating are what the heal listens for.
    stateful_terminate, original_stop = InstanceBackend.terminate_instances, InstanceBackend.stop_instances

    def terminate_and_tell(backend, instance_ids):
        result = stateful_terminate(backend, instance_ids)
        emu.instances_changed(backend.region_name, instance_ids, ("shutting-down", "terminated"))
        return result

    def stop_and_tell(backend, instance_ids):
        result = original_stop(backend, instance_ids)
        emu.instances_changed(backend.region_name, instance_ids, ("stopping", "stopped"))
        return result

    patch(mock.patch.object(InstanceBackend, "terminate_instances", terminate_and_tell))
    patch(mock.patch.object(InstanceBackend, "stop_instances", stop_and_tell))


def machines() -> dict[str, Machine]:
    """Every instance EC2 knows, as the emulated nodes see one another."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[ACCOUNT][REGION]
    return {
        inst.id: Machine((inst.private_dns_name or "").split(".")[0], inst.private_ip or "", inst.state == "running")
        for reservation in list(backend.reservations.values())
        for inst in reservation.instances
    }


def running_instances(emu: Emulator, region: str, filters: dict | None = None) -> Iterator[Any]:
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[ACCOUNT][region]
    for reservation in backend.all_reservations(filters=filters or {}):
        for inst in reservation.instances:
            if inst.state == "running":
                yield inst
