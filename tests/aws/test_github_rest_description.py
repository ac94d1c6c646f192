"""Every request the GitHub adapter can make, as the local stand-in received it, held to GitHub's
own REST description: the operation (method and path template) exists, its path and query
parameters are declared ones of the right type, and its JSON body has every required property,
no undeclared one, and values of the declared types and enums. The stand-in's answers to the
deployments endpoints are held to the response schemas too (the adapter reads them).

The description's operations are vendored in tests/fixtures/github-rest/operations.json, made by
extract.py beside it (its `source` says from which copy of the file)."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from typing import Any

import pytest

from chalicelib import github
from slipway.emulator.github import FakeGitHub
from tests.github_rest import DESCRIPTION, FIXTURE, check, request_problems, schema_problems

SHA = "c" * 40


# --- the adapter's requests ------------------------------------------------------------------


@pytest.fixture
def fake():
    server = FakeGitHub()
    server.token = "t"
    server.trees[SHA] = {"ansible": "1" * 40, "packer": "2" * 40}
    server.files[SHA] = {"stack.yml": b"services: {}\n", "deploy/stack.yml": b"services: {}\n"}
    server.start()
    yield server
    server.stop()


def every_request(fake: FakeGitHub, tmp_path: Path) -> list[dict[str, Any]]:
    """Call every function of the adapter that talks to GitHub, each way it can be called."""
    api = fake.url
    github.top_level_trees(api, "octo/app", SHA, "t")
    github.top_level_trees(api, "octo/app", SHA)
    assert github.file_at(api, "octo/app", SHA, "stack.yml", "t") is not None
    assert github.file_at(api, "octo/app", SHA, "deploy/stack.yml") is not None
    with open(tmp_path / "a.zip", "w+b") as archive:
        github.download_archive(api, "octo/app", SHA, archive, "t")
    for state in github.STATES:
        github.set_status(
            api,
            "octo/app",
            SHA,
            "t",
            state=state,
            description="x" * 200,
            target_url="https://c/x",
            context="slipway/dev",
        )
    github.set_status(api, "octo/app", SHA, "t", state="pending", description="", target_url="", context="slipway/dev")
    first = github.create_deployment(api, "octo/app", SHA, "t", environment="dev", description="Slipway deploys")
    second = github.create_deployment(
        api, "octo/app", SHA, "t", environment="prod", description="Slipway deploys", payload={"execution": "run-2"}
    )
    assert first is not None and second is not None
    for state in github.DEPLOYMENT_STATES:
        github.set_deployment_status(api, "octo/app", first, "t", state=state, description="x" * 200)
    github.set_deployment_status(
        api,
        "octo/app",
        second,
        "t",
        state="success",
        description="Deployed",
        environment_url="http://lb.example",
        log_url="https://c/x",
        auto_inactive=True,
    )
    github.find_deployment(api, "octo/app", "t", environment="prod", commit=SHA, payload={"execution": "run-2"})
    github.previous_success(api, "octo/app", "t", environment="dev", current=second)
    github.latest_state(api, "octo/app", second, "t")
    fake.deployment_answer = 202
    assert github.create_deployment(api, "octo/app", SHA, "t", environment="dev", description="") is None
    return fake.received


def test_every_request_of_the_adapter_is_one_githubs_description_allows(fake, tmp_path):
    found = check(every_request(fake, tmp_path))
    assert {name: problems for name, problems in found.items() if problems} == {}
    # Every vendored operation was exercised: none is kept that the adapter does not call.
    vendored = {f"{m.upper()} {path}" for path, methods in DESCRIPTION["operations"].items() for m in methods}
    assert set(found) == vendored


def test_the_check_finds_what_github_would_refuse(fake, tmp_path):
    # The check itself: wrong requests are named, so a passing test above means something.
    def problems(method, path, body=None, query=None):
        request = {
            "method": method,
            "path": path,
            "query": query or {},
            "headers": {"Content-Type": "application/json"},
            "body": body,
        }
        return request_problems(request)[1]

    deployments = "/repos/octo/app/deployments"
    assert problems("POST", deployments, {"environment": "dev"}) == ["body.ref: required, missing"]
    assert problems("POST", deployments, {"ref": SHA, "auto_merge": "no"}) == ["body.auto_merge: str, not boolean"]
    assert problems("POST", deployments, {"ref": SHA, "wait": True}) == [
        "body.wait: not a property the description declares"
    ]
    assert problems("POST", deployments, {"ref": SHA, "payload": [1]}) == ["body.payload: fits 0 of oneOf's 2"]
    assert problems("POST", deployments + "/1/statuses", {"state": "done"})[0].startswith(
        "body.state: 'done' is not one of"
    )
    assert problems("GET", deployments, query={"per_page": ["all"]}) == ["query per_page: str, not integer"]
    assert problems("GET", deployments, query={"state": ["success"]}) == [
        "query state: not a parameter of GET /repos/{owner}/{repo}/deployments"
    ]
    assert problems("POST", "/repos/octo/app/statuses/" + SHA, {"state": "inactive"})[0].startswith("body.state")
    assert problems("GET", deployments + "/x/statuses") == ["path deployment_id: str, not integer"]
    with pytest.raises(AssertionError, match="0 operations"):
        problems("DELETE", deployments)
    assert schema_problems({"$ref": "#/components/schemas/deployment"}, {"id": 1}, "answer", strict=False)


def test_the_vendored_description_is_what_extract_py_makes_of_its_source():
    # The fixture's source says which copy it was extracted from; its operations are the ones
    # extract.py lists, and nothing in it refers to a component it does not hold.
    source = DESCRIPTION["source"]
    assert source["repository"] == "github/rest-api-description"
    assert source["path"] == "descriptions/api.github.com/api.github.com.json"
    assert source["commit"] or source["read"]["from"]
    listed = runpy.run_path(str(FIXTURE.with_name("extract.py")))["OPERATIONS"]
    held = [(path, method) for path, methods in DESCRIPTION["operations"].items() for method in methods]
    assert sorted(listed) == sorted(held)
    text = json.dumps({"operations": DESCRIPTION["operations"], "components": DESCRIPTION["components"]})
    for ref in set(re.findall(r'"\$ref": "(#/components/[^"]+)"', text)):
        _, _, kind, name = ref.split("/")
        assert name in DESCRIPTION["components"].get(kind, {}), ref
