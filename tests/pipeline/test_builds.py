"""An application repository deploys as it is: its services built from the pushed commit (only those
whose sources changed), on Slipway's own node image, in an environment that belongs to it."""

import json
import os
from pathlib import Path

import pytest

from chalicelib import naming
from slipway.harness import application_repository, deploy, git, history, tagged, teardown
from slipway.harness import commit_files as commit

STACK = """\
services:
  api:
    build: ./api
    ports: ["80:8080"]
  web:
    build:
      context: ./web
      args: {GREETING: hello}
      secrets: [npm_token]
  worker:
    build:
      context: ./worker
      dockerfile: ../docker/worker.Dockerfile
secrets:
  npm_token:
    external: true
"""
SECRET_VALUE = "npm-token-that-must-stay-in-ssm"


@pytest.fixture
def app_repo(tmp_path) -> Path:
    """A three-service application repository: no packer/, no ansible/, a Dockerfile per service."""
    return application_repository(
        tmp_path / "app",
        {
            "stack.yml": STACK,
            "README.md": "# app\n",
            "api/Dockerfile": "FROM python:3.12-slim\nCOPY . /srv\n",
            "api/main.py": "print('api')\n",
            "web/Dockerfile": "FROM python:3.12-slim\nRUN --mount=type=secret,id=npm_token true\nCOPY . /srv\n",
            "web/index.html": "<p>hi</p>\n",
            "docker/worker.Dockerfile": "FROM python:3.12-slim\nCOPY . /srv\n",
            "worker/run.py": "print('work')\n",
        },
    )


@pytest.fixture
def app(make_emulator, app_repo):
    emu = make_emulator(repo=app_repo, node_count=1, extra_environment={"SLIPWAY_STACK_FILE": "stack.yml"})
    emu.client("ssm").put_parameter(
        Name=naming.secret_parameter(emu.environment, "npm_token"), Value=SECRET_VALUE, Type="SecureString"
    )
    return emu


def built(run) -> list[str]:
    return sorted(s["name"] for s in run.output["builds"]["services"] if s["built"])


def updated(run) -> list[str]:
    return sorted(s["name"] for s in run.output["rollout"]["services"] if s["updated"])


def test_a_push_builds_only_the_services_whose_sources_changed(app, app_repo):
    # Given an application repository of three services, pushed for the first time
    first = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    # Then every service is built and deployed, on the installation's node image
    assert first.status == "SUCCEEDED", first.error
    assert built(first) == updated(first) == ["api", "web", "worker"]
    assert first.output["deployment"]["image_source"] == "installation"
    assert first.output["deployment"]["image_key"] == os.environ["SLIPWAY_NODE_IMAGE_KEY"]
    images = {s["name"]: s["image"] for s in first.output["builds"]["services"]}
    assert images["web"].split("/", 1)[1].startswith("slipway/dev/web:")

    # When a push changes one service's folder
    second = deploy(app, commit(app_repo, {"web/index.html": "<p>hello</p>\n"}))
    # Then that one is built and updated, the others reused and left as they run
    assert second.status == "SUCCEEDED", second.error
    assert built(second) == updated(second) == ["web"]
    reused = {s["name"]: s for s in second.output["builds"]["services"]}
    assert reused["api"]["image"] == images["api"] and reused["api"]["build_id"] is None

    # When a push changes nothing a build reads
    third = deploy(app, commit(app_repo, {"README.md": "# app, documented\n"}))
    # Then nothing is built and no service is updated
    assert third.status == "SUCCEEDED", third.error
    assert built(third) == updated(third) == []

    # And each repository's lifecycle policy keeps what the service runs: only the running image is
    # tagged running-<key> (the web image the first push ran is not any more)
    ecr = app.client("ecr")
    web_images = ecr.describe_images(repositoryName="slipway/dev/web")["imageDetails"]
    running = {t for i in web_images for t in i.get("imageTags", []) if t.startswith("running-")}
    web_key = next(s["key"] for s in second.output["builds"]["services"] if s["name"] == "web")
    assert running == {f"running-{web_key}"} and len(web_images) == 2

    # When the worker's Dockerfile, outside its context, changes: the worker alone is built
    fourth = deploy(app, commit(app_repo, {"docker/worker.Dockerfile": "FROM python:3.12-slim\nCOPY . /app\n"}))
    assert fourth.status == "SUCCEEDED", fourth.error
    assert built(fourth) == ["worker"]


def test_each_service_has_an_immutable_scanned_repository_that_teardown_removes(app, app_repo):
    run = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    assert run.status == "SUCCEEDED", run.error
    ecr = app.client("ecr")
    found = {r["repositoryName"]: r for r in ecr.describe_repositories()["repositories"]}
    assert sorted(found) == sorted(
        [f"slipway/dev/{s}" for s in ("api", "web", "worker")]
        + [f"slipway/dev/cache/{s}" for s in ("api", "web", "worker")]
    )
    web = found["slipway/dev/web"]
    assert web["imageTagMutability"] == "IMMUTABLE" and web["imageScanningConfiguration"] == {"scanOnPush": True}
    assert found["slipway/dev/cache/web"]["imageTagMutability"] == "MUTABLE"
    policy = json.loads(ecr.get_lifecycle_policy(repositoryName="slipway/dev/web")["lifecyclePolicyText"])
    assert [r["selection"]["tagStatus"] for r in policy["rules"]] == ["untagged", "tagged", "tagged"]
    assert policy["rules"][1]["selection"]["tagPatternList"] == ["running-*"]
    assert policy["rules"][2]["selection"]["countNumber"] == 20
    assert tagged(app)["ecr-repository"] == 6
    # When the environment is torn down, the repositories go with it
    down = teardown(app)
    assert down.status == "SUCCEEDED", down.error
    assert down.output["images"]["repositories"] == 6
    assert ecr.describe_repositories()["repositories"] == []


def test_a_failing_build_ends_the_run_before_anything_changes(app, app_repo):
    # Given the application deployed
    first = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    assert first.status == "SUCCEEDED", first.error
    serving = {s["name"]: s["digest"] for s in first.output["rollout"]["services"]}
    nodes = tagged(app)["instance"]
    # When a push changes the api, whose build fails
    app.build_outcomes["api"] = "FAILED"
    pushed = commit(app_repo, {"api/main.py": "print('api 2')\n"})
    run = deploy(app, pushed)
    # Then the run fails naming the service, the failing phase and the log's last lines
    assert run.status == "FAILED"
    assert run.error == "BuildFailed"
    cause = json.loads(run.cause)["errorMessage"]
    assert cause.splitlines()[0] == "api (in BUILD) did not build; nothing was changed"
    assert "api: the build ended FAILED in BUILD" in cause
    assert "did not complete successfully: exit code: 2" in cause
    assert "whole log: https://console.aws.amazon.com/cloudwatch/" in cause
    # And nothing changed: no node launched, the same images serve
    assert tagged(app)["instance"] == nodes
    assert not any(
        e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == "Launch nodes"
        for e in history(app, run.execution_arn)
    )
    statuses = [s for s in app.github.statuses if s["sha"] == pushed]
    assert statuses[-1]["state"] == "failure"
    assert "BuildFailed: api (in BUILD) did not build" in statuses[-1]["description"]
    failed = app.github.deployment_statuses[-1]
    assert failed["state"] == "failure" and "api (in BUILD) did not build" in failed["description"]
    again = deploy(app, git(app_repo, "rev-parse", "HEAD~1"))
    assert {s["name"]: s["digest"] for s in again.output["rollout"]["services"]} == serving


def test_a_missing_dockerfile_fails_the_build_as_buildkit_does(app, app_repo):
    git(app_repo, "rm", "-q", "api/Dockerfile")
    run = deploy(app, commit(app_repo, {}, "no api Dockerfile"))
    assert run.status == "FAILED"
    cause = json.loads(run.cause)["errorMessage"]
    assert "failed to read dockerfile: open Dockerfile: no such file or directory" in cause


def test_a_build_secret_value_stays_in_its_store(app, app_repo):
    run = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    assert run.status == "SUCCEEDED", run.error
    # The build gets the parameter's name, for CodeBuild to read; the value is nowhere in the run
    web = next(b for b in app.builds.values() if b["service"] == "web")
    bake = json.loads(web["variables"]["BAKE_FILE"])
    assert bake["target"]["web"]["secret"] == ["id=npm_token,env=BUILD_SECRET_0"]
    assert web["variables"]["BUILD_SECRET_0"] == naming.secret_parameter(app.environment, "npm_token")
    assert SECRET_VALUE not in json.dumps(history(app, run.execution_arn), default=str)
    assert SECRET_VALUE not in json.dumps(app.builds, default=str)


def test_a_second_repository_is_refused_naming_the_one_the_environment_runs(app, app_repo):
    first = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    assert first.status == "SUCCEEDED", first.error
    before = tagged(app)
    run = deploy(app, git(app_repo, "rev-parse", "HEAD"), repository="someone/other")
    assert run.status == "FAILED"
    assert run.error == "EnvironmentOwned"
    assert "environment dev runs example/app; someone/other cannot deploy to it" in run.cause
    assert tagged(app) == before


def test_a_repository_with_only_one_image_folder_is_refused(app, app_repo):
    run = deploy(app, commit(app_repo, {"packer/build.pkr.hcl": "# half an override\n"}))
    assert run.status == "FAILED"
    assert "the commit has no ansible/ folder beside its packer/" in run.cause


BUILD_FAULTS = [
    (op, kind) for op in ("CreateRepository", "PutLifecyclePolicy", "StartBuild") for kind in ("throttle", "lost")
]


@pytest.mark.parametrize("operation,kind", BUILD_FAULTS, ids=[f"{o}-{k}" for o, k in BUILD_FAULTS])
def test_building_under_a_fault_makes_one_repository_each_and_one_build_each(app, app_repo, operation, kind):
    # Given the first call of an operation throttled, or its answer lost after it took effect
    from chalicelib import aws
    from slipway.faults import Fault

    fault = Fault(operation, kind)
    fault.install([aws.client("ecr"), aws.client("codebuild")])
    run = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    assert fault.fired == 1, f"{operation} ({kind}) was never injected"
    # Then the run succeeds with one repository per service and one for its cache, each with its
    # policy, and one build per service (a StartBuild retried with its token starts nothing new)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    ecr = app.client("ecr")
    names = sorted(r["repositoryName"] for r in ecr.describe_repositories()["repositories"])
    assert len(names) == len(set(names)) == 6
    for name in names:
        assert ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"]
    assert sorted(b["service"] for b in app.builds.values()) == ["api", "web", "worker"]


def test_a_repository_with_both_image_folders_bakes_its_own_node_image(app, app_repo):
    import io
    import zipfile

    override = {"packer/buildspec.yml": "version: 0.2\n", "ansible/swarm_node.yml": "- hosts: all\n"}
    run = deploy(app, commit(app_repo, override))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    deployment = run.output["deployment"]
    assert deployment["image_source"] == "commit"
    assert deployment["image_key"] != os.environ["SLIPWAY_NODE_IMAGE_KEY"]
    # The bake's source is the commit's own two folders
    bucket = os.environ["SLIPWAY_BAKE_BUCKET"]
    data = app.client("s3").get_object(Bucket=bucket, Key=f"sources/{deployment['image_key']}.zip")["Body"].read()
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == sorted(override)


def test_a_build_secret_without_a_value_is_refused_naming_its_parameter(make_emulator, app_repo):
    emu = make_emulator(repo=app_repo, extra_environment={"SLIPWAY_STACK_FILE": "stack.yml"})
    run = deploy(emu, git(app_repo, "rev-parse", "HEAD"))
    assert run.status == "FAILED" and run.error == "StackInvalid"
    assert "no value for secret npm_token" in run.cause and "/slipway/dev/secrets/npm_token" in run.cause
    assert emu.builds == {}


def test_a_failing_build_stops_the_runs_other_builds(app, app_repo):
    # Given a first push whose api build fails while web's and worker's still run
    app.build_outcomes["api"] = "FAILED"
    run = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    assert run.status == "FAILED" and run.error == "BuildFailed"
    # Then the run stopped them: none of them pushes a key the next run would build again
    codebuild = app.client("codebuild")
    statuses = {
        record["service"]: codebuild.batch_get_builds(ids=[build_id])["builds"][0]["buildStatus"]
        for build_id, record in app.builds.items()
    }
    assert statuses == {"api": "FAILED", "web": "STOPPED", "worker": "STOPPED"}
    assert all(
        not app.client("ecr").describe_images(repositoryName=f"slipway/dev/{s}")["imageDetails"]
        for s in ("web", "worker")
    )
