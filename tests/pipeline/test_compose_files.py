"""A Compose file as people write it deploys through the pipeline: found by docker compose's own
names, its `${VAR}`s from the environment's variables in SSM, its env file and its configs read from
the pushed commit (a changed config file updates the services that use it), and a file with several
problems refused once, with all of them, before anything changes."""

import json

import pytest

from chalicelib import naming
from slipway.harness import application_repository, deploy, git, history
from slipway.harness import commit_files as commit

COMPOSE = """\
name: shop
services:
  web:
    image: nginx:1.27
    restart: always
    ports: ["80:80"]
    env_file: config/web.env
    environment:
      TZ: ${TZ}
    volumes:
      - ./nginx/site.conf:/etc/nginx/conf.d/default.conf:ro
    depends_on:
      api: {condition: service_healthy}
  api:
    image: "python:${PYTHON_VERSION:-3.12}-slim"
    configs:
      - source: settings
        target: /srv/settings.toml
configs:
  settings:
    file: ./config/settings.toml
"""
VARIABLE_VALUE = "Europe/Variable-That-Stays-In-SSM"


@pytest.fixture
def app_repo(tmp_path):
    return application_repository(
        tmp_path / "shop",
        {
            "compose.yaml": COMPOSE,
            "config/web.env": "GREETING=hello\nREGION=${REGION:-eu-west-1}\n",
            "config/settings.toml": "[db]\nhost = 'db'\n",
            "nginx/site.conf": "server { listen 80; }\n",
        },
    )


@pytest.fixture
def app(make_emulator, app_repo):
    emu = make_emulator(repo=app_repo, node_count=1, extra_environment={"SLIPWAY_STACK_FILE": ""})
    emu.client("ssm").put_parameter(
        Name=f"{naming.variables_path(emu.environment)}/TZ", Value=VARIABLE_VALUE, Type="SecureString"
    )
    return emu


def services(emu, run) -> dict:
    manager = run.output["rollout"]["manager"]
    return {name.split("_", 1)[1]: s for name, s in emu.nodes.services(manager).items()}


def test_a_compose_file_deploys_with_its_variables_env_file_and_configs(app, app_repo):
    # Given a compose.yaml (no version, restart, depends_on conditions) reading the environment's
    # TZ, an env file, a config file and a read-only bind mount of the repository
    run = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    # Then it is found by docker compose's name and deploys
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output["stack"]["path"] == "compose.yaml"
    assert run.output["stack"]["variables"] == ["TZ"]
    deployed = services(app, run)
    web = deployed["web"].definition
    # With the variable and the env file in the service's environment
    assert web["environment"] == {"GREETING": "hello", "REGION": "eu-west-1", "TZ": VARIABLE_VALUE}
    assert web["deploy"]["restart_policy"] == {"condition": "any"}
    assert deployed["api"].definition["image"].startswith("python:3.12-slim@sha256:")
    # And the configs created on the swarm from the commit's bytes, named by their content
    swarm = app.nodes.swarm_of(run.output["rollout"]["manager"])
    assert sorted(swarm.configs.values()) == [b"[db]\nhost = 'db'\n", b"server { listen 80; }\n"]
    assert {c["target"] for c in web["configs"]} == {"/etc/nginx/conf.d/default.conf"}
    warnings = "\n".join(run.output["stack"]["warnings"])
    assert "nginx/site.conf is mounted read-only from the repository" in warnings
    assert "web does not wait for api (service_healthy)" in warnings

    # When only the config file changes
    changed = commit(app_repo, {"config/settings.toml": "[db]\nhost = 'db2'\n"})
    second = deploy(app, changed)
    # Then a new config is made and only the service using it is updated
    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert second.output["rollout"]["changed"] == ["api"]
    assert b"[db]\nhost = 'db2'\n" in swarm.configs.values()


def test_a_variables_value_appears_in_no_execution_log_or_status(app, app_repo, capfd, every_log_record):
    run = deploy(app, git(app_repo, "rev-parse", "HEAD"))
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    places = [json.dumps(history(app, run.execution_arn), default=str), json.dumps(app.github.statuses)]
    ssm = app.client("ssm")
    for command in ssm.list_commands()["Commands"]:
        places.append(json.dumps(command["Parameters"]))
    captured = capfd.readouterr()
    places += [captured.out, captured.err, *every_log_record]
    assert any("stack file read" in r for r in every_log_record)
    assert not [p for p in places if VARIABLE_VALUE in p]


def test_three_problems_are_refused_in_one_run_before_anything_changes(app, app_repo):
    # Given a push whose compose file lacks a variable, an env file and a config file
    broken = commit(
        app_repo,
        {"compose.yaml": COMPOSE.replace("${TZ}", "${TZ} ${LOCALE}").replace("config/web.env", "config/missing.env")},
    )
    git(app_repo, "rm", "-q", "config/settings.toml")
    broken = commit(app_repo, {}, "no settings")
    run = deploy(app, broken)
    # Then the run fails at 'Read the stack file' with the three, and nothing was provisioned
    assert run.status == "FAILED"
    assert run.error == "StackInvalid"
    lines = json.loads(run.cause)["errorMessage"].splitlines()
    assert lines[0].startswith("compose.yaml: 3 problems; the first: ")
    assert len(lines) == 4
    assert any("${LOCALE} has no value" in line and "/slipway/dev/vars/LOCALE" in line for line in lines)
    assert any("config/missing.env is not in the commit" in line for line in lines)
    assert any("config/settings.toml is not in the commit" in line for line in lines)
    assert not app.client("ec2").describe_instances()["Reservations"]
    # And the commit status names the first problem and the count
    status = app.github.statuses[-1]
    assert status["state"] == "failure"
    assert "compose.yaml: 3 problems" in status["description"]
