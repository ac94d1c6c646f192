"""Whole executions of the real state machines on the emulator's Step Functions interpreter."""

import json

import pytest

from chalicelib import naming, scripts
from chalicelib.aws import ec2 as ec2_adapter
from slipway.emulator.nodes import Result
from slipway.faults import break_after
from slipway.harness import (
    CallRecorder,
    commit_id,
    deliver_push,
    deploy,
    entered,
    follow_run,
    history,
    new_content,
    scale,
    tagged_instances,
    teardown,
)


def test_push_deploys_a_healthy_swarm_node_from_the_baked_image(emulator):
    commit = commit_id()
    run = deploy(emulator, commit)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    out = run.output
    ec2 = emulator.client("ec2")
    image = ec2.describe_images(ImageIds=[out["image"]["ami_id"]])["Images"][0]
    assert image["Name"] == naming.image_name(emulator.environment, out["deployment"]["image_key"])
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags[naming.TAG_COMMIT] == commit
    nodes = tagged_instances(emulator)
    assert [n.instance_id for n in nodes] == out["nodes"]["current"]
    assert all(n.image_id == image["ImageId"] for n in nodes)
    assert {emulator.nodes.state(n.instance_id) for n in nodes} == {"active"}
    token = emulator.client("ssm").get_parameter(
        Name=naming.swarm_parameter(emulator.environment, "manager-token"), WithDecryption=True
    )
    assert token["Parameter"]["Type"] == "SecureString"
    assert token["Parameter"]["Value"].startswith("SWMTKN-")
    # The execution's data never carries the join token (it shows in the console).
    assert "SWMTKN" not in json.dumps(out)
    assert "Bake node image" in run.states and run.states[-1] == "Deployment succeeded"


def test_failed_bake_fails_the_execution_with_nothing_provisioned(make_emulator):
    emu = make_emulator(bake_outcome="FAILED")
    run = deploy(emu)
    assert run.status == "FAILED"
    assert run.error == "BakeFailed" and "FAILED" in run.cause
    assert "Provision network" not in run.states
    assert ec2_adapter.count_tagged(emu.client("ec2"), emu.environment) == dict.fromkeys(
        ["instance", "vpc", "subnet", "internet-gateway", "route-table", "security-group", "image", "launch-template"],
        0,
    )


def test_same_commit_pushed_again_skips_the_bake_and_creates_nothing(emulator):
    # A later push of a commit already deployed (a rollback) is a new deployment that converges.
    commit = commit_id()
    first = deploy(emulator, commit)
    assert first.status == "SUCCEEDED"
    recorder = CallRecorder()
    emulator.client("ec2")  # warm
    from chalicelib import aws

    aws.client("ec2").meta.events.register("provide-client-params.ec2.*", recorder)
    second = deploy(emulator, commit, before=commit_id())
    assert second.status == "SUCCEEDED"
    assert second.execution_arn != first.execution_arn
    assert "Bake node image" not in second.states
    assert recorder.calls and recorder.mutating() == []
    assert second.output["nodes"]["current"] == first.output["nodes"]["current"]


def test_a_commit_with_the_same_image_content_skips_the_bake(emulator):
    first = deploy(emulator)
    second = deploy(emulator)  # another commit; ansible/ and packer/ unchanged
    assert first.status == second.status == "SUCCEEDED"
    assert "Bake node image" in first.states and "Bake node image" not in second.states
    assert second.output["image"]["ami_id"] == first.output["image"]["ami_id"]
    assert second.output["nodes"]["new"] == []


def test_a_commit_that_changes_the_role_bakes_a_new_image(emulator):
    first = deploy(emulator)
    second = deploy(emulator, new_content(emulator, commit_id()))
    assert "Bake node image" in second.states
    assert second.output["image"]["ami_id"] != first.output["image"]["ami_id"]


def test_a_commit_github_does_not_know_fails_before_creating_anything(emulator):
    commit = commit_id()
    emulator.github.missing.add(commit)
    run = deploy(emulator, commit)
    assert run.status == "FAILED" and run.error == "InvalidInput" and "no commit" in run.cause
    assert run.states == ["Prepare deployment", "Report failure to GitHub", "Deployment failed"]


def test_new_image_replaces_nodes_and_retires_the_old_ones(make_emulator):
    emu = make_emulator(node_count=2)
    first = deploy(emu)
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    old = set(first.output["nodes"]["current"])
    new = set(second.output["nodes"]["current"])
    assert len(new) == 2 and not old & new
    assert {n.instance_id for n in tagged_instances(emu)} == new
    assert second.output["swarm"]["action"] == "join"  # they joined the running swarm
    assert any(cmd.startswith("docker node rm") for _, cmd in emu.nodes.history)
    assert second.output["network"]["vpc_id"] == first.output["network"]["vpc_id"]
    # Two nodes want one manager, but the old leader left a membership of three (both new nodes
    # promoted), and the extra one demoted after was not the leader: on real Docker a leader
    # demoted from two managers can leave the other with no leader.
    swarm = emu.nodes.swarm_of(next(iter(new)))
    (old_manager,) = [n for n in old if n in {d[0] for d in swarm.demotions}]
    assert [(n, count, led) for n, count, led in swarm.demotions if n == old_manager] == [(old_manager, 3, True)]
    assert [led for n, _, led in swarm.demotions if n in new] == [False]
    assert sorted(swarm.roles.values()) == ["manager", "worker"]
    assert sorted(n.swarm_role for n in tagged_instances(emu)) == ["manager", "worker"]


def test_unhealthy_new_node_fails_the_deploy_and_keeps_the_old_nodes(make_emulator):
    emu = make_emulator()
    first = deploy(emu)
    break_after(emu, "swarm-join")  # dockerd dies right after joining
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "FAILED" and second.error == "NodesUnhealthy"
    assert "Cannot connect to the Docker daemon" not in second.cause  # the reason is a status
    assert "health command Failed" in second.cause
    running = {n.instance_id for n in tagged_instances(emu)}
    assert running == set(first.output["nodes"]["current"])


def test_teardown_removes_everything_and_can_run_twice(emulator):
    assert deploy(emulator).status == "SUCCEEDED"
    first = teardown(emulator)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    assert first.output["leftover"] == {"environment": emulator.environment, "leftover": {}}
    assert (
        emulator.client("ssm").get_parameters_by_path(Path=f"/slipway/{emulator.environment}/swarm", Recursive=True)[
            "Parameters"
        ]
        == []
    )
    assert teardown(emulator).status == "SUCCEEDED"


def test_teardown_refuses_another_environment(emulator):
    run = teardown(emulator, environment="prod")
    assert run.status == "FAILED" and run.error == "InvalidInput"


def test_only_the_newest_images_are_kept(make_emulator):
    emu = make_emulator(extra_environment={"SLIPWAY_KEEP_IMAGES": "2"})
    runs = [deploy(emu, new_content(emu, commit_id())) for _ in range(4)]
    assert [r.status for r in runs] == ["SUCCEEDED"] * 4
    remaining = {i["ImageId"] for i in emu.client("ec2").describe_images(Owners=["self"])["Images"]}
    assert remaining == {runs[2].output["image"]["ami_id"], runs[3].output["image"]["ami_id"]}


def test_a_failure_after_the_health_gate_keeps_the_new_nodes(make_emulator):
    emu = make_emulator()
    first = deploy(emu)
    original_run = emu.nodes.run

    def retire_fails(instance_id: str, commands: list[str]) -> Result:
        if scripts.command_kind(commands) == "retire":
            return Result(1, stderr="Error response from daemon: rpc error: code = Unknown")
        return original_run(instance_id, commands)

    emu.nodes.run = retire_fails
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "FAILED" and second.error == "CommandFailed"
    assert second.states[-1] == "Cleanup after a healthy deployment failed"
    running = {n.instance_id for n in tagged_instances(emu)}
    old = set(first.output["nodes"]["current"])
    assert old < running and len(running - old) == 1  # the healthy new node stays beside the old one


def test_there_is_always_a_healthy_node_during_a_replacement(make_emulator):
    import threading

    from moto.ec2.models import ec2_backends

    emu = make_emulator(node_count=2)
    deploy(emu)
    samples, stop = [], threading.Event()
    backend = ec2_backends["123456789012"]["us-east-1"]

    def sample():
        while not stop.is_set():
            running = [i.id for r in backend.reservations.copy().values() for i in r.instances if i.state == "running"]
            samples.append(sum(1 for i in running if emu.nodes.state(i) == "active" and i not in emu.nodes.broken))
            stop.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    second = deploy(emu, new_content(emu, commit_id()))
    stop.set()
    sampler.join()
    assert second.status == "SUCCEEDED"
    assert len(samples) > 20 and min(samples) >= 1, f"{len(samples)} samples, min {min(samples)}"


def test_nodes_spread_over_one_subnet_per_zone(make_emulator):
    emu = make_emulator(node_count=3, extra_environment={"SLIPWAY_SUBNET_COUNT": "3"})
    run = deploy(emu)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    nodes = tagged_instances(emu)
    assert len({n.subnet_id for n in nodes}) == 3
    zones = {
        s["AvailabilityZone"]
        for s in emu.client("ec2").describe_subnets(SubnetIds=run.output["network"]["subnet_ids"])["Subnets"]
    }
    assert len(zones) == 3
    template = emu.client("ec2").describe_launch_templates()["LaunchTemplates"]
    assert [t["LaunchTemplateName"] for t in template] == [f"slipway-{emu.environment}-nodes"]


def test_a_larger_swarm_has_three_managers_and_workers(make_emulator):
    emu = make_emulator(node_count=4)
    run = deploy(emu)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    roles = sorted(emu.nodes.role(i) for i in run.output["nodes"]["current"])
    assert roles == ["manager", "manager", "manager", "worker"]
    tagged_roles = sorted(
        {t["Key"]: t["Value"] for t in i["Tags"]}["slipway:swarm-role"]
        for r in emu.client("ec2").describe_instances(InstanceIds=run.output["nodes"]["current"])["Reservations"]
        for i in r["Instances"]
    )
    assert tagged_roles == roles
    replaced = deploy(emu, new_content(emu, commit_id()))
    assert replaced.status == "SUCCEEDED", (replaced.error, replaced.cause)
    assert sorted(emu.nodes.role(i) for i in replaced.output["nodes"]["current"]) == roles


def swarm_token(emu) -> str:
    return emu.client("ssm").get_parameter(
        Name=naming.swarm_parameter(emu.environment, "manager-token"), WithDecryption=True
    )["Parameter"]["Value"]


def test_scaling_up_with_the_same_image_grows_the_one_swarm(make_emulator):
    emu = make_emulator(node_count=1)
    first = deploy(emu)
    token = swarm_token(emu)
    scale(3)
    second = deploy(emu)  # same image content: no bake, the kept node stays
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    kept = first.output["nodes"]["current"][0]
    nodes = second.output["nodes"]
    assert nodes["current"][0] == kept and len(nodes["current"]) == 3 and nodes["old"] == []
    swarm = emu.nodes.swarm_of(kept)
    assert swarm.members == set(nodes["current"])  # one swarm, not a second one beside it
    assert swarm_token(emu) == token
    assert sorted(swarm.roles.values()) == ["manager"] * 3  # two promoted after the health gate
    assert sorted(n.swarm_role for n in tagged_instances(emu)) == ["manager"] * 3


def test_a_failed_replacement_leaves_the_old_swarm_whole_and_manageable(make_emulator):
    emu = make_emulator(node_count=1)
    first = deploy(emu)
    old = first.output["nodes"]["current"][0]
    original_run = break_after(emu, "swarm-join")  # dockerd dies right after joining
    failed = deploy(emu, new_content(emu, commit_id()))
    assert failed.status == "FAILED" and failed.error == "NodesUnhealthy"
    assert "Check nodes left the swarm" in failed.states  # it was removed through the old manager
    swarm = emu.nodes.swarm_of(old)
    assert swarm.roles == {old: "manager"}  # no dead member, and it never had a vote
    assert emu.nodes.has_quorum(old)
    emu.nodes.run = original_run
    again = deploy(emu, new_content(emu, commit_id()))
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    assert again.output["swarm"]["action"] == "join"


def test_a_replacement_keeps_a_majority_of_managers_up_throughout(make_emulator):
    emu = make_emulator(node_count=3)
    deploy(emu)
    original_run = emu.nodes.run
    quorum = []

    def watch(instance_id: str, commands: list[str]) -> Result:
        result = original_run(instance_id, commands)
        quorum.append(all(emu.nodes.has_quorum(i) for i in emu.nodes._directory() if emu.nodes.swarm_of(i)))
        return result

    emu.nodes.run = watch
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert quorum and all(quorum)
    current = second.output["nodes"]["current"]
    assert sorted(emu.nodes.role(i) for i in current) == ["manager"] * 3
    assert emu.nodes.swarm_of(current[0]).members == set(current)


def test_a_failed_promotion_is_undone_and_the_old_swarm_kept(make_emulator):
    emu = make_emulator(node_count=1)
    first = deploy(emu)
    old = first.output["nodes"]["current"][0]
    original_run = emu.nodes.run

    def promote_fails(instance_id: str, commands: list[str]) -> Result:
        if scripts.command_kind(commands) == "promote":
            return Result(1, stderr="Error response from daemon: rpc error: code = DeadlineExceeded")
        return original_run(instance_id, commands)

    emu.nodes.run = promote_fails
    failed = deploy(emu, new_content(emu, commit_id()))
    assert failed.status == "FAILED" and failed.error == "CommandFailed"
    assert "DeadlineExceeded" in failed.cause  # the node's own words reach the console
    assert {n.instance_id for n in tagged_instances(emu)} == {old}
    assert emu.nodes.swarm_of(old).roles == {old: "manager"}


def test_a_stopped_node_is_replaced_and_retired(make_emulator):
    emu = make_emulator(node_count=1)
    first = deploy(emu)
    stopped = first.output["nodes"]["current"][0]
    # Its state-change event is lost, so no heal races the push (tests/pipeline/test_heal.py has
    # the heal of a stopped node, and a heal racing a push): the push alone must replace it.
    emu.instances_changed = lambda *args: None
    emu.client("ec2").stop_instances(InstanceIds=[stopped])
    second = deploy(emu)  # same image: the stopped node cannot serve, so it is replaced
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert second.output["nodes"]["old"] == [stopped]
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in emu.client("ec2").describe_instances(InstanceIds=[stopped])["Reservations"]
        for i in r["Instances"]
    }
    assert states[stopped] in ("shutting-down", "terminated")


def test_lost_join_tokens_start_a_new_swarm_that_replaces_the_old_one(make_emulator):
    emu = make_emulator(node_count=3)
    first = deploy(emu)
    ssm = emu.client("ssm")
    for role in ("manager", "worker"):
        ssm.delete_parameter(Name=naming.swarm_parameter(emu.environment, f"{role}-token"))
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    current = second.output["nodes"]["current"]
    swarm = emu.nodes.swarm_of(current[0])
    assert swarm.members == set(current) and sorted(swarm.roles.values()) == ["manager"] * 3
    assert not set(first.output["nodes"]["current"]) & swarm.members


def test_the_bake_gets_exactly_the_pushed_commits_image_folders(emulator):
    import io
    import subprocess
    import zipfile

    from slipway import PROJECT_DIR

    head = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    import os

    bucket = emulator.client("s3")
    # The installation's source (this checkout's, put by bootstrap) has the same key when the working
    # tree's image folders are HEAD's: without it, the bake's source must come from the commit.
    installed = f"sources/{os.environ['SLIPWAY_NODE_IMAGE_KEY']}.zip"
    bucket.delete_object(Bucket=os.environ["SLIPWAY_BAKE_BUCKET"], Key=installed)
    run = deploy(emulator, head)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    key = f"sources/{run.output['deployment']['image_key']}.zip"

    data = bucket.get_object(Bucket=os.environ["SLIPWAY_BAKE_BUCKET"], Key=key)["Body"].read()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {n.split("/")[0] for n in names} == {"ansible", "packer"}
    committed = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "show", f"{head}:packer/buildspec.yml"], capture_output=True, check=True
    ).stdout
    assert zipfile.ZipFile(io.BytesIO(data)).read("packer/buildspec.yml") == committed
    build = emulator.client("codebuild").batch_get_builds(ids=[run.output["bake"]["build_id"]])["builds"][0]
    # A later commit with the same image content neither bakes nor downloads the archive again.
    zipballs = [r for r in emulator.github.requests if "/zipball/" in r]
    assert len(zipballs) == 1 and build["buildStatus"] == "SUCCEEDED"
    assert deploy(emulator).status == "SUCCEEDED"
    assert [r for r in emulator.github.requests if "/zipball/" in r] == zipballs


def test_a_failed_deployment_with_a_swarm_of_its_own_takes_its_tokens_away(make_emulator):
    emu = make_emulator(node_count=1)
    deploy(emu)
    for role in ("manager", "worker"):
        emu.client("ssm").delete_parameter(Name=naming.swarm_parameter(emu.environment, f"{role}-token"))
    original_run = break_after(emu, "swarm-init")  # the new swarm's first node dies
    failed = deploy(emu, new_content(emu, commit_id()))
    assert failed.status == "FAILED" and failed.error == "NodesUnhealthy"
    assert ("init", "docker swarm init") in [("init", what) for _, what in emu.nodes.history]
    # The tokens it stored were its own swarm's, which is gone: none is left to mislead the next.
    assert (
        emu.client("ssm").get_parameters_by_path(Path=naming.swarm_path(emu.environment), Recursive=True)["Parameters"]
        == []
    )
    emu.nodes.run = original_run
    again = deploy(emu, new_content(emu, commit_id()))
    assert again.status == "SUCCEEDED", (again.error, again.cause)


def test_a_retirement_failing_half_way_terminates_the_nodes_already_out(make_emulator):
    emu = make_emulator(node_count=3)
    first = deploy(emu)
    original_run = emu.nodes.run

    def retire_one_then_fail(instance_id: str, commands: list[str]) -> Result:
        retire_lines = [c for c in commands if c.startswith("retire ")]
        if len(retire_lines) > 1:
            done = original_run(instance_id, [c for c in commands if c not in retire_lines[1:]])
            return Result(1, done.stdout, "Error response from daemon: rpc error: code = Unknown")
        return original_run(instance_id, commands)

    emu.nodes.run = retire_one_then_fail
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "FAILED" and second.error == "CommandFailed"
    running = {n.instance_id for n in tagged_instances(emu)}
    old = set(first.output["nodes"]["current"])
    assert len(old & running) == 2  # the one already removed from the swarm was terminated
    emu.nodes.run = original_run
    third = deploy(emu, new_content(emu, commit_id()))
    assert third.status == "SUCCEEDED", (third.error, third.cause)
    assert {n.instance_id for n in tagged_instances(emu)} == set(third.output["nodes"]["current"])


@pytest.mark.parametrize("which", [0, -1])
def test_one_manager_down_does_not_block_its_replacement(make_emulator, which):
    emu = make_emulator(node_count=3)
    first = deploy(emu)
    # One of three managers is down (the swarm keeps its quorum): the first one joins would go
    # through, or another that only the health gate's view asks.
    broken = sorted(first.output["nodes"]["current"])[which]
    emu.nodes.broken.add(broken)
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert (broken, "docker unavailable") in emu.nodes.history  # it was asked, and did not answer
    assert broken not in {n.instance_id for n in tagged_instances(emu)}


def test_two_pushes_at_once_deploy_one_after_the_other(make_emulator):
    # Given a swarm, when two pushes with new images arrive together, then the second waits in
    # the queue until the first has ended: the environment is changed by one run at a time, and
    # the swarm ends on the second push's image with no node of the first left over.
    emu = make_emulator(node_count=2, poll_seconds=1)
    assert deploy(emu).status == "SUCCEEDED"
    answers = [deliver_push(emu, new_content(emu, commit_id()))[1] for _ in range(2)]
    first, second = (follow_run(emu, a["execution_arn"]) for a in answers)
    assert first.status == second.status == "SUCCEEDED", (first.cause, second.cause)
    assert "Wait for earlier runs" in second.states and "Wait for earlier runs" not in first.states
    first_ended = emu.client("stepfunctions").describe_execution(executionArn=first.execution_arn)["stopDate"]
    assert entered(emu, second.execution_arn, "Look for a baked image") >= first_ended
    queued = [
        json.loads(e["stateExitedEventDetails"]["output"])["queue"]
        for e in history(emu, second.execution_arn)
        if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "Look for earlier runs"
    ]
    assert queued[0]["ahead"] == [first.execution_arn.split(":execution:")[1]] and queued[-1]["clear"]
    nodes = tagged_instances(emu)
    assert {n.instance_id for n in nodes} == set(second.output["nodes"]["current"])
    assert {n.image_id for n in nodes} == {second.output["image"]["ami_id"]}


def test_a_queued_push_is_skipped_when_a_newer_push_arrives_behind_it(make_emulator):
    # Given a deployment under way, when two more pushes arrive, then the middle one, still
    # queued, is skipped (it would be replaced the moment it ended): it changes nothing, bakes
    # nothing, and its commit says on GitHub which newer commit deploys instead.
    emu = make_emulator(node_count=2, poll_seconds=1)
    commits = [new_content(emu, commit_id()) for _ in range(3)]
    answers = [deliver_push(emu, commit)[1] for commit in commits]
    first, middle, last = (follow_run(emu, a["execution_arn"]) for a in answers)
    assert first.status == middle.status == last.status == "SUCCEEDED", (first.cause, middle.cause, last.cause)
    assert middle.states[-2:] == ["Report the skipped run to GitHub", "Skipped for a newer push"]
    assert "Look for a baked image" not in middle.states and "image" not in middle.output
    assert middle.output["queue"]["superseded_by"] == {
        "execution": last.execution_arn.split(":execution:")[1],
        "commit": commits[2],
    }
    assert [(s["state"], s["description"]) for s in emu.github.statuses if s["sha"] == commits[1]] == [
        ("pending", "Deploying to dev"),
        ("error", f"Not deployed to dev: skipped for {commits[2][:7]}, started after it"),
    ]
    # Its GitHub Deployment ends `inactive` (superseded, not an error); the last run's replaces the first's.
    deployments = {d["sha"]: d["id"] for d in emu.github.deployments}
    assert emu.github.deployment_states(deployments[commits[1]]) == ["in_progress", "inactive"]
    assert emu.github.deployment_states(deployments[commits[0]]) == ["in_progress", "success", "inactive"]
    assert last.output["github"]["replaced"] == deployments[commits[0]]
    assert "Bake node image" in last.states and "Skipped for a newer push" not in first.states
    nodes = tagged_instances(emu)
    assert {n.instance_id for n in nodes} == set(last.output["nodes"]["current"])
    assert {n.image_id for n in nodes} == {last.output["image"]["ami_id"]}


def test_a_newer_run_that_fails_in_prepare_does_not_cost_a_queued_push_its_turn(make_emulator):
    # A queued push is skipped only for a newer run that got past "Prepare deployment": a run
    # for a commit GitHub does not know (and is slow to say so) fails there, and the push still
    # deploys, though it saw that run running while it waited.
    emu = make_emulator(poll_seconds=1)
    ahead = deliver_push(emu, commit_id())[1]
    queued_commit = new_content(emu, commit_id())
    queued = deliver_push(emu, queued_commit)[1]
    bad = commit_id()
    emu.github.missing.add(bad)
    emu.github.slow[bad] = 3  # three seconds in Prepare: the queued run looks a few times meanwhile
    newer = deliver_push(emu, bad)[1]
    first, pushed, failed = (follow_run(emu, a["execution_arn"]) for a in (ahead, queued, newer))
    assert failed.status == "FAILED" and failed.error == "InvalidInput"
    assert first.status == pushed.status == "SUCCEEDED", (first.cause, pushed.cause)
    assert "Deployment succeeded" in pushed.states and "Wait for earlier runs" in pushed.states
    assert {n.image_id for n in tagged_instances(emu)} == {pushed.output["image"]["ami_id"]}


def test_a_run_skipped_for_a_run_of_its_own_commit_leaves_that_commits_status_alone(make_emulator):
    # A push queued behind a deployment, then the same commit started by hand: the push is
    # skipped, and GitHub shows only the deploying run's pending and success for the commit.
    emu = make_emulator(poll_seconds=1)
    ahead = deliver_push(emu, commit_id())[1]
    commit = new_content(emu, commit_id())
    queued = deliver_push(emu, commit)[1]
    sfn = emu.client("stepfunctions")
    by_hand = sfn.start_execution(
        stateMachineArn=emu.arns["deploy"],
        input=json.dumps({"repository": "example/app", "commit": commit, "ref": "refs/heads/main"}),
    )["executionArn"]
    first, skipped, deployed = (
        follow_run(emu, arn) for arn in (ahead["execution_arn"], queued["execution_arn"], by_hand)
    )
    assert (first.status, skipped.status, deployed.status) == ("SUCCEEDED",) * 3
    assert "Skipped for a newer push" in skipped.states and "Deployment succeeded" in deployed.states
    assert skipped.output["github"]["reported"] is False
    assert [s["state"] for s in emu.github.statuses if s["sha"] == commit] == ["pending", "pending", "success"]


def test_every_push_deploys_in_turn_when_skipping_is_off(make_emulator):
    emu = make_emulator(poll_seconds=1, extra_environment={"SLIPWAY_SKIP_SUPERSEDED": "false"})
    answers = [deliver_push(emu, commit_id())[1] for _ in range(3)]
    runs = [follow_run(emu, a["execution_arn"]) for a in answers]
    assert [r.status for r in runs] == ["SUCCEEDED"] * 3, [r.cause for r in runs]
    assert all("Deployment succeeded" in r.states for r in runs)
    assert "Wait for earlier runs" in runs[1].states


def test_nodes_of_a_run_stopped_before_they_joined_are_retired_by_the_next_deploy(make_emulator):
    # Given a deploy stopped from the console after it launched a node and before the node joined
    # the swarm (no undo runs), then the next deploy of the same image does not count that node
    # as serving (it would fail the health gate for ever): it launches its own and retires it.
    import time

    emu = make_emulator(poll_seconds=2, wait_scale=1)  # a 2 s window to stop it in, under load
    first = deploy(emu)
    stopped_commit = new_content(emu, commit_id())
    arn = deliver_push(emu, stopped_commit)[1]["execution_arn"]
    deadline = time.monotonic() + 60
    while entered(emu, arn, "Wait for nodes") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    sfn = emu.client("stepfunctions")
    sfn.stop_execution(executionArn=arn, error="Operator", cause="stopped from the console")
    assert follow_run(emu, arn).status == "ABORTED"
    assert entered(emu, arn, "Form swarm") is None, "stopped too late: its node joined the swarm"
    stray = {n.instance_id for n in tagged_instances(emu)} - set(first.output["nodes"]["current"])
    assert len(stray) == 1
    again = commit_id()
    emu.github.trees[again] = emu.github.trees[stopped_commit]  # same image, already baked
    nxt = deploy(emu, again)
    assert nxt.status == "SUCCEEDED", (nxt.error, nxt.cause)
    assert "Bake node image" not in nxt.states
    assert stray & set(nxt.output["nodes"]["old"]) == stray
    assert {n.instance_id for n in tagged_instances(emu)} == set(nxt.output["nodes"]["current"])
    assert not stray & set(nxt.output["nodes"]["current"])


def test_a_teardown_started_during_a_deploy_waits_for_it_and_leaves_nothing(make_emulator):
    # Given a deployment under way, when someone starts the teardown from the console, then it
    # waits for the deployment to end instead of deleting the network under it, and then removes
    # everything the deployment created.
    emu = make_emulator(poll_seconds=1)
    answer = deliver_push(emu, commit_id())[1]
    down = teardown(emu)
    up = follow_run(emu, answer["execution_arn"])
    assert up.status == "SUCCEEDED" and down.status == "SUCCEEDED", (up.cause, down.cause)
    up_ended = emu.client("stepfunctions").describe_execution(executionArn=up.execution_arn)["stopDate"]
    assert entered(emu, down.execution_arn, "Terminate nodes") >= up_ended
    assert down.output["leftover"] == {"environment": emu.environment, "leftover": {}}
    assert tagged_instances(emu) == []


def test_a_deploy_pushed_during_a_teardown_starts_after_it_on_a_clean_slate(make_emulator):
    emu = make_emulator(poll_seconds=1)
    assert deploy(emu).status == "SUCCEEDED"
    sfn = emu.client("stepfunctions")
    down_arn = sfn.start_execution(
        stateMachineArn=emu.arns["teardown"], input=json.dumps({"environment": emu.environment})
    )["executionArn"]
    up = deploy(emu)
    down = follow_run(emu, down_arn)
    assert down.status == up.status == "SUCCEEDED", (down.cause, up.cause)
    assert (
        entered(emu, up.execution_arn, "Look for a baked image")
        >= sfn.describe_execution(executionArn=down_arn)["stopDate"]
    )
    assert {n.instance_id for n in tagged_instances(emu)} == set(up.output["nodes"]["current"])


def test_an_instance_stuck_shutting_down_fails_the_teardown_after_a_bounded_wait(make_emulator):
    # Given a node that never finishes terminating, then the teardown stops waiting after
    # SLIPWAY_NODE_READY_ATTEMPTS checks and fails naming it, instead of running forever.
    import copy
    from unittest import mock

    from moto.ec2.models.instances import Instance

    def stuck(instance):
        previous = copy.copy(instance._state)
        instance._state.name, instance._state.code = "shutting-down", 32
        return previous

    emu = make_emulator(extra_environment={"SLIPWAY_NODE_READY_ATTEMPTS": "3"})
    node = deploy(emu).output["nodes"]["current"][0]
    with mock.patch.object(Instance, "terminate", stuck):
        run = teardown(emu)
    assert run.status == "FAILED" and run.error == "TeardownIncomplete"
    assert node in run.cause and "after 3 checks" in run.cause
    assert run.states.count("Check nodes are gone") == 3


def test_an_undo_that_cannot_take_nodes_out_of_the_swarm_still_removes_them(make_emulator):
    # Given the old manager dies while the new node joins (so the gate fails and the new node
    # cannot be taken out of the swarm through it), then the new node is still terminated, the
    # run fails with the gate's error, and the console shows the undo's own failure beside it.
    emu = make_emulator()
    old = deploy(emu).output["nodes"]["current"][0]
    original_run = emu.nodes.run

    def run(instance_id: str, commands: list[str]) -> Result:
        result = original_run(instance_id, commands)
        if scripts.command_kind(commands) == "swarm-join":
            emu.nodes.broken.add(old)
        return result

    emu.nodes.run = run
    second = deploy(emu, new_content(emu, commit_id()))
    assert second.status == "FAILED" and second.error == "NodesUnhealthy", (second.error, second.cause)
    failed = next(
        json.loads(e["stateEnteredEventDetails"]["input"])
        for e in history(emu, second.execution_arn)
        if e["type"] == "FailStateEntered"
    )
    assert failed["leave_error"]["Error"] == "CommandFailed" and "undo_error" not in failed
    assert {n.instance_id for n in tagged_instances(emu)} == {old}


def test_scaling_down_retires_the_surplus_nodes_and_keeps_the_quorum(make_emulator):
    # Given three managers, when SLIPWAY_NODE_COUNT goes down to 1 and a push deploys the same
    # image, then two nodes are demoted one at a time, removed from the swarm and terminated, and
    # the one left is a manager of the same swarm (the emulated nodes refuse a lost quorum).
    emu = make_emulator(node_count=3)
    first = deploy(emu)
    assert first.status == "SUCCEEDED"
    scale(1)
    second = deploy(emu)
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    nodes = second.output["nodes"]
    assert nodes["new"] == [] and len(nodes["current"]) == 1 and len(nodes["old"]) == 2
    assert set(nodes["current"]) | set(nodes["old"]) == set(first.output["nodes"]["current"])
    left = nodes["current"][0]
    assert [n.instance_id for n in tagged_instances(emu)] == [left]
    swarm = emu.nodes.swarm_of(left)
    assert swarm.members == {left} and swarm.roles[left] == "manager"
    assert emu.nodes.state(left) == "active"


def test_scaling_three_managers_down_to_two_nodes_leaves_one_manager(make_emulator):
    # An even number of managers tolerates no more loss than one fewer: after the surplus node
    # is retired, one of the two that stay is demoted, and its tag says so.
    emu = make_emulator(node_count=3)
    first = deploy(emu)
    scale(2)
    second = deploy(emu)
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    stay = second.output["nodes"]["current"]
    assert len(stay) == 2 and set(stay) < set(first.output["nodes"]["current"])
    swarm = emu.nodes.swarm_of(stay[0])
    assert swarm.members == set(stay)
    assert sorted(swarm.roles[i] for i in stay) == ["manager", "worker"]
    tags = {n.instance_id: n.swarm_role for n in tagged_instances(emu)}
    assert tags == {i: swarm.roles[i] for i in stay}
    third = deploy(emu, new_content(emu, commit_id()))  # and the next replacement works with it
    assert third.status == "SUCCEEDED", (third.error, third.cause)


def test_a_commit_deployed_by_hand_from_the_console_needs_only_repository_and_commit(emulator):
    first = deploy(emulator)
    sfn = emulator.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=emulator.arns["deploy"],
        input=json.dumps({"repository": "example/app", "commit": first.output["deployment"]["commit"]}),
    )["executionArn"]
    again = follow_run(emulator, arn)
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    assert again.output["nodes"]["current"] == first.output["nodes"]["current"]  # converged: no change


def test_a_run_kept_waiting_too_long_gives_up_having_changed_nothing(make_emulator):
    # Given a run ahead that takes long, then a queued run stops after SLIPWAY_QUEUE_MAX_CHECKS
    # checks, says why, and its commit is marked failed; the run ahead is not disturbed.
    emu = make_emulator(poll_seconds=1, extra_environment={"SLIPWAY_QUEUE_MAX_CHECKS": "2"})
    ahead = deliver_push(emu, commit_id())[1]
    commit = new_content(emu, commit_id())
    queued = follow_run(emu, deliver_push(emu, commit)[1]["execution_arn"])
    assert queued.status == "FAILED" and queued.error == "QueueTimeout", (queued.error, queued.cause)
    assert "after 2 checks" in queued.cause and "Look for a baked image" not in queued.states
    assert [s["state"] for s in emu.github.statuses if s["sha"] == commit] == ["pending", "failure"]
    first = follow_run(emu, ahead["execution_arn"])
    assert first.status == "SUCCEEDED"
    assert {n.instance_id for n in tagged_instances(emu)} == set(first.output["nodes"]["current"])
