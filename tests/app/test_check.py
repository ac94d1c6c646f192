"""`slipway check`, as a user runs it in their repository before a push (or from a pre-commit hook):
exit 1 with every problem, 0 with the warnings; the repository as git will commit it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from slipway.harness import application_repository, git

COMPOSE = """\
services:
  web:
    image: nginx:${TAG}
    env_file: web.env
    volumes: ["./site:/usr/share/nginx/html:ro", "./nginx.conf:/etc/nginx/nginx.conf:ro"]
"""


def check(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slipway.cli", "check", *args], cwd=repo, capture_output=True, text=True, timeout=60
    )


def test_every_problem_is_listed_with_exit_1_and_fixing_them_passes(tmp_path):
    repo = application_repository(
        tmp_path / "app", {"compose.yaml": COMPOSE, "site/index.html": "<p>hi</p>\n", "nginx.conf": "events {}\n"}
    )
    done = check(repo)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("compose.yaml: 3 problems; the first: ")
    assert any("web.env is not in the commit" in line for line in lines)
    assert any("binds the folder site" in line for line in lines)
    assert any("${TAG} has no value" in line for line in lines)
    # The same with a variable named, the env file committed and the folder built into the image
    (repo / "web.env").write_text("A=1\n")
    (repo / "compose.yaml").write_text(COMPOSE.replace('"./site:/usr/share/nginx/html:ro", ', ""))
    git(repo, "add", "-A")
    done = check(repo, "--var", "TAG=1.27")
    assert done.returncode == 0, done.stderr
    assert "warning: services.web.volumes[0]: nginx.conf is mounted read-only from the repository" in done.stdout
    assert done.stdout.splitlines()[-1] == "compose.yaml: deploys 1 service (web); uses the variables TAG"


def test_a_file_git_ignores_is_not_read_as_the_commit_will_not_have_it(tmp_path):
    repo = application_repository(
        tmp_path / "app", {"compose.yaml": "services:\n  web:\n    image: nginx:${TAG}\n", ".gitignore": ".env\n"}
    )
    (repo / ".env").write_text("TAG=1.27\n")
    done = check(repo, "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["file"] == "compose.yaml"
    assert report["problems"][0].startswith("${TAG} has no value")


def test_a_named_file_in_a_subfolder_and_no_file_at_all(tmp_path):
    repo = application_repository(tmp_path / "app", {"deploy/stack.yml": "services:\n  web:\n    image: nginx\n"})
    assert check(repo / "deploy", "stack.yml").returncode == 0
    done = check(repo)
    assert done.returncode == 1 and "slipway check: no stack.yml, stack.yaml, compose.yaml" in done.stderr
