"""Pure pipeline decisions, compared by equality; and the markers of the scripts, by which the
emulated nodes (slipway/nodes.py) recognise them."""

import dataclasses
import io
import zipfile
from collections.abc import Callable
from datetime import UTC

import pytest

from chalicelib import plans, rollout
from chalicelib.aws.ec2 import Node
from chalicelib.aws.ssm import Invocation
from chalicelib.errors import InvalidInput
from slipway.nodes import EmulatedNodes, Machine, Result, UnknownScript


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


def test_join_tokens_are_read_from_the_init_output():
    output = "noise\nmanager_token=SWMTKN-1-abc-def\nworker_token=SWMTKN-1-abc-ghi\n"
    assert plans.parse_tokens(output) == {"manager": "SWMTKN-1-abc-def", "worker": "SWMTKN-1-abc-ghi"}
    assert plans.parse_tokens("Error response from daemon") == {}


def test_health_verdict_names_each_failing_node_and_why():
    results = [
        Invocation("i-1", "Success", 0, "active\n"),
        Invocation("i-2", "Success", 0, "inactive\n"),
        Invocation("i-3", "Failed", 1, ""),
    ]
    assert plans.health_verdict(results) == {
        "i-2": "swarm state is 'inactive', expected 'active'",
        "i-3": "health command Failed (exit 1)",
    }


def test_the_managers_view_must_list_every_node_ready_and_active():
    hosts = {"i-1": "ip-1", "i-2": "ip-2", "i-3": "ip-3", "i-4": "ip-4"}
    view = Invocation(
        "i-1",
        "Success",
        0,
        "ip-1 Ready Active\nip-2 Down Active\nip-3 Ready Drain\nip-4 Down Active\nip-4 Ready Active\n",
    )
    assert plans.swarm_view_verdict(view, hosts) == {
        "i-2": "the swarm lists ip-2 as Down/Active, expected Ready/Active",
        "i-3": "the swarm lists ip-3 as Ready/Drain, expected Ready/Active",
    }  # ip-4: a stale entry of a removed node with the same name does not count against it
    assert plans.swarm_view_verdict(view, {"i-9": "ip-9"}) == {"i-9": "the swarm does not list ip-9"}
    failed = Invocation("i-1", "Failed", 1, "Error response from daemon: This node is not a swarm manager.")
    assert plans.swarm_view_verdict(failed, {"i-2": "ip-2"}) == {
        "i-2": "the manager i-1 could not list the swarm: Failed (exit 1)"
    }


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


def test_scripts_quote_what_they_interpolate():
    assert "docker swarm join --token 'SWMTKN-1-a;x'" in "\n".join(plans.join_script("SWMTKN-1-a;x", "10.0.0.1"))
    assert "for manager in 10.0.0.1:2377 '10.0.0.2;x:2377'; do" in plans.join_script("t", "10.0.0.1", "10.0.0.2;x")
    assert plans.retire_script(["ip-1; rm -rf /"])[-1] == "retire 'ip-1; rm -rf /'"
    assert plans.promote_script(["ip-1", "ip 2"])[-1] == "again docker node promote ip-1 'ip 2'"
    assert plans.prune_script("until=24h") == [plans.MARKERS["prune"], "docker system prune --force --filter until=24h"]


def test_old_images_beyond_the_newest_kept_go_unless_a_node_runs_them():
    images = [{"ImageId": f"ami-{n}", "CreationDate": f"2026-11-0{n}T00:00:00.000Z"} for n in range(1, 7)]
    assert plans.images_to_remove(images, in_use={"ami-1"}, keep=3) == ["ami-3", "ami-2"]
    assert plans.images_to_remove(images[:2], in_use=set(), keep=3) == []


def test_retire_drains_then_demotes_then_removes_and_fails_loudly():
    script = plans.retire_script(["ip-10-0-0-1", "ip-10-0-0-2"])
    assert script[:2] == [plans.MARKERS["retire"], "set -eu"] and "|| true" not in "\n".join(script)
    body = "\n".join(script[2:-2])
    assert body.index("drain") < body.index("demote") < body.index("rm --force")
    assert script[-2:] == ["retire ip-10-0-0-1", "retire ip-10-0-0-2"]


def test_new_nodes_go_where_there_are_fewest():
    assert plans.spread(3, {"a": 0, "b": 0, "c": 0}) == {"a": 1, "b": 1, "c": 1}
    assert plans.spread(2, {"a": 2, "b": 0, "c": 1}) == {"b": 2}  # 2, 2, 1: balanced
    assert plans.spread(4, {"a": 0, "b": 3}) == {"a": 4}  # 4, 3
    assert plans.spread(0, {"a": 0}) == {}


FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$LOG"
case "$*" in
  "node inspect --format {{.Spec.Role}} gone") echo "Error: No such node: gone" >&2; exit 1 ;;
  "node inspect --format {{.Spec.Role}} ip-election")
    if [ ! -e "$LOG.elected" ]; then touch "$LOG.elected"
      echo "Error response from daemon: rpc error: code = Unknown desc = raft: failed to process the request: node lost leader status" >&2; exit 1
    fi; echo worker ;;
  "node inspect --format {{.Spec.Role}} ip-m") echo manager ;;
  "node inspect --format {{.Spec.Role}} "*) echo worker ;;
  "node rm --force ip-stuck") echo "Error response from daemon: rpc error" >&2; exit 1 ;;
  "node inspect --format {{.ManagerStatus.Leader}} ip-leader") echo true ;;
  "node inspect --format {{.ManagerStatus.Leader}} "*) echo false ;;
esac
"""


def run_script(tmp_path, lines):
    import subprocess

    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "log"
    log.touch()
    done = subprocess.run(
        ["sh", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "LOG": str(log), "SWARM_RETRY_SECONDS": "0"},
    )
    return done, log.read_text().splitlines()


def test_the_retire_script_as_a_shell_runs_it(tmp_path):
    done, calls = run_script(tmp_path, plans.retire_script(["ip-m", "gone", "ip-w"]))
    assert done.returncode == 0, done.stderr
    assert "gone: not in the swarm" in done.stdout
    assert plans.left_swarm(done.stdout) == {"ip-m", "gone", "ip-w"}
    assert [c for c in calls if not c.startswith("node inspect")] == [
        "node update --availability drain ip-m",
        "node demote ip-m",
        "node rm --force ip-m",
        "node update --availability drain ip-w",
        "node rm --force ip-w",
    ]


def test_surplus_managers_of_a_smaller_swarm_are_demoted_after_the_retirements(tmp_path):
    # Three nodes scaled down to two: the two that stay were both managers, one is made a worker
    # after the old node has left; tried last listed first, the one the command runs on last.
    assert plans.surplus_managers(["i-a", "i-b"], 2, through="i-a") == (1, ("i-b", "i-a"))
    assert plans.surplus_managers(["i-a", "i-b"], 2, through="i-b") == (1, ("i-a", "i-b"))
    assert plans.surplus_managers(["i-a", "i-b", "i-c"], 3, through="i-a") == (0, ())
    five = ["i-a"] + [f"i-{n}" for n in range(4)]
    assert plans.surplus_managers(five, 9, through="i-a") == (2, ("i-3", "i-2", "i-1", "i-0", "i-a"))
    done, calls = run_script(tmp_path, plans.retire_script(["ip-w"], ["ip-b", "ip-a"], surplus=1))
    assert done.returncode == 0, done.stderr
    assert [c for c in calls if not c.startswith("node inspect --format {{.Spec.Role}}")] == [
        "node update --availability drain ip-w",
        "node rm --force ip-w",
        "node inspect --format {{.ManagerStatus.Leader}} ip-b",
        "node demote ip-b",
    ]
    assert plans.left_swarm(done.stdout) == {"ip-w"} and plans.demoted(done.stdout) == {"ip-b"}


def test_the_surplus_demotion_passes_over_the_leader(tmp_path):
    done, calls = run_script(tmp_path, plans.retire_script([], ["ip-leader", "ip-a", "ip-b"], surplus=1))
    assert done.returncode == 0, done.stderr
    assert [c for c in calls if c.startswith("node demote")] == ["node demote ip-a"]
    assert plans.demoted(done.stdout) == {"ip-a"}  # ip-b not asked: one was enough


def test_the_retire_script_waits_out_a_leader_election(tmp_path):
    done, calls = run_script(tmp_path, plans.retire_script(["ip-w", "ip-election", "ip-m"]))
    assert done.returncode == 0, done.stderr
    assert calls.count("node inspect --format {{.Spec.Role}} ip-election") == 2  # asked again
    assert plans.left_swarm(done.stdout) == {"ip-w", "ip-election", "ip-m"}


def test_the_retire_script_fails_when_a_removal_fails(tmp_path):
    done, calls = run_script(tmp_path, plans.retire_script(["ip-stuck", "ip-w"]))
    assert done.returncode != 0 and "rpc error" in done.stderr
    assert calls.count("node rm --force ip-stuck") == 45  # retried, then given up
    assert "node update --availability drain ip-w" not in calls  # it stops at the first failure
    assert plans.left_swarm(done.stdout) == set()


# --- markers: what a script is, for the emulated nodes (slipway/nodes.py) --------------------

# Every script plans.py writes, with sample arguments, and the kind of marker it must carry.
SCRIPTS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "init_script": ("swarm-init", plans.init_script),
    "join_script": ("swarm-join", lambda: plans.join_script("SWMTKN-1-a", "10.0.0.1", "10.0.0.2")),
    "HEALTH_SCRIPT": ("health", lambda: plans.HEALTH_SCRIPT),
    "NODE_LIST_SCRIPT": ("node-list", lambda: plans.NODE_LIST_SCRIPT),
    "promote_script": ("promote", lambda: plans.promote_script(["ip-1", "ip 2"])),
    "retire_script": ("retire", lambda: plans.retire_script(["ip-1"], ["ip-2"])),
    "prune_script": ("prune", lambda: plans.prune_script("until=24h", volumes=True)),
    "rollout.inspect_script": ("stack-inspect", lambda: rollout.inspect_script("dev", ["web:1"], {"ip-1": "k"})),
    "rollout.deploy_script": ("stack-deploy", lambda: rollout.deploy_script("dev", "b", "k", {"s-v1": "/p"}, ["x"])),
    "rollout.status_script": ("stack-status", lambda: rollout.status_script("dev")),
}


def test_the_scripts_listed_are_every_script_plans_writes() -> None:
    found = {
        f"{prefix}{name}"
        for module, prefix in ((plans, ""), (rollout, "rollout."))
        for name, value in vars(module).items()
        if (name.endswith("_script") and callable(value)) or name.endswith("_SCRIPT")
    }
    assert found == set(SCRIPTS), "list a new script in SCRIPTS, with the kind of its marker"
    assert sorted(kind for kind, _ in SCRIPTS.values()) == sorted(plans.MARKERS)  # one script a kind


def test_markers_are_one_line_shell_comments_one_per_kind() -> None:
    assert len(set(plans.MARKERS.values())) == len(plans.MARKERS)
    for kind, marker in plans.MARKERS.items():
        assert marker == plans.MARKER_PREFIX + kind and marker.startswith("# ") and "\n" not in marker


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_carries_exactly_one_known_marker_on_its_first_line(name: str) -> None:
    kind, build = SCRIPTS[name]
    script = build()
    assert script[0] == plans.MARKERS[kind] and plans.command_kind(script) == kind
    assert "\n".join(script).count(plans.MARKER_PREFIX) == 1


def test_the_kind_is_read_from_the_first_line_only() -> None:
    assert plans.command_kind([plans.MARKERS["health"], "docker info"]) == "health"
    assert plans.command_kind([plans.MARKERS["health"] + "\ndocker info"]) == "health"  # one command
    assert plans.command_kind(["  " + plans.MARKERS["prune"] + "  "]) == "prune"
    assert plans.command_kind(["set -eu", plans.MARKERS["health"]]) is None  # not first
    assert plans.command_kind(["# slipway:reboot", "reboot"]) is None  # no such kind
    assert plans.command_kind(["docker swarm init"]) is None
    assert plans.command_kind([]) is None


def test_a_marked_script_runs_in_a_shell_as_the_commands_after_its_marker(tmp_path) -> None:
    done, calls = run_script(tmp_path, plans.prune_script("until=24h"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert calls == ["system prune --force --filter until=24h"]
    done, calls = run_script(tmp_path, plans.HEALTH_SCRIPT)
    assert done.returncode == 0 and calls[-1] == "info --format {{.Swarm.LocalNodeState}}"


def emulated_nodes() -> EmulatedNodes:
    machines = {f"i-{n}": Machine(f"ip-{n}", f"10.0.0.{n}", True) for n in (1, 2, 3)}
    return EmulatedNodes(lambda: machines)


def test_emulated_nodes_answer_a_reworded_script_by_its_marker() -> None:
    nodes = emulated_nodes()
    init = nodes.run(
        "i-1",
        [
            plans.MARKERS["swarm-init"],
            "docker swarm init >/dev/null 2>&1 || :",
            'printf "manager_token=%s\\n" "$(docker swarm join-token -q manager)"',
            'printf "worker_token=%s\\n" "$(docker swarm join-token -q worker)"',
        ],
    )
    tokens = plans.parse_tokens(init.stdout)
    assert init.code == 0 and sorted(tokens) == ["manager", "worker"]
    joined = nodes.run(
        "i-2",
        [
            plans.MARKERS["swarm-join"],
            "for manager in 10.0.0.1:2377; do",
            f'  docker swarm join --token {tokens["worker"]} "$manager" && exit 0',
            "done",
            "exit 1",
        ],
    )
    assert joined.code == 0 and nodes.role("i-2") == "worker"
    state = [plans.MARKERS["health"], "docker info -f '{{.Swarm.LocalNodeState}}'"]
    assert nodes.run("i-2", state).stdout == "active\n"
    # The marker decides, whatever else the script mentions: a health check stays one.
    words = [plans.MARKERS["health"], "# neither docker swarm init nor docker system prune", *state[1:]]
    assert nodes.run("i-3", words).stdout == "inactive\n" and nodes.swarm_of("i-3") is None
    listed = nodes.run("i-1", [plans.MARKERS["node-list"], "docker node ls --format '{{json .}}'"])
    assert listed.code == 0 and sorted(listed.stdout.splitlines()) == ["ip-1 Ready Active", "ip-2 Ready Active"]
    promoted = nodes.run("i-1", [plans.MARKERS["promote"], "docker node promote ip-2"])
    assert promoted.code == 0 and nodes.role("i-2") == "manager"
    retired = nodes.run("i-1", [plans.MARKERS["retire"], 'retire() { docker node rm -f "$1"; }', "retire ip-2"])
    assert plans.left_swarm(retired.stdout) == {"ip-2"} and nodes.swarm_of("i-2") is None
    nodes.reclaimable["i-1"] = 1500
    assert plans.reclaimed_bytes(nodes.run("i-1", [plans.MARKERS["prune"], "docker system prune -f"]).stdout) == 1500


@pytest.mark.parametrize(
    "commands",
    [
        ["docker info --format '{{.Swarm.LocalNodeState}}'"],  # the health check as it was, unmarked
        ["set -eu", plans.MARKERS["health"], "docker info"],  # a marker, but not first
        ["# slipway:reboot", "reboot"],  # a marker of no known kind
        [],
    ],
)
def test_emulated_nodes_refuse_a_script_without_a_known_marker_naming_the_markers(commands: list[str]) -> None:
    nodes = emulated_nodes()
    nodes.broken.add("i-1")  # even a node that could not have run it says why
    with pytest.raises(UnknownScript, match=r"its first line must be one of plans\.MARKERS") as refused:
        nodes.run("i-1", commands)
    assert all(marker in str(refused.value) for marker in plans.MARKERS.values())
    assert nodes.history == []


def test_a_marked_script_without_what_its_kind_must_say_is_refused_naming_the_line() -> None:
    nodes = emulated_nodes()
    nodes.run("i-1", plans.init_script())
    with pytest.raises(UnknownScript, match=r"'# slipway:promote' script without a 'docker node promote <hosts>'"):
        nodes.run("i-1", [plans.MARKERS["promote"], "docker node update --role manager ip-2"])
    with pytest.raises(UnknownScript, match=r"'for manager in <address:2377...>; do'"):
        nodes.run("i-2", [plans.MARKERS["swarm-join"], "docker swarm join --token SWMTKN-1-a 10.0.0.1:2377"])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_emulated_nodes_answer_every_script_plans_writes(name: str) -> None:
    nodes = emulated_nodes()
    nodes.run("i-1", plans.init_script())
    assert isinstance(nodes.run("i-1", SCRIPTS[name][1]()), Result)  # never UnknownScript


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


def test_a_join_sent_again_waits_for_the_first_instead_of_joining_twice(tmp_path):
    states = tmp_path / "states"
    states.write_text("pending\npending\nactive\n")
    docker = tmp_path / "docker"
    docker.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path}/log
case "$1" in info) head -n1 {states}; sed -i 1d {states} ;; esac
""")
    docker.chmod(0o755)
    import subprocess

    done = subprocess.run(
        ["sh", "-c", "\n".join(plans.join_script("SWMTKN-1-a", "10.0.0.1"))],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert len(calls) == 3 and not any(c.startswith("swarm join") for c in calls)


def test_a_join_falls_back_to_the_next_manager_and_cancels_the_failed_attempt(tmp_path):
    docker = tmp_path / "docker"
    docker.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path}/log
case "$*" in
  info*) echo inactive ;;
  *10.0.0.1:2377) echo "Timeout was reached before node joined" >&2; exit 1 ;;
esac
""")
    docker.chmod(0o755)
    import subprocess

    script = plans.join_script("SWMTKN-1-a", "10.0.0.1", "10.0.0.2", "10.0.0.3")
    done = subprocess.run(
        ["sh", "-c", "\n".join(script)], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "log").read_text().splitlines()[1:] == [
        "swarm join --token SWMTKN-1-a 10.0.0.1:2377",
        "swarm leave --force",
        "swarm join --token SWMTKN-1-a 10.0.0.2:2377",
    ]


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
