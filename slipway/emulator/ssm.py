"""SSM: `DescribeInstanceInformation` and `ListCommandInvocations`, which moto lacks; SendCommand's
targets limited to running instances, as SSM reaches only online managed instances; each command
answered by the nodes (emulated or real) with its real exit code and output, and its end told to
EventBridge ("EC2 Command Status-change Notification"), as the prune's results are recorded from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from unittest import mock

from slipway.emulator.ec2 import running_instances

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    from moto.core.responses import ActionResult
    from moto.ssm.models import Command
    from moto.ssm.responses import SimpleSystemManagerResponse

    def describe_instance_information(response):
        wanted = set()
        for f in response._get_param("Filters", []) or []:
            if f.get("Key") == "InstanceIds":
                wanted.update(f.get("Values", []))
        infos = [
            {
                "InstanceId": inst.id,
                "PingStatus": "Online",
                "PlatformType": "Linux",
                "PlatformName": "Ubuntu",
                "ResourceType": "EC2Instance",
                "AgentVersion": "3.3.0.0",
                "IsLatestVersion": True,
                "ComputerName": inst.private_dns_name,
                "IPAddress": inst.private_ip,
            }
            for inst in running_instances(emu, response.region)
            if not wanted or inst.id in wanted
        ]
        return ActionResult({"InstanceInformationList": infos})

    def list_command_invocations(response):
        command = response.ssm_backend.get_command_by_id(response._get_param("CommandId"))
        wanted = response._get_param("InstanceId")
        items = []
        for inv in command.invocations:
            if wanted and inv["InstanceId"] != wanted:
                continue
            items.append(
                {
                    "CommandId": command.command_id,
                    "InstanceId": inv["InstanceId"],
                    "DocumentName": command.document_name,
                    "Status": inv["Status"],
                    "StatusDetails": inv["StatusDetails"],
                    "CommandPlugins": [
                        {
                            "Name": inv["PluginName"],
                            "Status": inv["Status"],
                            "ResponseCode": inv["ResponseCode"],
                            "Output": (inv["StandardOutputContent"] + inv["StandardErrorContent"])[:2500],
                        }
                    ],
                }
            )
        # Paged as SSM pages it: at most 50 with details, a NextToken for the rest.
        size = min(int(response._get_param("MaxResults") or 50), 50)
        start = int(response._get_param("NextToken") or 0)
        page: dict[str, Any] = {"CommandInvocations": items[start : start + size]}
        if start + size < len(items):
            page["NextToken"] = str(start + size)
        return ActionResult(page)

    patch(
        mock.patch.object(
            SimpleSystemManagerResponse, "describe_instance_information", describe_instance_information, create=True
        )
    )
    patch(
        mock.patch.object(
            SimpleSystemManagerResponse, "list_command_invocations", list_command_invocations, create=True
        )
    )

    def targets(command):
        # SSM only reaches managed instances that are online: running ones, not terminated.
        if not command.targets:
            return []  # addressed by InstanceIds only
        filters = {t["Key"]: t["Values"] for t in command.targets}
        return [inst.id for inst in running_instances(emu, command.backend_region, filters)]

    patch(mock.patch.object(Command, "_get_instance_ids_from_targets", targets))

    original_invocation = Command.invocation_response

    def invocation_response(command, instance_id, plugin_name):
        result = original_invocation(command, instance_id, plugin_name)
        outcome = emu.nodes.run(instance_id, list(command.parameters.get("commands", [])))
        status = "Success" if outcome.code == 0 else "Failed"
        result.update(
            {
                "Status": status,
                "StatusDetails": status,
                "ResponseCode": outcome.code,
                "StandardOutputContent": outcome.stdout,
                "StandardErrorContent": outcome.stderr,
            }
        )
        return result

    patch(mock.patch.object(Command, "invocation_response", invocation_response))

    original_send = SimpleSystemManagerResponse.send_command

    def send_command(response):
        result = original_send(response)
        command_id = result.result["Command"]["CommandId"]  # type: ignore[index]  # moto's ActionResult holds a dict
        command = response.ssm_backend.get_command_by_id(command_id)
        # The emulated nodes answer at once, so every command has finished by now.
        emu.command_finished(command, response.region)
        return result

    patch(mock.patch.object(SimpleSystemManagerResponse, "send_command", send_command))
