"""The scripts sent to the nodes (chalicelib/scripts.py, and the stack's in chalicelib/rollout.py):
what they say, how they behave when a shell runs them against a fake docker, the parsers of their
output, and the markers by which the emulated nodes (slipway/emulator/nodes.py) recognise them."""

from collections.abc import Callable

import pytest

from chalicelib import plans, rollout, scripts
from chalicelib.aws.ssm import Invocation
from slipway.emulator.nodes import EmulatedNodes, Machine, Result, UnknownScript


def test_join_tokens_are_read_from_the_init_output():
    output = "noise\nmanager_token=SWMTKN-1-abc-def\nworker_token=SWMTKN-1-abc-ghi\n"
    assert scripts.parse_tokens(output) == {"manager": "SWMTKN-1-abc-def", "worker": "SWMTKN-1-abc-ghi"}
    assert scripts.parse_tokens("Error response from daemon") == {}


def test_health_verdict_names_each_failing_node_and_why():
    results = [
        Invocation("i-1", "Success", 0, "active\n"),
        Invocation("i-2", "Success", 0, "inactive\n"),
        Invocation("i-3", "Failed", 1, ""),
    ]
    assert scripts.health_verdict(results) == {
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
    assert scripts.swarm_view_verdict(view, hosts) == {
        "i-2": "the swarm lists ip-2 as Down/Active, expected Ready/Active",
        "i-3": "the swarm lists ip-3 as Ready/Drain, expected Ready/Active",
    }  # ip-4: a stale entry of a removed node with the same name does not count against it
    assert scripts.swarm_view_verdict(view, {"i-9": "ip-9"}) == {"i-9": "the swarm does not list ip-9"}
    failed = Invocation("i-1", "Failed", 1, "Error response from daemon: This node is not a swarm manager.")
    assert scripts.swarm_view_verdict(failed, {"i-2": "ip-2"}) == {
        "i-2": "the manager i-1 could not list the swarm: Failed (exit 1)"
    }


def test_scripts_quote_what_they_interpolate():
    assert "docker swarm join --token 'SWMTKN-1-a;x'" in "\n".join(scripts.join_script("SWMTKN-1-a;x", "10.0.0.1"))
    assert "for manager in 10.0.0.1:2377 '10.0.0.2;x:2377'; do" in scripts.join_script("t", "10.0.0.1", "10.0.0.2;x")
    assert scripts.retire_script(["ip-1; rm -rf /"])[-1] == "retire 'ip-1; rm -rf /'"
    assert scripts.promote_script(["ip-1", "ip 2"])[-1] == "again docker node promote ip-1 'ip 2'"
    assert scripts.prune_script("until=24h") == [
        scripts.MARKERS["prune"],
        "docker system prune --force --filter until=24h",
    ]


def test_retire_drains_then_demotes_then_removes_and_fails_loudly():
    script = scripts.retire_script(["ip-10-0-0-1", "ip-10-0-0-2"])
    assert script[:2] == [scripts.MARKERS["retire"], "set -eu"] and "|| true" not in "\n".join(script)
    body = "\n".join(script[2:-2])
    assert body.index("drain") < body.index("demote") < body.index("rm --force")
    assert script[-2:] == ["retire ip-10-0-0-1", "retire ip-10-0-0-2"]


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
    done, calls = run_script(tmp_path, scripts.retire_script(["ip-m", "gone", "ip-w"]))
    assert done.returncode == 0, done.stderr
    assert "gone: not in the swarm" in done.stdout
    assert scripts.left_swarm(done.stdout) == {"ip-m", "gone", "ip-w"}
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
    done, calls = run_script(tmp_path, scripts.retire_script(["ip-w"], ["ip-b", "ip-a"], surplus=1))
    assert done.returncode == 0, done.stderr
    assert [c for c in calls if not c.startswith("node inspect --format {{.Spec.Role}}")] == [
        "node update --availability drain ip-w",
        "node rm --force ip-w",
        "node inspect --format {{.ManagerStatus.Leader}} ip-b",
        "node demote ip-b",
    ]
    assert scripts.left_swarm(done.stdout) == {"ip-w"} and scripts.demoted(done.stdout) == {"ip-b"}


def test_the_surplus_demotion_passes_over_the_leader(tmp_path):
    done, calls = run_script(tmp_path, scripts.retire_script([], ["ip-leader", "ip-a", "ip-b"], surplus=1))
    assert done.returncode == 0, done.stderr
    assert [c for c in calls if c.startswith("node demote")] == ["node demote ip-a"]
    assert scripts.demoted(done.stdout) == {"ip-a"}  # ip-b not asked: one was enough


def test_the_retire_script_waits_out_a_leader_election(tmp_path):
    done, calls = run_script(tmp_path, scripts.retire_script(["ip-w", "ip-election", "ip-m"]))
    assert done.returncode == 0, done.stderr
    assert calls.count("node inspect --format {{.Spec.Role}} ip-election") == 2  # asked again
    assert scripts.left_swarm(done.stdout) == {"ip-w", "ip-election", "ip-m"}


def test_the_retire_script_fails_when_a_removal_fails(tmp_path):
    done, calls = run_script(tmp_path, scripts.retire_script(["ip-stuck", "ip-w"]))
    assert done.returncode != 0 and "rpc error" in done.stderr
    assert calls.count("node rm --force ip-stuck") == 45  # retried, then given up
    assert "node update --availability drain ip-w" not in calls  # it stops at the first failure
    assert scripts.left_swarm(done.stdout) == set()


# --- markers: what a script is, for the emulated nodes (slipway/emulator/nodes.py) --------------------

# Every script sent to the nodes, with sample arguments, and the kind of marker it must carry.
SCRIPTS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "init_script": ("swarm-init", scripts.init_script),
    "join_script": ("swarm-join", lambda: scripts.join_script("SWMTKN-1-a", "10.0.0.1", "10.0.0.2")),
    "HEALTH_SCRIPT": ("health", lambda: scripts.HEALTH_SCRIPT),
    "NODE_LIST_SCRIPT": ("node-list", lambda: scripts.NODE_LIST_SCRIPT),
    "promote_script": ("promote", lambda: scripts.promote_script(["ip-1", "ip 2"])),
    "retire_script": ("retire", lambda: scripts.retire_script(["ip-1"], ["ip-2"])),
    "prune_script": ("prune", lambda: scripts.prune_script("until=24h", volumes=True)),
    "rollout.inspect_script": ("stack-inspect", lambda: rollout.inspect_script("dev", ["web:1"], {"ip-1": "k"})),
    "rollout.deploy_script": ("stack-deploy", lambda: rollout.deploy_script("dev", "b", "k", {"s-v1": "/p"}, ["x"])),
    "rollout.status_script": ("stack-status", lambda: rollout.status_script("dev")),
}


def test_the_scripts_listed_are_every_script_slipway_sends() -> None:
    found = {
        f"{prefix}{name}"
        for module, prefix in ((scripts, ""), (rollout, "rollout."))
        for name, value in vars(module).items()
        if (name.endswith("_script") and callable(value)) or name.endswith("_SCRIPT")
    }
    assert found == set(SCRIPTS), "list a new script in SCRIPTS, with the kind of its marker"
    assert sorted(kind for kind, _ in SCRIPTS.values()) == sorted(scripts.MARKERS)  # one script a kind


def test_markers_are_one_line_shell_comments_one_per_kind() -> None:
    assert len(set(scripts.MARKERS.values())) == len(scripts.MARKERS)
    for kind, marker in scripts.MARKERS.items():
        assert marker == scripts.MARKER_PREFIX + kind and marker.startswith("# ") and "\n" not in marker


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_carries_exactly_one_known_marker_on_its_first_line(name: str) -> None:
    kind, build = SCRIPTS[name]
    script = build()
    assert script[0] == scripts.MARKERS[kind] and scripts.command_kind(script) == kind
    assert "\n".join(script).count(scripts.MARKER_PREFIX) == 1


def test_the_kind_is_read_from_the_first_line_only() -> None:
    assert scripts.command_kind([scripts.MARKERS["health"], "docker info"]) == "health"
    assert scripts.command_kind([scripts.MARKERS["health"] + "\ndocker info"]) == "health"  # one command
    assert scripts.command_kind(["  " + scripts.MARKERS["prune"] + "  "]) == "prune"
    assert scripts.command_kind(["set -eu", scripts.MARKERS["health"]]) is None  # not first
    assert scripts.command_kind(["# slipway:reboot", "reboot"]) is None  # no such kind
    assert scripts.command_kind(["docker swarm init"]) is None
    assert scripts.command_kind([]) is None


def test_a_marked_script_runs_in_a_shell_as_the_commands_after_its_marker(tmp_path) -> None:
    done, calls = run_script(tmp_path, scripts.prune_script("until=24h"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert calls == ["system prune --force --filter until=24h"]
    done, calls = run_script(tmp_path, scripts.HEALTH_SCRIPT)
    assert done.returncode == 0 and calls[-1] == "info --format {{.Swarm.LocalNodeState}}"


def emulated_nodes() -> EmulatedNodes:
    machines = {f"i-{n}": Machine(f"ip-{n}", f"10.0.0.{n}", True) for n in (1, 2, 3)}
    return EmulatedNodes(lambda: machines)


def test_emulated_nodes_answer_a_reworded_script_by_its_marker() -> None:
    nodes = emulated_nodes()
    init = nodes.run(
        "i-1",
        [
            scripts.MARKERS["swarm-init"],
            "docker swarm init >/dev/null 2>&1 || :",
            'printf "manager_token=%s\\n" "$(docker swarm join-token -q manager)"',
            'printf "worker_token=%s\\n" "$(docker swarm join-token -q worker)"',
        ],
    )
    tokens = scripts.parse_tokens(init.stdout)
    assert init.code == 0 and sorted(tokens) == ["manager", "worker"]
    joined = nodes.run(
        "i-2",
        [
            scripts.MARKERS["swarm-join"],
            "for manager in 10.0.0.1:2377; do",
            f'  docker swarm join --token {tokens["worker"]} "$manager" && exit 0',
            "done",
            "exit 1",
        ],
    )
    assert joined.code == 0 and nodes.role("i-2") == "worker"
    state = [scripts.MARKERS["health"], "docker info -f '{{.Swarm.LocalNodeState}}'"]
    assert nodes.run("i-2", state).stdout == "active\n"
    # The marker decides, whatever else the script mentions: a health check stays one.
    words = [scripts.MARKERS["health"], "# neither docker swarm init nor docker system prune", *state[1:]]
    assert nodes.run("i-3", words).stdout == "inactive\n" and nodes.swarm_of("i-3") is None
    listed = nodes.run("i-1", [scripts.MARKERS["node-list"], "docker node ls --format '{{json .}}'"])
    assert listed.code == 0 and sorted(listed.stdout.splitlines()) == ["ip-1 Ready Active", "ip-2 Ready Active"]
    promoted = nodes.run("i-1", [scripts.MARKERS["promote"], "docker node promote ip-2"])
    assert promoted.code == 0 and nodes.role("i-2") == "manager"
    retired = nodes.run("i-1", [scripts.MARKERS["retire"], 'retire() { docker node rm -f "$1"; }', "retire ip-2"])
    assert scripts.left_swarm(retired.stdout) == {"ip-2"} and nodes.swarm_of("i-2") is None
    nodes.reclaimable["i-1"] = 1500
    assert (
        scripts.reclaimed_bytes(nodes.run("i-1", [scripts.MARKERS["prune"], "docker system prune -f"]).stdout) == 1500
    )


@pytest.mark.parametrize(
    "commands",
    [
        ["docker info --format '{{.Swarm.LocalNodeState}}'"],  # the health check as it was, unmarked
        ["set -eu", scripts.MARKERS["health"], "docker info"],  # a marker, but not first
        ["# slipway:reboot", "reboot"],  # a marker of no known kind
        [],
    ],
)
def test_emulated_nodes_refuse_a_script_without_a_known_marker_naming_the_markers(commands: list[str]) -> None:
    nodes = emulated_nodes()
    nodes.broken.add("i-1")  # even a node that could not have run it says why
    with pytest.raises(UnknownScript, match=r"its first line must be one of scripts\.MARKERS") as refused:
        nodes.run("i-1", commands)
    assert all(marker in str(refused.value) for marker in scripts.MARKERS.values())
    assert nodes.history == []


def test_a_marked_script_without_what_its_kind_must_say_is_refused_naming_the_line() -> None:
    nodes = emulated_nodes()
    nodes.run("i-1", scripts.init_script())
    with pytest.raises(UnknownScript, match=r"'# slipway:promote' script without a 'docker node promote <hosts>'"):
        nodes.run("i-1", [scripts.MARKERS["promote"], "docker node update --role manager ip-2"])
    with pytest.raises(UnknownScript, match=r"'for manager in <address:2377...>; do'"):
        nodes.run("i-2", [scripts.MARKERS["swarm-join"], "docker swarm join --token SWMTKN-1-a 10.0.0.1:2377"])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_emulated_nodes_answer_every_script_slipway_sends(name: str) -> None:
    nodes = emulated_nodes()
    nodes.run("i-1", scripts.init_script())
    assert isinstance(nodes.run("i-1", SCRIPTS[name][1]()), Result)  # never UnknownScript


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
        ["sh", "-c", "\n".join(scripts.join_script("SWMTKN-1-a", "10.0.0.1"))],
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

    script = scripts.join_script("SWMTKN-1-a", "10.0.0.1", "10.0.0.2", "10.0.0.3")
    done = subprocess.run(
        ["sh", "-c", "\n".join(script)], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "log").read_text().splitlines()[1:] == [
        "swarm join --token SWMTKN-1-a 10.0.0.1:2377",
        "swarm leave --force",
        "swarm join --token SWMTKN-1-a 10.0.0.2:2377",
    ]


def _join_with(tmp_path, answers: str, *managers: str):
    """Run the join script against a fake docker whose `swarm join` answers from `answers`, one
    line per attempt: "ok" joins, anything else is printed as the daemon's refusal."""
    (tmp_path / "answers").write_text(answers)
    docker = tmp_path / "docker"
    docker.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path}/log
case "$*" in
  info*) echo inactive ;;
  "swarm join"*) answer=$(head -n1 {tmp_path}/answers); sed -i 1d {tmp_path}/answers
    [ "$answer" = ok ] && exit 0; echo "Error response from daemon: $answer" >&2; exit 1 ;;
esac
""")
    docker.chmod(0o755)
    import subprocess

    done = subprocess.run(
        ["sh", "-c", "\n".join(scripts.join_script("SWMTKN-1-a", *managers))],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "SWARM_RETRY_SECONDS": "0"},
    )
    joins = [c for c in (tmp_path / "log").read_text().splitlines() if c.startswith("swarm join")]
    return done, joins


def test_a_join_during_a_leader_election_tries_every_manager_again(tmp_path):
    # The first manager is down and the second has no leader yet (a manager just went down): the
    # round is tried again, and the join goes through once a leader is elected.
    down = "rpc error: code = Unavailable desc = dial tcp 10.0.0.1:2377: connect: connection refused"
    no_leader = "rpc error: code = Unknown desc = The swarm does not have a leader."
    done, joins = _join_with(tmp_path, f"{down}\n{no_leader}\n{down}\nok\n", "10.0.0.1", "10.0.0.2")
    assert done.returncode == 0, done.stderr
    assert joins == [f"swarm join --token SWMTKN-1-a 10.0.0.{i}:2377" for i in (1, 2, 1, 2)]
    assert "does not have a leader" in done.stderr


def test_a_join_every_manager_refuses_for_another_reason_fails_at_once(tmp_path):
    done, joins = _join_with(tmp_path, "invalid join token\ninvalid join token\nok\n", "10.0.0.1", "10.0.0.2")
    assert done.returncode == 1 and "invalid join token" in done.stderr
    assert len(joins) == 2  # one round: the third answer, "ok", is never asked for


def test_a_join_waits_out_an_election_for_thirty_rounds_at_most(tmp_path):
    done, joins = _join_with(tmp_path, "node lost leader status\n" * 40 + "ok\n", "10.0.0.1")
    assert done.returncode == 1 and len(joins) == 30
