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


def test_push_to_main_becomes_a_deploy_request_with_only_what_the_pipeline_needs():
    decision = webhook.decide("push", "delivery-1", _push(), ("main",))
    assert decision == webhook.DeployRequest("delivery-1", "octo/app", "refs/heads/main", COMMIT, "mona")
    assert decision.execution_input() == {
        "repository": "octo/app", "ref": "refs/heads/main", "commit": COMMIT,
        "pusher": "mona", "delivery_id": "delivery-1",
    }


@pytest.mark.parametrize("ref,patterns,deployed", [
    ("refs/heads/main", ("main",), True),
    ("refs/heads/release/1.2", ("release/*",), True),
    ("refs/heads/feature", ("main",), False),
    ("refs/tags/v1.0", ("main", "*"), False),
    ("refs/heads/mainline", ("main",), False),
])
def test_only_configured_branches_deploy(ref, patterns, deployed):
    decision = webhook.decide("push", "d", _push(ref=ref), patterns)
    assert isinstance(decision, webhook.DeployRequest) is deployed
    if not deployed:
        assert isinstance(decision, webhook.Ignore)


def test_branch_deletion_is_ignored():
    decision = webhook.decide("push", "d", _push(deleted=True, after="0" * 40), ("main",))
    assert isinstance(decision, webhook.Ignore)
    assert "deleted" in decision.reason


def test_forced_push_deploys_after():
    decision = webhook.decide("push", "d", _push(forced=True), ("main",))
    assert decision.commit == COMMIT


def test_ping_answers_with_the_hook_id():
    assert webhook.decide("ping", "d", b'{"zen": "Keep it simple.", "hook_id": 42}', ("main",)) == webhook.Pong(42)


def test_other_events_are_ignored_with_a_reason():
    decision = webhook.decide("issues", "d", b"{}", ("main",))
    assert decision == webhook.Ignore("event 'issues' is not deployed")


@pytest.mark.parametrize("body", [b"not json", b"[]", b"\xff\xfe", _push(after="xyz"),
                                  _push(repository="nope"), _push(ref=None)])
def test_unusable_push_bodies_are_refused_with_400(body):
    decision = webhook.decide("push", "d", body, ("main",))
    assert isinstance(decision, webhook.Refuse) and decision.status == 400
