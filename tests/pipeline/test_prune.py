"""The scheduled prune on the emulator: one tag-targeted command, a no-op without nodes, and its
result recorded from SSM's status-change event (no Lambda waits)."""

from chalicelib import scripts
from slipway.harness import CallRecorder, deploy, scheduled_event


def prune(emu):
    result = emu.invoke("prune", scheduled_event())
    emu.wait_for_events()
    return result


def recorded(emu, command_id):
    return [
        r
        for name, r in emu.results
        if name.endswith("-record_prune") and isinstance(r, dict) and r.get("command_id") == command_id
    ]


def test_one_command_selects_the_environments_nodes_by_tag(emulator):
    run = deploy(emulator)
    result = prune(emulator)
    ssm = emulator.client("ssm")
    command = ssm.list_commands(CommandId=result["command_id"])["Commands"][0]
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["Targets"] == [
        {"Key": "tag:slipway:environment", "Values": [emulator.environment]},
        {"Key": "tag:slipway:role", "Values": ["node"]},
    ]
    assert "InstanceIds" not in command or command["InstanceIds"] == run.output["nodes"]["current"]
    assert command["Parameters"]["commands"] == scripts.prune_script("until=24h")
    assert command["Parameters"]["commands"][1] == "docker system prune --force --filter until=24h"
    assert (command["MaxConcurrency"], command["MaxErrors"]) == ("25%", "0")
    assert command["TimeoutSeconds"] == 600
    invocations = ssm.list_command_invocations(CommandId=result["command_id"], Details=True)["CommandInvocations"]
    assert [i["InstanceId"] for i in invocations] == run.output["nodes"]["current"]


def test_no_node_is_a_logged_no_op(emulator):
    from chalicelib import aws

    recorder = CallRecorder()
    aws.client("ssm").meta.events.register("provide-client-params.ssm.*", recorder)
    assert prune(emulator) == {"command_id": None}
    assert "SendCommand" not in recorder.calls
    assert emulator.client("ssm").list_commands()["Commands"] == []


def test_reclaimed_space_is_recorded_per_node_from_dockers_output(make_emulator):
    emu = make_emulator(node_count=3)
    nodes = deploy(emu).output["nodes"]["current"]
    emu.nodes.reclaimable[nodes[0]] = 503_700
    emu.nodes.reclaimable[nodes[2]] = 1_500_000_000
    result = prune(emu)
    [record] = recorded(emu, result["command_id"])
    assert record["per_node"] == {nodes[0]: 503_700, nodes[1]: 0, nodes[2]: 1_500_000_000}
    assert record["reclaimed_bytes"] == 1_500_503_700 and record["failed"] == []


def test_a_failed_node_is_reported_with_its_id(make_emulator):
    emu = make_emulator(node_count=2)
    nodes = deploy(emu).output["nodes"]["current"]
    emu.nodes.broken.add(nodes[1])
    [record] = recorded(emu, prune(emu)["command_id"])
    assert record["status"] == "Failed" and record["failed"] == [nodes[1]]
    assert record["per_node"][nodes[0]] == 0


def test_deploy_commands_do_not_wake_the_recorder(emulator):
    deploy(emulator)
    emulator.wait_for_events()
    assert emulator.delivered_events  # swarm and health commands did emit events
    assert not any(name.endswith("-record_prune") for name, _ in emulator.results)


def test_prune_calls_do_not_grow_with_the_fleet(make_emulator):
    from chalicelib import aws

    counts = {}
    for size in (1, 4):
        emu = make_emulator(node_count=size)
        deploy(emu)
        recorder = CallRecorder()
        for service in ("ec2", "ssm"):
            aws.client(service).meta.events.register(f"provide-client-params.{service}.*", recorder)
        prune(emu)
        counts[size] = sorted(recorder.calls)
        emu.stop()
    assert (
        counts[1] == counts[4] == sorted(["DescribeInstances", "SendCommand", "ListCommands", "ListCommandInvocations"])
    )


def test_a_command_by_instance_id_reaches_only_those_instances(make_emulator):
    emu = make_emulator(node_count=3)
    nodes = deploy(emu).output["nodes"]["current"]
    ssm = emu.client("ssm")
    command = ssm.send_command(
        InstanceIds=nodes[:1], DocumentName="AWS-RunShellScript", Parameters={"commands": scripts.HEALTH_SCRIPT}
    )
    invocations = ssm.list_command_invocations(CommandId=command["Command"]["CommandId"])["CommandInvocations"]
    assert [i["InstanceId"] for i in invocations] == nodes[:1]
