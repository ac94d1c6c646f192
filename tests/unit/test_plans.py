"""Pure pipeline decisions (chalicelib/plans.py), compared by equality."""

import dataclasses
import io
import zipfile
from datetime import UTC

import pytest

from chalicelib import plans
from chalicelib.aws.ec2 import Node
from chalicelib.errors import InvalidInput


def node(instance_id, image, state="running", deployment="dep", role="manager"):
    return Node(instance_id, image, state, f"ip-{instance_id}", "10.0.0.1", deployment, swarm_role=role)


def test_nodes_running_the_image_are_kept_and_the_rest_retired():
    nodes = [node("i-1", "ami-old"), node("i-2", "ami-new")]
    assert plans.plan_nodes(nodes, "ami-new", 3) == plans.NodePlan(2, ("i-2",), ("i-1",))


def test_a_stopped_node_of_the_image_is_replaced_and_retired():
    nodes = [node("i-1", "ami", "stopped"), node("i-2", "ami")]
    assert plans.plan_nodes(nodes, "ami", 2) == plans.NodePlan(1, ("i-2",), ("i-1",))


def test_scaling_down_retires_workers_before_managers():
    nodes = [node("i-1", "ami"), node("i-2", "ami"), node("i-3", "ami"), node("i-4", "ami-old")]
    roles = {"i-1": "worker", "i-2": "manager", "i-3": "worker"}
    nodes = [dataclasses.replace(n, swarm_role=roles.get(n.instance_id, "manager")) for n in nodes]
    assert plans.plan_nodes(nodes, "ami", 2) == plans.NodePlan(0, ("i-1", "i-2"), ("i-3", "i-4"))
    assert plans.plan_nodes(nodes, "ami", 1) == plans.NodePlan(0, ("i-2",), ("i-1", "i-3", "i-4"))


def test_workers_of_a_swarm_whose_managers_all_died_are_replaced():
    # Their swarm is gone with its managers: they can neither serve nor join the new one.
    nodes = [node("i-1", "ami", "terminated"), node("i-2", "ami", role="worker"), node("i-3", "ami", role="worker")]
    assert plans.plan_nodes(nodes, "ami", 3) == plans.NodePlan(3, (), ("i-1", "i-2", "i-3"))
    stopped = [node("i-1", "ami", "stopped"), node("i-2", "ami", role="worker")]
    assert plans.plan_nodes(stopped, "ami", 2) == plans.NodePlan(2, (), ("i-1", "i-2"))


def test_nothing_is_launched_when_the_image_already_runs_everywhere():
    assert plans.plan_nodes([node("i-1", "ami")], "ami", 1) == plans.NodePlan(0, ("i-1",), ())


def test_nodes_a_stopped_run_launched_but_never_joined_are_retired():
    # A run stopped from the console (or timed out) after launching its nodes, before they
    # joined: the next deployment must not keep them, or its health gate fails for ever.
    nodes = [node("i-1", "ami"), node("i-2", "ami", deployment="stopped", role="")]
    assert plans.plan_nodes(nodes, "ami", 2, "next") == plans.NodePlan(1, ("i-1",), ("i-2",))
    # ...but a node of this very deployment, launched by an earlier attempt of its step, stays.
    mine = [node("i-1", "ami"), node("i-3", "ami", deployment="next", role="")]
    assert plans.plan_nodes(mine, "ami", 2, "next") == plans.NodePlan(0, ("i-1", "i-3"), ())


def test_first_node_initialises_a_swarm_when_there_is_none():
    assert plans.plan_swarm(["i-1", "i-2"], [], [], [], False, 2, False) == plans.SwarmStep("init", ("i-1",))


def test_nodes_join_as_managers_until_there_are_enough_then_as_workers():
    step = plans.plan_swarm(["i-1", "i-2", "i-3", "i-4", "i-5"], ["i-1"], ["i-1"], ["10.0.0.5"], True, 5, False)
    assert step == plans.SwarmStep("join", ("i-2", "i-3"), ("10.0.0.5",), "manager")
    step = plans.plan_swarm(
        ["i-1", "i-2", "i-3", "i-4", "i-5"], ["i-1", "i-2", "i-3"], ["i-1", "i-2", "i-3"], ["10.0.0.5"], True, 5, False
    )
    assert step == plans.SwarmStep("join", ("i-4", "i-5"), ("10.0.0.5",), "worker")


def test_nodes_join_an_established_swarm_as_workers_only():
    # Were they managers, removing them after a failed health gate could cost the swarm its quorum.
    step = plans.plan_swarm(["i-8", "i-9"], [], [], ["10.0.0.1"], True, 3, True)
    assert step == plans.SwarmStep("join", ("i-8", "i-9"), ("10.0.0.1",), "worker")


def test_a_lost_token_starts_a_new_swarm_rather_than_fail():
    step = plans.plan_swarm(["i-9"], [], [], ["10.0.0.1"], False, 1, True)
    assert step == plans.SwarmStep("init", ("i-9",))


def test_healthy_new_nodes_are_promoted_to_make_up_the_managers():
    assert plans.plan_promotion(["i-8", "i-9"], {"i-8": "worker", "i-9": "worker"}, 1) == ("i-8",)
    # Scaling 1 -> 3 with the same image: the kept manager counts, two more are needed.
    roles = {"i-1": "manager", "i-8": "worker", "i-9": "worker"}
    assert plans.plan_promotion(["i-8", "i-9", "i-1"], roles, 3) == ("i-8", "i-9")
    assert plans.plan_promotion(["i-1"], {"i-1": "manager"}, 1) == ()
    assert plans.plan_promotion(["i-1", "i-2"], {"i-1": "manager", "i-2": "manager"}, 2) == ()


def test_old_managers_leave_a_membership_of_three_or_more():
    # Two nodes want one manager; while the old one leaves, both new ones are managers, so its
    # demotion shrinks three members to two and those two elect a leader by the old majority.
    workers = {"i-8": "worker", "i-9": "worker"}
    assert plans.plan_promotion(["i-8", "i-9"], workers, 2) == ("i-8",)  # nothing retires
    assert plans.plan_promotion(["i-8", "i-9"], workers, 2, retiring=1) == ("i-8", "i-9")
    assert plans.plan_promotion(["i-8"], {"i-8": "worker"}, 1, retiring=1) == ("i-8",)  # one is all there is
    assert plans.plan_promotion(["i-7", "i-8", "i-9"], {}, 3, retiring=3) == ("i-7", "i-8", "i-9")


def test_no_swarm_step_when_every_new_node_joined():
    assert plans.plan_swarm(["i-1"], ["i-1"], ["i-1"], ["10.0.0.1"], True, 1, False) == plans.SwarmStep("none", ())


@pytest.mark.parametrize("nodes,managers", [(1, 1), (2, 1), (3, 3), (9, 3), (10, 5), (50, 5)])
def test_an_odd_number_of_managers(nodes, managers):
    assert plans.managers_wanted(nodes) == managers


@pytest.mark.parametrize(
    "status,ami,verdict",
    [
        ("IN_PROGRESS", None, "IN_PROGRESS"),
        ("SUCCEEDED", "ami-1", "SUCCEEDED"),
        ("SUCCEEDED", None, "the build succeeded but exported no AMI_ID"),
        ("FAILED", None, "the build ended FAILED"),
        ("TIMED_OUT", None, "the build ended TIMED_OUT"),
    ],
)
def test_bake_status(status, ami, verdict):
    assert plans.bake_status(status, ami) == verdict


@pytest.mark.parametrize("commit", ["", "xyz", "ABCDEF1", "a" * 41])
def test_what_is_not_a_commit_is_refused(commit):
    with pytest.raises(InvalidInput):
        plans.validate_commit(commit)


def test_image_key_depends_only_on_the_image_folders():
    trees = {"ansible": "a" * 40, "packer": "b" * 40}
    key = plans.image_key(trees)
    assert len(key) == 16 and key == plans.image_key(trees | {"src": "c" * 40})
    assert key != plans.image_key(trees | {"ansible": "d" * 40})
    assert key != plans.image_key(trees | {"packer": "d" * 40})


def test_image_key_needs_both_folders():
    with pytest.raises(InvalidInput, match="packer/"):
        plans.image_key({"ansible": "a" * 40})


def test_old_images_beyond_the_newest_kept_go_unless_a_node_runs_them():
    images = [{"ImageId": f"ami-{n}", "CreationDate": f"2026-11-0{n}T00:00:00.000Z"} for n in range(1, 7)]
    assert plans.images_to_remove(images, in_use={"ami-1"}, keep=3) == ["ami-3", "ami-2"]
    assert plans.images_to_remove(images[:2], in_use=set(), keep=3) == []


def test_new_nodes_go_where_there_are_fewest():
    assert plans.spread(3, {"a": 0, "b": 0, "c": 0}) == {"a": 1, "b": 1, "c": 1}
    assert plans.spread(2, {"a": 2, "b": 0, "c": 1}) == {"b": 2}  # 2, 2, 1: balanced
    assert plans.spread(4, {"a": 0, "b": 3}) == {"a": 4}  # 4, 3
    assert plans.spread(0, {"a": 0}) == {}


def github_archive(files: dict[str, bytes], prefix="octo-app-abc1234/") -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(prefix, b"")  # GitHub lists the folder itself too
        for name, data in files.items():
            archive.writestr(prefix + name, data)
    buffer.seek(0)
    return buffer


def test_the_bake_source_is_the_image_folders_of_the_archive_at_its_root():
    files = {
        "ansible/swarm_node.yml": b"- hosts: all",
        "packer/buildspec.yml": b"version: 0.2",
        "app/main.py": b"print()",
        "ansible.cfg": b"[defaults]",
    }
    source = plans.image_source(github_archive(files))
    assert sorted(zipfile.ZipFile(io.BytesIO(source)).namelist()) == ["ansible/swarm_node.yml", "packer/buildspec.yml"]
    assert source == plans.image_source(github_archive(files, prefix="octo-app-def5678/"))  # same bytes
    with pytest.raises(InvalidInput, match="packer/"):
        plans.image_source(github_archive({"ansible/swarm_node.yml": b""}))


def test_runs_ahead_are_the_ones_started_earlier_in_start_order():
    from datetime import datetime, timedelta

    t = datetime(2026, 11, 28, tzinfo=UTC)
    running = [
        (t + timedelta(seconds=2), "arn:c"),
        (t, "arn:a"),
        (t + timedelta(seconds=5), "arn:me"),
        (t + timedelta(seconds=9), "arn:later"),
    ]
    assert plans.runs_ahead((t + timedelta(seconds=5), "arn:me"), running) == ["arn:a", "arn:c"]
    assert plans.runs_ahead((t, "arn:a"), running) == []


def test_two_runs_started_in_the_same_instant_never_wait_for_each_other():
    from datetime import datetime

    t = datetime(2026, 11, 28, tzinfo=UTC)
    running = [(t, "arn:x"), (t, "arn:y")]
    assert plans.runs_ahead((t, "arn:x"), running) == []
    assert plans.runs_ahead((t, "arn:y"), running) == ["arn:x"]


def test_the_deploys_that_can_supersede_a_queued_one_are_the_later_ones_newest_first():
    from datetime import datetime, timedelta

    t = datetime(2026, 11, 28, tzinfo=UTC)
    me = (t + timedelta(seconds=5), "arn:me")
    deploys = [(t, "arn:before"), me, (t + timedelta(seconds=7), "arn:newer"), (t + timedelta(seconds=9), "arn:newest")]
    assert plans.newer_deploys(me, deploys) == ["arn:newest", "arn:newer"]
    assert plans.newer_deploys((t + timedelta(seconds=9), "arn:newest"), deploys) == []
    assert plans.newer_deploys(me, [(t, "arn:before"), me]) == []
    # Two deploys started in the same instant are ordered by ARN as in runs_ahead: y waits for x
    # and is the newer of the two, so nothing supersedes it (x goes first and never asks).
    assert plans.newer_deploys((t, "arn:y"), [(t, "arn:x"), (t, "arn:y")]) == []
    assert plans.newer_deploys((t, "arn:x"), [(t, "arn:x"), (t, "arn:y")]) == ["arn:y"]


def test_a_skipped_commit_is_an_error_on_github_that_names_the_newer_commit():
    state = {"queue": {"superseded_by": {"execution": "x", "commit": "c0ffee" + "0" * 34}}}
    assert plans.status_state("superseded") == "error"
    assert plans.status_state("success") == "success" and plans.status_state("failure") == "failure"
    assert plans.status_description("superseded", "dev", state) == (
        "Not deployed to dev: skipped for c0ffee0, started after it"
    )


def test_the_commit_status_says_what_happened():
    import json

    state = {"nodes": {"current": ["i-1", "i-2"]}, "image": {"ami_id": "ami-1"}}
    assert plans.status_description("pending", "dev", {}) == "Deploying to dev"
    assert plans.status_description("success", "dev", state) == (
        "Deployed to dev: 2 nodes on ami-1; no stack file (stack.yml): nodes only"
    )
    with_stack = {
        **state,
        "stack": {"present": True, "path": "stack.yml"},
        "rollout": {"services": [{"name": "web", "updated": True}, {"name": "worker", "updated": False}]},
    }
    assert plans.status_description("success", "dev", with_stack) == (
        "Deployed to dev: 2 nodes on ami-1; 2 services, 1 updated"
    )
    lambda_error = {
        "Error": "NodesUnhealthy",
        "Cause": json.dumps({"errorMessage": "i-2: health command Failed\nmore", "errorType": "NodesUnhealthy"}),
    }
    assert plans.status_description("failure", "dev", {"error": lambda_error}) == (
        "Deploy to dev failed, the previous state stays: NodesUnhealthy: i-2: health command Failed"
    )
    assert plans.status_description("error", "prod", {"error": {"Error": "CommandFailed", "Cause": "retire"}}) == (
        "Deployed to prod; removing what it replaced failed (CommandFailed: retire)"
    )
    assert plans.status_description("failure", "dev", {}).endswith("unknown error")


def test_a_failed_undo_is_not_called_the_previous_state():
    state = {
        "error": {"Error": "NodesUnhealthy", "Cause": "x"},
        "undo_error": {"Error": "TeardownIncomplete", "Cause": "i-1 still shutting down"},
    }
    assert plans.status_description("failure", "dev", state) == (
        "Deploy to dev failed (NodesUnhealthy: x) and so did its undo "
        "(TeardownIncomplete: i-1 still shutting down): see the execution"
    )


def test_the_builds_source_is_the_whole_commit_readable_by_a_services_user():
    # Given GitHub's archive of a commit: one top folder, Unix modes only on executables (as git
    # archive writes a zip)
    import io
    import zipfile

    from chalicelib import plans

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        plain = zipfile.ZipInfo("octo-app-abc1234/web/app.py")
        plain.external_attr = 0x20  # MS-DOS attributes only, no Unix mode
        zf.writestr(plain, "print('hi')\n")
        run = zipfile.ZipInfo("octo-app-abc1234/bin/run")
        run.external_attr = 0o100755 << 16
        zf.writestr(run, "#!/bin/sh\n")
    archive.seek(0)
    # When the builds' source is made of it
    source = zipfile.ZipFile(io.BytesIO(plans.repository_source(archive)))
    # Then every file is at the root, plain files rw-r--r-- (not zipfile's 0600), executables kept
    modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in source.infolist()}
    assert modes == {"web/app.py": 0o644, "bin/run": 0o755}
