"""The GitHub adapter against the local stand-in: trees read, unknown commits refused, outages retried."""

import pytest

from chalicelib.aws import github
from chalicelib.errors import GitHubRefused, InvalidInput, TransientError
from slipway.github_api import FakeGitHub


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
