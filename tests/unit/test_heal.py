"""The heal's pure parts: which members the swarm lists whose instances are gone, the command
that forgets them, the heal's execution name, its input."""

import pytest

from chalicelib import deploy_input, plans, scripts
from chalicelib.aws.ssm import Invocation
from chalicelib.errors import InvalidInput

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def listing(*lines: str, status: str = "Success") -> Invocation:
    return Invocation(
        instance_id="i-manager", status=status, response_code=0, output="".join(f"{line}\n" for line in lines)
    )


def test_members_whose_instance_is_gone_are_forgotten():
    answer = listing(
        "ip-10-0-0-1 Ready Active", "ip-10-0-0-2 Down Active", "ip-10-0-0-3 Down Drain", "ip-10-0-0-9 Ready Active"
    )
    live = ["ip-10-0-0-1", "ip-10-0-0-2", "ip-10-0-0-3"]
    # 9: no instance has that name any more, though Swarm lists it Ready for a few heartbeats yet.
    assert scripts.gone_members(answer, ["ip-10-0-0-1"], live) == [
        "ip-10-0-0-2 down",
        "ip-10-0-0-3 down",
        "ip-10-0-0-9",
    ]
    # One the run keeps is handled by name (a node whose dockerd is down fails the gate instead).
    assert scripts.gone_members(answer, ["ip-10-0-0-1", "ip-10-0-0-2"], live) == ["ip-10-0-0-3 down", "ip-10-0-0-9"]


def test_a_down_member_beside_a_ready_one_of_the_same_name_is_gone():
    # A new instance took the dead one's address, and so its host name: only the Down entry goes.
    answer = listing("ip-10-0-0-5 Ready Active", "ip-10-0-0-5 Down Active")
    assert scripts.gone_members(answer, ["ip-10-0-0-5"], ["ip-10-0-0-5"]) == ["ip-10-0-0-5 down"]


def test_no_listing_no_member_is_gone():
    assert scripts.gone_members(listing("ip-10-0-0-2 Down Active", status="Failed"), [], []) == []


def test_the_retire_command_forgets_down_members_by_id_before_retiring():
    script = scripts.retire_script(["ip-old"], forget=["ip-gone", "ip-dup down"])
    assert script[0] == scripts.MARKERS["retire"]
    text = "\n".join(script)
    assert text.index("forget ip-gone") < text.index("forget ip-dup down") < text.index("retire ip-old")
    assert 'again docker node rm --force "$id"' in text and '[ "${2:-}" = down ] && [ "$status" = Ready ]' in text
    assert "forget()" not in "\n".join(scripts.retire_script(["ip-old"]))


def test_one_failure_names_one_heal():
    assert plans.heal_execution_name(COMMIT, 2993568) == "heal-0123456789ab-2993568"
    assert len(plans.heal_execution_name(COMMIT, 10**12)) <= 80  # Step Functions' limit


def test_a_heal_is_a_deploy_input_and_nothing_else_is_a_trigger():
    heal = deploy_input.parse({"repository": "a/b", "commit": COMMIT, "trigger": "heal"})
    assert heal.trigger == "heal" and heal.as_execution_input()["trigger"] == "heal"
    assert "trigger" not in deploy_input.parse({"repository": "a/b", "commit": COMMIT}).as_execution_input()
    with pytest.raises(InvalidInput, match="'trigger' must be push or heal"):
        deploy_input.parse({"repository": "a/b", "commit": COMMIT, "trigger": "cron"})
