"""`slipway demo --json`, as a newcomer's `make demo` runs it: one JSON document on stdout, the
deploy and the teardown succeeded, nothing left tagged, the commit's statuses pending then success."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slipway import PROJECT_DIR

pytestmark = pytest.mark.emulator


def test_the_demo_deploys_prunes_tears_down_and_prints_one_json_document():
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "demo", "--json"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # the whole of stdout: the functions' log lines go to stderr
    assert set(report) == {"deploy", "elapsed_s", "emulated", "ok", "prune", "teardown"}
    assert report["ok"] is True
    assert (report["deploy"]["status"], report["teardown"]["status"]) == ("SUCCEEDED", "SUCCEEDED")
    assert [s["state"] for s in report["deploy"]["github_statuses"]] == ["pending", "success"]
    assert report["deploy"]["instance_ids"] and report["prune"]["command_ids"]
    assert not any(report["teardown"]["leftover"].values()), report["teardown"]["leftover"]


def test_the_demo_deploys_an_application_repository_given_with_repo(tmp_path):
    # Given an application repository of one's own: a Dockerfile and a stack file, nothing else
    from slipway.harness import application_repository

    repo = application_repository(
        tmp_path / "my-app",
        {
            "Dockerfile": 'FROM python:3.12-slim\nCOPY site /srv\nCMD ["python3", "-m", "http.server", "8080"]\n',
            "site/index.html": "<h1>mine</h1>\n",
            "compose.yaml": 'services:\n  web:\n    build: .\n    ports: ["80:8080"]\n',
        },
    )
    # When the demo runs it, the stack file named by the shell's SLIPWAY_STACK_FILE
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "demo", "--json", "--repo", str(repo)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SLIPWAY_STACK_FILE": "compose.yaml"},
    )
    # Then its service is built from its own Dockerfile and deployed, then torn down with nothing left
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["deploy"]["status"] == "SUCCEEDED"
    assert [(b["name"], b["built"]) for b in report["deploy"]["builds"]] == [("web", True)]
    assert [s["name"] for s in report["deploy"]["services"]] == ["web"]
    assert report["deploy"]["stack_file"] == "compose.yaml"
    assert not any(report["teardown"]["leftover"].values()), report["teardown"]["leftover"]


def test_repo_must_be_a_git_repository(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "demo", "--repo", str(tmp_path)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and f"--repo {tmp_path}: not a git repository" in done.stderr
