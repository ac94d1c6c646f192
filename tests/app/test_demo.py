"""`slipway demo --json`, as a newcomer's `make demo` runs it: one JSON document on stdout, the
deploy and the teardown succeeded, nothing left tagged, the commit's statuses pending then success."""

from __future__ import annotations

import json
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
