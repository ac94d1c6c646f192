"""Pure webhook rules: the signature check and the push decision."""

import json

import pytest

from chalicelib import webhook
from slipway import PROJECT_DIR, github

GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
COMMIT = "d6fde92930d4715a2b49857d24b940956b26d2d3"


def test_githubs_documented_vector_is_accepted():
    assert webhook.signature_valid([GITHUB_SECRET], GITHUB_BODY, GITHUB_SIGNATURE)


@pytest.mark.parametrize(
    "header",
    [
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
    ],
)
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
    assert decision == webhook.DeployRequest("delivery-1", "octo/app", "refs/heads/main", BEFORE, COMMIT, "mona")
    assert decision.execution_input() == {
        "repository": "octo/app",
        "ref": "refs/heads/main",
        "commit": COMMIT,
        "pusher": "mona",
        "delivery_id": "delivery-1",
    }


@pytest.mark.parametrize(
    "ref,rules,deployed",
    [
        ("refs/heads/main", MAIN, True),
        ("refs/heads/release/1.2", webhook.Rules(branches=("release/*",)), True),
        ("refs/heads/feature", MAIN, False),
        ("refs/tags/v1.0", webhook.Rules(branches=("main", "*")), False),
        ("refs/tags/v1.0", webhook.Rules(branches=("main",), tags=("v*",)), True),
        ("refs/tags/nightly", webhook.Rules(branches=("main",), tags=("v*",)), False),
        ("refs/heads/mainline", MAIN, False),
        ("refs/remotes/origin/main", MAIN, False),
    ],
)
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
        403, "repository octo/app is not allowed to deploy here"
    )
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


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b"\xff\xfe", _push(after="xyz"), _push(repository="nope"), _push(ref=None)]
)
def test_unusable_push_bodies_are_refused_with_400(body):
    decision = webhook.decide("push", "d", body, MAIN)
    assert isinstance(decision, webhook.Refuse) and decision.status == 400


# --- hostile but correctly signed bodies (issue 16) ------------------------------------------


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_a_body_nested_beyond_the_parsers_depth_is_refused_with_400(depth, kind):
    # Given a body of JSON arrays or objects nested 100,000 levels deep (json.loads raises RecursionError)
    # When it is decided on
    decision = webhook.decide("push", "d", _nested(depth, kind), MAIN)
    # Then it is refused as a malformed body, not raised
    assert decision == webhook.Refuse(400, "body is nested too deeply to be a GitHub event")


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("depth", [500, 1_000, 5_000])
def test_a_body_nested_about_as_deep_as_the_recursion_limit_is_a_400_either_way(depth, kind):
    # Near the limit json.loads may parse it or give up, depending on the stack already in use:
    # either way the answer is a 400 (not an object, or no push in it).
    decision = webhook.decide("push", "d", _nested(depth, kind), MAIN)
    assert isinstance(decision, webhook.Refuse) and decision.status == 400
    assert decision.reason in (
        "body is nested too deeply to be a GitHub event",
        "body is not a JSON object",
        "push payload lacks ref, after or repository",
    )


def test_a_push_carrying_a_deeply_nested_field_is_refused_with_400():
    body = b'{"padding":' + _nested(100_000, "array") + b"," + _push()[1:]
    assert webhook.decide("push", "d", body, MAIN) == webhook.Refuse(
        400, "body is nested too deeply to be a GitHub event"
    )


def test_a_ping_nested_too_deeply_is_refused_too():
    assert webhook.decide("ping", "d", _nested(100_000, "object"), MAIN).status == 400


def _push_with(**repository_and_pusher) -> bytes:
    payload = json.loads(_push())
    if "full_name" in repository_and_pusher:
        payload["repository"]["full_name"] = repository_and_pusher["full_name"]
    if "pusher" in repository_and_pusher:
        payload["pusher"]["name"] = repository_and_pusher["pusher"]
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    "full_name,problem",
    [
        ("a-b/c;rm -rf ~", "name must be 1-100 letters, digits, '.', '-' or '_', and not '.' or '..'"),
        ("octo/" + "r" * 101, "name must be 1-100 letters"),
        ("o" * 40 + "/app", "owner must be 1-39 letters, digits or single hyphens"),
        ("-octo/app", "owner must be 1-39 letters, digits or single hyphens"),
        ("octo/..", "not '.' or '..'"),
        ("octo", "must be 'owner/name'"),
        ("octo/app\n", "name must be 1-100 letters"),
    ],
)
def test_a_push_whose_full_name_github_never_allows_is_refused_naming_the_field(full_name, problem):
    # Given a signed push whose repository.full_name GitHub would not allow
    # When it is decided on
    decision = webhook.decide("push", "d", _push_with(full_name=full_name), MAIN)
    # Then it is a 400 that names repository.full_name and the rule, not a deployment
    assert isinstance(decision, webhook.Refuse) and decision.status == 400
    assert decision.reason.startswith("repository.full_name ") and problem in decision.reason


def test_a_forged_full_name_is_refused_before_the_allow_list_echoes_it():
    rules = webhook.Rules(branches=("main",), repositories=("octo/app",))
    decision = webhook.decide("push", "d", _push_with(full_name="x/" + "y" * 100_000), rules)
    assert decision.status == 400 and len(decision.reason) < 300


def test_an_overlong_pusher_is_cut_not_refused():
    # Given a signed push whose pusher.name is 100,000 characters
    decision = webhook.decide("push", "d", _push_with(pusher="p" * 100_000), MAIN)
    # Then it deploys, with the pusher cut to GitHub's longest name
    assert isinstance(decision, webhook.DeployRequest)
    assert decision.execution_input()["pusher"] == "p" * 255
    assert len(json.dumps(decision.execution_input())) < 1024


@pytest.mark.parametrize(
    "ref,problem",
    [
        ("refs/heads/" + "m" * 100_000, "ref is longer than 266 bytes"),
        ("refs/heads/main\n", "ref has a character or sequence git refuses"),
        ("refs/heads/a..b", "ref has a character or sequence git refuses"),
        ("refs/heads/.main", "ref has a component starting with '.'"),
        ("main", "ref must start with refs/"),
    ],
)
def test_a_malformed_ref_is_refused_with_400_not_ignored(ref, problem):
    decision = webhook.decide("push", "d", _push(ref=ref), webhook.Rules(branches=("*",)))
    assert isinstance(decision, webhook.Refuse) and decision.status == 400
    assert decision.reason.startswith(problem)


def test_an_after_with_a_trailing_newline_is_not_a_commit_id():
    assert webhook.decide("push", "d", _push(after=COMMIT + "\n"), MAIN) == webhook.Refuse(
        400, "'after' is not a commit id"
    )


@pytest.mark.parametrize("delivery", ["x" * 65, "///", "😀", "\t"])
def test_a_push_with_a_malformed_delivery_id_is_refused(delivery):
    decision = webhook.decide("push", delivery, _push(), MAIN)
    assert isinstance(decision, webhook.Refuse) and decision.status == 400
    assert decision.reason.startswith("X-GitHub-Delivery must be a GUID")


def test_a_deploy_request_built_with_an_invalid_field_has_no_execution_input():
    from chalicelib.errors import InvalidInput

    forged = webhook.DeployRequest("d", "a-b/c;rm -rf ~", "refs/heads/main", BEFORE, COMMIT, "mona")
    with pytest.raises(InvalidInput) as refused:
        forged.execution_input()
    assert str(refused.value).startswith("execution input 'repository' name must be")


@pytest.mark.parametrize("before", ["\ud800", "x" * 100_000, "", "g" * 40, 0, []])
def test_a_before_that_is_not_a_commit_id_is_refused(before):
    # `before` names the execution: a lone surrogate in it could not even be hashed.
    assert webhook.decide("push", "d", _push(before=before), MAIN) == webhook.Refuse(400, "'before' is not a commit id")


def test_a_push_without_before_still_deploys():
    payload = json.loads(_push())
    del payload["before"]
    assert webhook.decide("push", "d", json.dumps(payload).encode(), MAIN).before == ""


# --- deploying when a workflow succeeds (SLIPWAY_DEPLOY_WORKFLOW) -----------------------------------

CI = webhook.Rules(branches=("main",), workflow="CI")


def _run(**options) -> bytes:
    return json.dumps(github.workflow_run_payload(repository="octo/app", head_sha=COMMIT, **options)).encode()


def test_a_named_workflow_that_succeeded_on_a_deploying_branch_deploys_its_commit():
    decision = webhook.decide("workflow_run", "delivery-1", _run(), CI)
    assert isinstance(decision, webhook.DeployRequest)
    assert (decision.repository, decision.ref, decision.commit, decision.pusher) == (
        "octo/app",
        "refs/heads/main",
        COMMIT,
        "octocat",
    )
    # A redelivery names the same execution; a re-run of the workflow another
    again = webhook.decide("workflow_run", "delivery-2", _run(), CI)
    rerun = webhook.decide("workflow_run", "delivery-3", _run(attempt=2), CI)
    assert isinstance(again, webhook.DeployRequest) and isinstance(rerun, webhook.DeployRequest)
    assert decision.execution_name() == again.execution_name() != rerun.execution_name()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"conclusion": "failure"}, "workflow 'CI' ended failure: nothing to deploy"),
        ({"action": "requested"}, "workflow run requested, not completed"),
        ({"workflow": "Lint"}, "workflow 'Lint' is not 'CI' (SLIPWAY_DEPLOY_WORKFLOW)"),
        ({"branch": ""}, "the workflow run has no branch"),
        ({"branch": "feature/x"}, "refs/heads/feature/x is not deployed"),
        ({"event": "pull_request"}, "workflow run for a pull_request event, not a push"),
        ({"head_repository": "mallory/app"}, "workflow run of commits from mallory/app, not this repository"),
    ],
)
def test_other_workflow_runs_are_ignored_saying_why(options, why):
    decision = webhook.decide("workflow_run", "d", _run(**options), CI)
    assert isinstance(decision, webhook.Ignore) and why in decision.reason


def test_with_a_deploy_workflow_pushes_do_not_deploy_and_without_one_workflow_runs_do_not():
    pushed = webhook.decide("push", "d", _push(), CI)
    assert isinstance(pushed, webhook.Ignore) and "when workflow 'CI' succeeds" in pushed.reason
    ran = webhook.decide("workflow_run", "d", _run(), MAIN)
    assert isinstance(ran, webhook.Ignore) and ran.reason == "event 'workflow_run' is not deployed"


def test_a_workflow_run_is_checked_as_a_push_is():
    forged = json.loads(_run())
    forged["workflow_run"]["head_sha"] = "not-a-commit"
    assert webhook.decide("workflow_run", "d", json.dumps(forged).encode(), CI) == webhook.Refuse(
        400, "'after' is not a commit id"
    )
    other = webhook.Rules(branches=("main",), repositories=("octo/other",), workflow="CI")
    assert webhook.decide("workflow_run", "d", _run(), other).status == 403  # type: ignore[union-attr]


def test_the_fields_read_of_a_workflow_run_are_githubs_own():
    # Given GitHub's webhook payload schema (@octokit/webhooks-schemas, package.json pins it)
    schema_path = PROJECT_DIR / "node_modules" / "@octokit" / "webhooks-schemas" / "schema.json"
    if not schema_path.exists():
        pytest.fail("run `npm ci` (make does): @octokit/webhooks-schemas is what this is checked against")
    definitions = json.loads(schema_path.read_text())["definitions"]
    completed = definitions["workflow_run$completed"]
    assert completed["properties"]["action"]["enum"] == ["completed"]
    run = definitions["workflow-run"]
    props = run["properties"]
    # Then every field webhook.py reads is there, required, with the type it reads it as
    for field, kinds in {
        "name": {"string"},
        "head_branch": {"string"},  # never null in the schema; an empty one is ignored all the same
        "head_sha": {"string"},
        "id": {"integer"},
        "run_attempt": {"integer"},
    }.items():
        assert field in run["required"], field
        declared = props[field]["type"]
        assert set(declared if isinstance(declared, list) else [declared]) == kinds, field
    assert "success" in completed["properties"]["workflow_run"]["allOf"][1]["properties"]["conclusion"]["enum"]
    assert props["actor"]["$ref"] == "#/definitions/user" and "login" in definitions["user"]["required"]
    # And the test payload carries each of them
    sent = github.workflow_run_payload(head_sha=COMMIT)
    assert set(run["required"]) >= set(sent["workflow_run"]) - {"status", "conclusion"}
    assert props["event"]["type"] == "string" and "head_repository" in run["required"]
