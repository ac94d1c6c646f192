"""The GitHub adapter against the local stand-in: trees read, unknown commits refused, outages retried."""

import pytest

from chalicelib import github
from chalicelib.errors import GitHubRefused, InvalidInput, TransientError
from slipway.emulator.github import FakeGitHub


@pytest.fixture
def fake():
    server = FakeGitHub()
    server.start()
    yield server
    server.stop()


def test_top_level_trees_are_read(fake):
    fake.trees["abc1234"] = {"ansible": "1" * 40, "packer": "2" * 40}
    assert github.top_level_trees(fake.url, "octo/app", "abc1234") == {"ansible": "1" * 40, "packer": "2" * 40}
    assert fake.requests == ["/repos/octo/app/git/trees/abc1234"]


def test_this_checkouts_commits_have_their_real_tree_ids(fake):
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    expected = subprocess.run(["git", "rev-parse", "HEAD:ansible"], capture_output=True, text=True).stdout.strip()
    assert github.top_level_trees(fake.url, "octo/app", head)["ansible"] == expected


def test_unknown_commit_is_invalid_input(fake):
    fake.missing.add("deadbee")
    with pytest.raises(InvalidInput, match="no commit deadbee"):
        github.top_level_trees(fake.url, "octo/app", "deadbee")


def test_unreachable_github_is_transient():
    with pytest.raises(TransientError):
        github.top_level_trees("http://127.0.0.1:9", "octo/app", "abc1234")


def test_a_commits_archive_is_streamed_into_a_file(fake, tmp_path):
    import zipfile

    with open(tmp_path / "a.zip", "w+b") as archive:
        size = github.download_archive(fake.url, "octo/app", "abc1234", archive)
        assert size == archive.tell() > 0
        archive.seek(0)
        names = zipfile.ZipFile(archive).namelist()
    assert "octo-app-abc1234/packer/buildspec.yml" in names
    assert fake.requests == ["/repos/octo/app/zipball/abc1234"]


def test_the_archive_of_an_unknown_commit_is_invalid_input(fake, tmp_path):
    fake.missing.add("deadbee")
    with open(tmp_path / "a.zip", "w+b") as archive, pytest.raises(InvalidInput, match="deadbee"):
        github.download_archive(fake.url, "octo/app", "deadbee", archive)


SHA = "a" * 40


def test_a_commit_status_is_posted_with_the_token(fake):
    fake.token = "ghp_test"
    github.set_status(
        fake.url,
        "octo/app",
        SHA,
        "ghp_test",
        state="success",
        description="Deployed",
        target_url="https://console/x",
        context="slipway/dev",
    )
    assert fake.statuses == [
        {
            "repository": "octo/app",
            "sha": SHA,
            "state": "success",
            "description": "Deployed",
            "target_url": "https://console/x",
            "context": "slipway/dev",
        }
    ]


def test_a_long_description_is_cut_to_what_github_accepts(fake):
    fake.token = "t"
    github.set_status(
        fake.url, "octo/app", SHA, "t", state="failure", description="x" * 500, target_url="", context="slipway/dev"
    )
    assert len(fake.statuses[0]["description"]) == 140 and fake.statuses[0]["description"].endswith("…")


def test_a_token_without_write_access_is_refused_not_retried(fake):
    fake.token = "the-right-one"
    with pytest.raises(GitHubRefused, match="401"):
        github.set_status(
            fake.url, "octo/app", SHA, "another", state="pending", description="", target_url="", context="slipway/dev"
        )
    fake.token, fake.status_answer = "t", 403
    with pytest.raises(GitHubRefused, match="403"):
        github.set_status(
            fake.url, "octo/app", SHA, "t", state="pending", description="", target_url="", context="slipway/dev"
        )


@pytest.mark.parametrize(
    "code,headers", [(502, {}), (429, {}), (403, {"x-ratelimit-remaining": "0"}), (403, {"retry-after": "60"})]
)
def test_an_outage_or_a_rate_limit_is_transient(fake, code, headers):
    fake.token, fake.status_answer, fake.status_headers = "t", code, headers
    with pytest.raises(TransientError):
        github.set_status(
            fake.url, "octo/app", SHA, "t", state="pending", description="", target_url="", context="slipway/dev"
        )


def test_only_githubs_four_states_are_sent(fake):
    with pytest.raises(ValueError, match="one of"):
        github.set_status(
            fake.url, "octo/app", SHA, "t", state="ok", description="", target_url="", context="slipway/dev"
        )
    assert fake.requests == []


def test_a_malformed_request_is_refused_and_a_secondary_rate_limit_waited_for(fake):
    fake.token, fake.status_answer = "t", 400
    with pytest.raises(GitHubRefused, match="400"):
        github.set_status(
            fake.url, "octo/app", SHA, "t", state="pending", description="", target_url="", context="slipway/dev"
        )
    fake.status_answer, fake.status_message = 403, "You have exceeded a secondary rate limit."
    with pytest.raises(TransientError):
        github.set_status(
            fake.url, "octo/app", SHA, "t", state="pending", description="", target_url="", context="slipway/dev"
        )


def test_a_connection_dropped_before_the_answer_is_transient():
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def drop():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()  # no status line at all

    threading.Thread(target=drop, daemon=True).start()
    try:
        with pytest.raises(TransientError):
            github.set_status(
                f"http://127.0.0.1:{listener.getsockname()[1]}",
                "octo/app",
                SHA,
                "t",
                state="pending",
                description="",
                target_url="",
                context="slipway/dev",
            )
    finally:
        listener.close()


# --- deployments -----------------------------------------------------------------------------


def deploy_to(fake, environment="dev", commit=SHA, payload=None):
    return github.create_deployment(
        fake.url, "octo/app", commit, "t", environment=environment, description="Slipway deploys", payload=payload
    )


def test_a_deployment_is_created_for_the_commit_and_its_statuses_set(fake):
    fake.token = "t"
    deployment_id = deploy_to(fake, payload={"execution": "run-1"})
    [deployment] = fake.deployments
    assert deployment["id"] == deployment_id and deployment["sha"] == SHA and deployment["environment"] == "dev"
    assert deployment["payload"] == {"execution": "run-1"} and deployment["production_environment"] is False
    assert fake.received[-1]["body"] == {
        "ref": SHA,
        "auto_merge": False,
        "required_contexts": [],
        "payload": {"execution": "run-1"},
        "environment": "dev",
        "description": "Slipway deploys",
        "transient_environment": False,
        "production_environment": False,
    }
    github.set_deployment_status(
        fake.url, "octo/app", deployment_id, "t", state="in_progress", description="Deploying", log_url="https://c/x"
    )
    github.set_deployment_status(
        fake.url,
        "octo/app",
        deployment_id,
        "t",
        state="success",
        description="x" * 500,
        environment_url="http://lb.example",
        log_url="https://c/x",
    )
    assert fake.deployment_states(deployment_id) == ["in_progress", "success"]
    in_progress, success = fake.deployment_statuses
    assert in_progress["log_url"] == "https://c/x" and in_progress["environment_url"] == ""
    assert success["environment_url"] == "http://lb.example" and len(success["description"]) == 140
    assert fake.received[-1]["body"]["auto_inactive"] is False  # Slipway marks the replaced one itself
    assert github.latest_state(fake.url, "octo/app", deployment_id, "t") == "success"


def test_a_production_environment_is_said_to_be_one(fake):
    fake.token = "t"
    deploy_to(fake, environment="prod")
    deploy_to(fake, environment="production")
    assert [d["production_environment"] for d in fake.deployments] == [True, True]


def test_only_a_commit_is_deployed_and_only_githubs_states_are_sent(fake):
    fake.token = "t"
    with pytest.raises(ValueError, match="40 hexadecimal"):
        deploy_to(fake, commit="main")
    with pytest.raises(ValueError, match="one of"):
        github.set_deployment_status(fake.url, "octo/app", 1, "t", state="done", description="")
    assert fake.received == []


def test_a_merged_branch_answer_creates_no_deployment(fake):
    fake.token, fake.deployment_answer = "t", 202
    assert deploy_to(fake) is None


def test_deployment_refusals_are_refused_and_outages_transient(fake):
    fake.token = "right"
    with pytest.raises(GitHubRefused, match=r"deployment of octo/app@aaaaaaaaaaaa to dev \(401\): .*deployments"):
        github.create_deployment(fake.url, "octo/app", SHA, "wrong", environment="dev", description="")
    fake.token = "t"
    for code in (403, 404, 409, 422):
        fake.deployment_answer = code
        with pytest.raises(GitHubRefused, match=str(code)):
            deploy_to(fake)
    fake.deployment_answer = None
    with pytest.raises(GitHubRefused, match="404"):
        github.set_deployment_status(fake.url, "octo/app", 7, "t", state="success", description="")  # no such one
    for code, headers in ((502, {}), (429, {}), (403, {"x-ratelimit-remaining": "0"})):
        fake.deployment_answer, fake.status_headers = code, headers
        with pytest.raises(TransientError):
            deploy_to(fake)
        with pytest.raises(TransientError):
            github.previous_success(fake.url, "octo/app", "t", environment="dev", current=10)
    with pytest.raises(TransientError):
        github.create_deployment("http://127.0.0.1:9", "octo/app", SHA, "t", environment="dev", description="")


def test_a_runs_deployment_is_found_again_by_its_payload(fake):
    fake.token = "t"
    first = deploy_to(fake, payload={"execution": "run-1"})
    second = deploy_to(fake, payload={"execution": "run-2"})
    deploy_to(fake, environment="prod", payload={"execution": "run-2"})
    find = github.find_deployment
    assert find(fake.url, "octo/app", "t", environment="dev", commit=SHA, payload={"execution": "run-1"}) == first
    assert find(fake.url, "octo/app", "t", environment="dev", commit=SHA, payload={"execution": "run-2"}) == second
    assert find(fake.url, "octo/app", "t", environment="dev", commit="b" * 40, payload={"execution": "run-1"}) is None
    assert fake.received[-1]["query"] == {"environment": ["dev"], "sha": ["b" * 40], "per_page": ["30"], "page": ["1"]}


def test_the_replaced_deployment_is_the_newest_other_success(fake):
    fake.token = "t"

    def run(state):
        deployment_id = deploy_to(fake)
        github.set_deployment_status(fake.url, "octo/app", deployment_id, "t", state="in_progress", description="")
        if state:
            github.set_deployment_status(fake.url, "octo/app", deployment_id, "t", state=state, description="")
        return deployment_id

    older, replaced, failed, skipped, current, newer = (
        run(s) for s in ("inactive", "success", "failure", "inactive", None, None)
    )
    assert github.previous_success(fake.url, "octo/app", "t", environment="dev", current=current) == replaced
    assert github.previous_success(fake.url, "octo/app", "t", environment="prod", current=current) is None
    assert github.previous_success(fake.url, "octo/app", "t", environment="dev", current=replaced) is None
    assert older < replaced < failed < skipped < current < newer
    # Two pushes close together may create their deployments in either order: the run that deploys
    # first can have the higher id, and is still the one the other replaces.
    racing = run("success")
    assert github.previous_success(fake.url, "octo/app", "t", environment="dev", current=current) == racing


def test_listing_the_deployments_is_bounded(fake):
    fake.token = "t"
    for _ in range(github.PAGE_SIZE * github.MAX_PAGES + 5):
        deploy_to(fake)
    newest = fake.deployments[-1]["id"]
    found = list(github.deployments(fake.url, "octo/app", "t", environment="dev"))
    assert len(found) == github.PAGE_SIZE * github.MAX_PAGES and found[0]["id"] == newest
    fake.received.clear()
    assert github.previous_success(fake.url, "octo/app", "t", environment="dev", current=newest + 1) is None
    statuses = [r for r in fake.received if r["path"].endswith("/statuses")]
    assert len(statuses) == github.MAX_EXAMINED


def test_the_fake_marks_earlier_successes_inactive_as_githubs_auto_inactive_does(fake):
    # Outside production environments only, and only when the status does not say otherwise.
    fake.token = "t"
    first, second, third = deploy_to(fake), deploy_to(fake), deploy_to(fake)
    github.set_deployment_status(fake.url, "octo/app", first, "t", state="success", description="")
    github.set_deployment_status(fake.url, "octo/app", second, "t", state="success", description="")
    assert fake.deployment_states(first) == ["success"]  # Slipway's statuses say auto_inactive false
    github.set_deployment_status(fake.url, "octo/app", third, "t", state="success", description="", auto_inactive=True)
    assert fake.deployment_states(first) == ["success", "inactive"]
    assert fake.deployment_states(second) == ["success", "inactive"]
