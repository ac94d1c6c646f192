"""The deploy execution's input: what a push or a person may start a run with, and what is refused."""

import json

import pytest

from chalicelib import deploy_input
from chalicelib.deploy_input import DeployInput, parse
from chalicelib.errors import InvalidInput

COMMIT = "d6fde92930d4715a2b49857d24b940956b26d2d3"


def test_a_run_started_by_hand_needs_only_repository_and_commit():
    # Given the smallest input the console can be given
    # When it is parsed
    parsed = parse({"repository": "example/app", "commit": COMMIT})
    # Then the optional fields are empty and the execution input has every field
    assert parsed == DeployInput("example/app", "", COMMIT, "", "")
    assert parsed.as_execution_input() == {
        "repository": "example/app",
        "ref": "",
        "commit": COMMIT,
        "pusher": "",
        "delivery_id": "",
    }


def test_the_webhooks_input_parses_back_to_itself():
    # Given the input the webhook starts an execution with, through JSON as Step Functions keeps it
    given = DeployInput(
        "octo-org/app.web_1", "refs/tags/v1.2.3", COMMIT, "mona", "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    )
    # When it is parsed back
    # Then nothing is lost or changed
    assert parse(json.loads(json.dumps(given.as_execution_input()))) == given


def test_an_upper_case_commit_is_taken_in_lower_case_and_optional_nulls_are_empty():
    parsed = parse({"repository": "a/b", "commit": COMMIT.upper(), "ref": None, "pusher": None})
    assert (parsed.commit, parsed.ref, parsed.pusher) == (COMMIT, "", "")


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "octocat/Hello-World",
        "a-b-c/x",
        "A1/..x",
        "o" * 39 + "/" + "r" * 100,
        "o/.github",
        "o/_",
        "o/...",
    ],
)
def test_repository_names_github_allows_are_valid(name):
    assert deploy_input.valid_repository(name), deploy_input.repository_problem(name)


@pytest.mark.parametrize(
    "name,problem",
    [
        ("a-b/c;rm -rf ~", "name must be 1-100 letters"),
        ("octo", "must be 'owner/name'"),
        ("octo/app/extra", "name must be 1-100 letters"),
        ("/app", "owner must be 1-39"),
        ("-octo/app", "owner must be 1-39"),
        ("octo-/app", "owner must be 1-39"),
        ("oc--to/app", "owner must be 1-39"),
        ("oc_to/app", "owner must be 1-39"),
        ("o" * 40 + "/app", "owner must be 1-39"),
        ("octo/", "name must be 1-100 letters"),
        ("octo/.", "not '.' or '..'"),
        ("octo/..", "not '.' or '..'"),
        ("octo/" + "r" * 101, "name must be 1-100 letters"),
        ("octo/app\n", "name must be 1-100 letters"),
        ("octo/äpp", "name must be 1-100 letters"),
        ("0ctо/app", "owner must be 1-39"),  # a Cyrillic 'о'
    ],
)
def test_repository_names_github_never_allows_are_refused_naming_the_part(name, problem):
    # Given a name GitHub would not let anyone create
    # When the execution input is parsed
    with pytest.raises(InvalidInput) as refused:
        parse({"repository": name, "commit": COMMIT})
    # Then the error names the field and the rule it breaks
    assert str(refused.value).startswith("execution input 'repository' ")
    assert problem in str(refused.value)
    assert not deploy_input.valid_repository(name)


def test_a_refusal_quotes_at_most_a_little_of_the_value():
    with pytest.raises(InvalidInput) as refused:
        parse({"repository": "octo/" + "x" * 100_000, "commit": COMMIT})
    assert len(str(refused.value)) < 300


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main",
        "refs/heads/release/1.2",
        "refs/tags/v1.0.0",
        "refs/heads/feature/ü-umlaut",
        "refs/heads/" + "b" * 255,
        "refs/heads/a.b",
        "refs/heads/@",
        "refs/heads/x@y",
    ],
)
def test_branch_and_tag_refs_are_valid(ref):
    assert parse({"repository": "a/b", "commit": COMMIT, "ref": ref}).ref == ref


@pytest.mark.parametrize(
    "ref,problem",
    [
        ("main", "must start with refs/"),
        ("refs/heads/", "must not end with '/'"),
        ("refs/heads/a..b", "git refuses"),
        ("refs/heads/a b", "git refuses"),
        ("refs/heads/a\nb", "git refuses"),
        ("refs/heads/a\x00", "git refuses"),
        ("refs/heads/a\x7f", "git refuses"),
        ("refs/heads/a\x85", "git refuses"),
        ("refs/heads/a~1", "git refuses"),
        ("refs/heads/a^", "git refuses"),
        ("refs/heads/a:b", "git refuses"),
        ("refs/heads/a?", "git refuses"),
        ("refs/heads/a*", "git refuses"),
        ("refs/heads/a[b", "git refuses"),
        ("refs/heads/a\\b", "git refuses"),
        ("refs/heads/a@{1}", "git refuses"),
        ("refs/heads//a", "git refuses"),
        ("refs/heads/a.", "must not end with '/' or '.'"),
        ("refs/heads/.hidden", "starting with '.'"),
        ("refs/heads/x.lock", "ending with '.lock'"),
        ("refs/heads/x.lock/y", "ending with '.lock'"),
        ("refs/heads/" + "b" * 256, "longer than 266 bytes"),
        ("refs/heads/" + "é" * 128, "longer than 266 bytes"),  # 256 bytes of UTF-8
        ("refs/heads/\ud800", "not valid Unicode"),
        ("refs/remotes/origin/main", "must be a branch (refs/heads/...) or a tag (refs/tags/...)"),
        ("refs/pull/1/head", "must be a branch"),
    ],
)
def test_refs_git_or_the_pipeline_cannot_use_are_refused(ref, problem):
    with pytest.raises(InvalidInput) as refused:
        parse({"repository": "a/b", "commit": COMMIT, "ref": ref})
    assert str(refused.value).startswith("execution input 'ref' ")
    assert problem in str(refused.value)


def test_a_well_formed_ref_in_another_namespace_is_a_valid_ref_but_not_a_deployable_one():
    # The webhook ignores such a push (202) instead of refusing it: only a malformed ref is a 400.
    assert deploy_input.valid_ref("refs/remotes/origin/main")
    assert deploy_input.deployable_ref_problem("refs/remotes/origin/main")


@pytest.mark.parametrize(
    "commit",
    [
        "",
        "d6fde92",
        COMMIT[:-1],
        COMMIT + "0",
        COMMIT + "\n",
        "g" * 40,
        " " + COMMIT[1:],
        "０" * 40,
    ],
)
def test_anything_but_a_full_commit_id_is_refused(commit):
    with pytest.raises(InvalidInput) as refused:
        parse({"repository": "a/b", "commit": commit})
    assert str(refused.value).startswith("execution input 'commit' ")
    assert "must be 40 lower-case hex characters" in str(refused.value) or "must not be empty" in str(refused.value)


def test_an_overlong_pusher_is_cut_to_githubs_longest_name_not_refused():
    # Given a pusher name of 100,000 characters
    # When the input is parsed
    parsed = parse({"repository": "a/b", "commit": COMMIT, "pusher": "p" * 100_000})
    # Then the run starts with the first 255 of them
    assert parsed.pusher == "p" * deploy_input.MAX_PUSHER == "p" * 255


def test_a_pusher_loses_control_characters_separators_and_lone_surrogates():
    assert deploy_input.cut_pusher("mo\x00na\n\u2028\ud800 lisa\x1b[31m") == "mona lisa[31m"
    assert deploy_input.cut_pusher("Ｍöna 🐙") == "Ｍöna 🐙"


def test_a_deploy_input_cannot_be_built_with_an_uncut_pusher():
    with pytest.raises(InvalidInput) as refused:
        DeployInput("a/b", "", COMMIT, "p" * 256)
    assert "execution input 'pusher' must be at most 255 characters" in str(refused.value)


@pytest.mark.parametrize("delivery_id", ["72d3162e-cc78-11e3-81ab-4c9367dc0958", "d", "delivery-abc", "x" * 64])
def test_guid_like_delivery_ids_are_valid(delivery_id):
    assert parse({"repository": "a/b", "commit": COMMIT, "delivery_id": delivery_id}).delivery_id == delivery_id


@pytest.mark.parametrize("delivery_id", ["x" * 65, "///", "a b", "😀", "\t", "{72d3162e}", "id\n"])
def test_other_delivery_ids_are_refused(delivery_id):
    with pytest.raises(InvalidInput) as refused:
        parse({"repository": "a/b", "commit": COMMIT, "delivery_id": delivery_id})
    assert str(refused.value).startswith("execution input 'delivery_id' must be a GUID")


@pytest.mark.parametrize(
    "raw,message",
    [
        (None, "execution input must be a JSON object with at least 'repository' and 'commit', got NoneType"),
        ([], "execution input must be a JSON object with at least 'repository' and 'commit', got list"),
        ("a/b", "execution input must be a JSON object with at least 'repository' and 'commit', got str"),
        ({"commit": COMMIT}, "execution input needs 'repository'"),
        ({"repository": "a/b"}, "execution input needs 'commit'"),
        ({"repository": "", "commit": COMMIT}, "execution input 'repository' must not be empty"),
        ({"repository": 7, "commit": COMMIT}, "execution input 'repository' must be a string, got int"),
        (
            {"repository": "a/b", "commit": COMMIT, "ref": ["refs/heads/main"]},
            "execution input 'ref' must be a string, got list",
        ),
        (
            {"repository": "a/b", "commit": COMMIT, "pusher": {"name": "mona"}},
            "execution input 'pusher' must be a string, got dict",
        ),
        (
            {"repository": "a/b", "commit": COMMIT, "refs": "refs/heads/main"},
            "execution input has unknown field(s) 'refs'; "
            "expected repository, ref, commit, pusher, delivery_id, trigger",
        ),
    ],
)
def test_inputs_of_the_wrong_shape_are_refused_naming_the_field(raw, message):
    with pytest.raises(InvalidInput) as refused:
        parse(raw)
    assert str(refused.value) == message


def test_every_valid_input_is_far_below_step_functions_256_kib():
    # Given every field at its longest, in the characters that take most room in JSON
    biggest = parse(
        {
            "repository": "o" * 39 + "/" + "r" * 100,
            "commit": COMMIT,
            "ref": "refs/heads/" + "b" * 255,
            "pusher": "\U0001f419" * 100_000,
            "delivery_id": "d" * 64,
        }
    )
    # Then the execution input, as the webhook sends it, is a few KiB at most
    assert len(json.dumps(biggest.as_execution_input(), sort_keys=True).encode()) < 4096
