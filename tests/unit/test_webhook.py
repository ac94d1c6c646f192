"""Pure webhook rules: the signature check and the push decision."""

import json

import pytest

from chalicelib import webhook
from slipway import github

GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
COMMIT = "d6fde92930d4715a2b49857d24b940956b26d2d3"


def test_githubs_documented_vector_is_accepted():
    assert webhook.signature_valid([GITHUB_SECRET], GITHUB_BODY, GITHUB_SIGNATURE)


@pytest.mark.parametrize("header", [
    None,
    "",
    "sha256=",
    "sha1=" + "0" * 40,
    GITHUB_SIGNATURE[:-1],
    GITHUB_SIGNATURE + "0",
    GITHUB_SIGNATURE.upper(),
    "sha256=" + "g" * 64,
    "sha256=" + "é" * 64,
    "sha256=" + "0" * 64,
    "SHA256=" + GITHUB_SIGNATURE[7:],
])
def test_malformed_or_wrong_signatures_are_rejected(header):
    assert not webhook.signature_valid([GITHUB_SECRET], GITHUB_BODY, header)


def test_previous_secret_is_accepted_during_rotation():
    assert webhook.signature_valid([b"new secret", GITHUB_SECRET], GITHUB_BODY, GITHUB_SIGNATURE)
    assert not webhook.signature_valid([b"new secret"], GITHUB_BODY, GITHUB_SIGNATURE)


def test_no_secret_accepts_nothing():
    assert not webhook.signature_valid([], GITHUB_BODY, GITHUB_SIGNATURE)


def _push(**overrides) -> bytes:
    payload = github.push_payload(repository="octo/app", after=COMMIT, pusher="mona")
    payload.update(overrides)
    return json.dumps(payload).encode()


MAIN = webhook.Rules(branches=("main",))
BEFORE = "0" * 40


def test_push_to_main_becomes_a_deploy_request_with_only_what_the_pipeline_needs():
    decision = webhook.decide("push", "delivery-1", _push(), MAIN)
    assert decision == webhook.DeployRequest("delivery-1", "octo/app", "refs/heads/main", BEFORE,
                                             COMMIT, "mona")
    assert decision.execution_input() == {
        "repository": "octo/app", "ref": "refs/heads/main", "commit": COMMIT,
        "pusher": "mona", "delivery_id": "delivery-1",
    }


@pytest.mark.parametrize("ref,rules,deployed", [
    ("refs/heads/main", MAIN, True),
    ("refs/heads/release/1.2", webhook.Rules(branches=("release/*",)), True),
    ("refs/heads/feature", MAIN, False),
    ("refs/tags/v1.0", webhook.Rules(branches=("main", "*")), False),
    ("refs/tags/v1.0", webhook.Rules(branches=("main",), tags=("v*",)), True),
    ("refs/tags/nightly", webhook.Rules(branches=("main",), tags=("v*",)), False),
    ("refs/heads/mainline", MAIN, False),
    ("refs/remotes/origin/main", MAIN, False),
])
def test_only_configured_branches_and_tags_deploy(ref, rules, deployed):
    decision = webhook.decide("push", "d", _push(ref=ref), rules)
    assert isinstance(decision, webhook.DeployRequest) is deployed
    if not deployed:
        assert isinstance(decision, webhook.Ignore)


def test_branch_deletion_is_ignored():
    decision = webhook.decide("push", "d", _push(deleted=True, after="0" * 40), MAIN)
    assert isinstance(decision, webhook.Ignore)
    assert "deleted" in decision.reason and decision.code == "deleted"


def test_forced_push_deploys_after():
    decision = webhook.decide("push", "d", _push(forced=True), MAIN)
    assert decision.commit == COMMIT


def test_repository_outside_the_allow_list_is_forbidden():
    rules = webhook.Rules(branches=("main",), repositories=("octo/other",))
    assert webhook.decide("push", "d", _push(), rules) == webhook.Refuse(
        403, "repository octo/app is not allowed to deploy here")
    allowed = webhook.Rules(branches=("main",), repositories=("octo/app",))
    assert isinstance(webhook.decide("push", "d", _push(), allowed), webhook.DeployRequest)


def request(delivery="d1", repository="octo/app", ref="refs/heads/main", before="1" * 40):
    return webhook.DeployRequest(delivery, repository, ref, before, COMMIT, "mona")


def test_one_push_has_one_execution_name_whoever_delivers_it():
    name = request().execution_name()
    assert request(delivery="another-hook").execution_name() == name
    assert len(name) <= 80 and name.startswith(COMMIT[:12])
    assert set(name) <= set("0123456789abcdef-")


def test_a_later_push_of_the_same_commit_is_another_deployment():
    assert request(before="2" * 40).execution_name() != request().execution_name()
    assert request(repository="octo/fork").execution_name() != request().execution_name()


def test_ping_answers_with_the_hook_id():
    assert webhook.decide("ping", "d", b'{"zen": "Keep it simple.", "hook_id": 42}', MAIN) == webhook.Pong(42)


def test_other_events_are_ignored_with_a_reason():
    decision = webhook.decide("issues", "d", b"{}", MAIN)
    assert decision == webhook.Ignore("event 'issues' is not deployed", "event")


@pytest.mark.parametrize("body", [b"not json", b"[]", b"\xff\xfe", _push(after="xyz"),
                                  _push(repository="nope"), _push(ref=None)])
def test_unusable_push_bodies_are_refused_with_400(body):
    decision = webhook.decide("push", "d", body, MAIN)
    assert isinstance(decision, webhook.Refuse) and decision.status == 400
