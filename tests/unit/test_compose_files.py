"""Compose files as people write them: the environment's variables, env files and config files
read from the commit, read-only bind mounts made configs, Compose Specification keys made what
Swarm takes, and every problem reported at once (chalicelib/stack.py `read`)."""

import hashlib
import textwrap

import pytest

from chalicelib import stack, stack_sources
from chalicelib.errors import StackInvalid

PATH = "compose.yaml"


class Files:
    """A commit's files for stack.read: {path: bytes}; folders are implied by the paths."""

    def __init__(self, files: dict[str, bytes | str], executables: tuple[str, ...] = ()) -> None:
        self.files = {p: v.encode() if isinstance(v, str) else v for p, v in files.items()}
        self.executables = set(executables)
        self.asked: list[str] = []

    def kind(self, path: str) -> str | None:
        self.asked.append(path)
        if path in self.files:
            return "executable" if path in self.executables else "file"
        if any(p.startswith(path.rstrip("/") + "/") for p in self.files):
            return "dir"
        return None

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)


def yml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def read(text: str, files: dict | None = None, variables: dict | None = None, **options) -> stack.Reading:
    return stack.read(yml(text), path=PATH, files=Files(files or {}, **options), variables=variables or {})


def accepted(text: str, files: dict | None = None, variables: dict | None = None, **options) -> stack.Stack:
    reading = read(text, files, variables, **options)
    assert reading.problems == (), reading.problems
    assert reading.stack is not None
    return reading.stack


# --- variables --------------------------------------------------------------------------------------

APP = """
services:
  web:
    image: "nginx:${TAG:-1.27}"
    environment:
      TZ: ${TZ}
      GREETING: "hello ${NAME:?the visitor's name}"
"""


def test_variables_come_from_the_environment_and_reach_the_service_environment_only():
    parsed = accepted(APP, variables={"TZ": "Europe/Paris", "NAME": "world", "UNUSED": "x"})
    environment = parsed.document["services"]["web"]["environment"]
    assert environment == {"TZ": "Europe/Paris", "GREETING": "hello world"}
    assert parsed.document["services"]["web"]["image"] == "nginx:1.27"
    # The stack knows which variables it used, by name only
    assert parsed.variables == ("NAME", "TZ")
    assert "Europe/Paris" not in repr(parsed)


def test_a_variable_neither_set_nor_defaulted_is_refused_naming_the_parameter_never_a_value():
    reading = stack.read(
        yml(APP), path=PATH, variables={"NAME": "secret-ish"}, files=Files({}), variables_home="/slipway/dev/vars"
    )
    assert reading.problems == (
        "${TZ} has no value (services.web.environment.TZ): set it, aws ssm put-parameter --name /slipway/dev/vars/TZ "
        "--value ..., or give it a default, ${TZ:-value}",
    )
    assert "secret-ish" not in " ".join(reading.problems + reading.warnings)


def test_a_message_quoting_a_value_names_the_variable_instead():
    text = "services:\n  web:\n    image: app\n    deploy: {update_config: {order: '${ORDER}'}}\n"
    reading = stack.read(text, path=PATH, files=Files({}), variables={"ORDER": "sideways-secret"})
    assert reading.problems and "sideways-secret" not in " ".join(reading.problems)
    assert "<the value of ORDER>" in reading.problems[0]


def test_a_variable_used_in_many_places_is_one_problem():
    text = "services:\n" + "".join(f"  s{i}:\n    image: app\n    environment: {{TZ: '${{TZ}}'}}\n" for i in range(8))
    reading = stack.read(text, path=PATH, files=Files({}))
    assert len(reading.problems) == 1
    assert "and 5 more" in reading.problems[0]
    assert len(reading.problems[0]) < 300


def test_the_dotenv_beside_the_file_gives_defaults_under_the_environments_variables():
    files = {".env": "TZ=UTC\nNAME=from-dotenv\n"}
    parsed = accepted(APP, files, variables={"NAME": "from-ssm"})
    assert parsed.document["services"]["web"]["environment"] == {"TZ": "UTC", "GREETING": "hello from-ssm"}


# --- env files ----------------------------------------------------------------------------------------


def test_env_files_are_read_from_the_commit_and_the_services_own_environment_wins():
    text = """
    services:
      web:
        image: app
        env_file: [config/common.env, {path: config/web.env, required: true}]
        environment: [MODE=production]
    """
    files = {
        "config/common.env": "MODE=dev\nREGION=${REGION:-eu}\nexport LEVEL=info # the log level\n",
        "config/web.env": 'LEVEL=debug\nURL="https://${HOST}/"\n',
    }
    parsed = accepted(text, files, variables={"HOST": "example.org"})
    assert parsed.document["services"]["web"]["environment"] == {
        "MODE": "production",
        "REGION": "eu",
        "LEVEL": "debug",
        "URL": "https://example.org/",
    }
    assert "env_file" not in parsed.document["services"]["web"]


def test_a_missing_env_file_is_refused_unless_optional():
    text = "services:\n  web:\n    image: app\n    env_file: [web.env, {path: local.env, required: false}]\n"
    reading = read(text)
    assert reading.problems == (
        "services.web.env_file[0]: web.env is not in the commit (docker compose refuses a missing env file too; mark "
        "it `required: false` if it is optional)",
    )
    assert accepted(text, {"web.env": "A=1\n"}).document["services"]["web"]["environment"] == {"A": "1"}


def test_an_env_file_needing_a_variable_without_a_value_is_refused_naming_the_file_and_key():
    reading = read("services:\n  web:\n    image: app\n    env_file: web.env\n", {"web.env": "URL=https://${HOST}\n"})
    assert reading.problems[0].startswith("${HOST} has no value (web.env (URL)): set it")


def test_env_files_are_relative_to_the_compose_files_folder():
    parsed = stack.read(
        "services:\n  web:\n    image: app\n    env_file: ../shared.env\n",
        path="deploy/compose.yaml",
        files=Files({"shared.env": "A=1\n"}),
    )
    assert parsed.problems == ()
    outside = stack.read("services:\n  web:\n    image: app\n    env_file: ../../x.env\n", path=PATH, files=Files({}))
    assert outside.problems == (
        "services.web.env_file[0]: ../../x.env is outside the repository; Slipway reads files of the pushed commit",
    )


# --- configs --------------------------------------------------------------------------------------------

CONFIGS = """
services:
  proxy:
    image: nginx
    configs: [{source: site, target: /etc/nginx/conf.d/default.conf}, inline]
configs:
  site:
    file: ./nginx/site.conf
  inline:
    content: "user ${USER_NAME:-nginx};"
"""


def test_configs_are_read_from_the_commit_and_named_by_their_content():
    parsed = accepted(CONFIGS, {"nginx/site.conf": "server { listen 80; }\n"})
    site = hashlib.sha256(b"server { listen 80; }\n").hexdigest()
    inline = hashlib.sha256(b"user nginx;").hexdigest()
    assert parsed.configs == {"site": site, "inline": inline}
    assert parsed.config_data[site] == b"server { listen 80; }\n"
    # Rendered, docker stack deploy creates each from its stored file under its content's name
    document = stack.rendered(parsed, {})
    assert document["configs"]["site"] == {"name": f"site-{site[:12]}", "file": f"configs/{site}"}
    # A changed file is another config: the service's definition changes with it
    changed = accepted(CONFIGS, {"nginx/site.conf": "server { listen 8080; }\n"})
    assert stack.rendered(changed, {})["configs"]["site"]["name"] != document["configs"]["site"]["name"]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({}, "configs.site.file: nginx/site.conf is not in the commit"),
        ({"nginx/site.conf/x": "a"}, "configs.site.file: nginx/site.conf is a folder, not a file"),
        ({"nginx/site.conf": ""}, "configs.site is 0 bytes; a Swarm config holds 1 byte to 1000 KiB"),
        ({"nginx/site.conf": "x" * 1024000}, "configs.site is 1024000 bytes; a Swarm config holds 1 byte to 1000 KiB"),
    ],
)
def test_a_config_file_that_cannot_be_a_swarm_config_is_refused(files, problem):
    reading = read(CONFIGS, files)
    assert reading.problems[0].startswith(problem), reading.problems


# --- bind mounts of the repository ---------------------------------------------------------------------


def test_a_read_only_bind_mount_of_a_repository_file_becomes_a_config_with_a_warning():
    text = """
    services:
      proxy:
        image: nginx
        volumes:
          - ./nginx.conf:/etc/nginx/nginx.conf:ro
          - {type: bind, source: ./entrypoint.sh, target: /docker-entrypoint.d/40-slipway.sh, read_only: true}
          - cache:/var/cache/nginx
    volumes:
      cache: {driver: rexray/ebs}
    """
    parsed = accepted(
        text, {"nginx.conf": "events {}\n", "entrypoint.sh": "#!/bin/sh\n"}, executables=("entrypoint.sh",)
    )
    service = parsed.document["services"]["proxy"]
    assert service["volumes"] == ("cache:/var/cache/nginx",)
    assert service["configs"] == (
        {"source": "repo_nginx.conf", "target": "/etc/nginx/nginx.conf"},
        {"source": "repo_entrypoint.sh", "target": "/docker-entrypoint.d/40-slipway.sh", "mode": 0o555},
    )
    assert parsed.config_data[parsed.configs["repo_nginx.conf"]] == b"events {}\n"
    assert parsed.warnings[0] == (
        "services.proxy.volumes[0]: nginx.conf is mounted read-only from the repository: Slipway ships the commit's "
        "bytes as a Swarm config at /etc/nginx/nginx.conf (a change to the file updates the service)"
    )


@pytest.mark.parametrize(
    ("mount", "problem"),
    [
        ("./nginx.conf:/etc/nginx/nginx.conf", "binds nginx.conf from the repository writable"),
        ("./html:/usr/share/nginx/html:ro", "binds the folder html from the repository"),
        ("./missing.conf:/etc/x.conf:ro", "binds missing.conf from the repository, which is not in the commit"),
    ],
)
def test_a_writable_folder_or_missing_bind_of_the_repository_is_refused(mount, problem):
    reading = read(
        f"services:\n  web:\n    image: nginx\n    volumes: ['{mount}']\n",
        {"nginx.conf": "x", "html/index.html": "<p>"},
    )
    assert len(reading.problems) == 1 and problem in reading.problems[0], reading.problems


# --- the Compose Specification --------------------------------------------------------------------------


def test_a_compose_specification_file_is_made_what_swarm_takes_each_change_a_warning():
    text = """
    name: shop
    services:
      web:
        image: shop/web
        container_name: web
        restart: on-failure:3
        depends_on:
          db: {condition: service_healthy}
        pull_policy: always
        ports: [{target: 80, published: "8080", app_protocol: http}]
        volumes: [{type: volume, source: data, target: /srv, volume: {subpath: web}}]
      debug:
        image: busybox
        profiles: [debug]
      db:
        image: postgres
    networks:
      default: {driver: bridge}
    volumes:
      data: {driver: rexray/ebs}
    """
    parsed = accepted(text)
    web = parsed.document["services"]["web"]
    assert parsed.services == ("db", "web")
    assert web["deploy"]["restart_policy"] == {"condition": "on-failure", "max_attempts": 3}
    assert web["depends_on"] == ("db",)
    assert "container_name" not in web and "pull_policy" not in web and "name" not in parsed.document
    assert parsed.document["networks"]["default"] == {}
    warnings = "\n".join(parsed.warnings)
    for expected in (
        "name: the stack is named after the environment",
        "services.web.container_name: Swarm names each task itself",
        "services.web.restart: on-failure:3 became deploy.restart_policy (condition: on-failure, max_attempts: 3)",
        "services.web.depends_on: Swarm starts a stack's services together, with no start order: web does not wait "
        "for db (service_healthy)",
        "services.debug is in profile debug, which docker compose starts only when asked (COMPOSE_PROFILES): not "
        "deployed",
        "networks.default.driver: bridge is a single host's network",
        "services.web.pull_policy: a node pulls the image pinned to its digest; not used",
    ):
        assert expected in warnings
    # Keys below a service that docker/cli's schema has no place for are named with their path
    assert "services.web.ports[0].app_protocol: docker stack deploy has no such key; not used" in warnings


def test_keys_without_a_value_take_the_variable_of_that_name_or_are_left_out():
    text = "services:\n  web:\n    image: app\n    environment: [DATABASE_URL, UNSET, MODE=x]\n"
    parsed = accepted(text, {".env": "MODE=from-dotenv\n"}, variables={"DATABASE_URL": "postgres://db"})
    assert parsed.document["services"]["web"]["environment"] == {"DATABASE_URL": "postgres://db", "MODE": "x"}


def test_active_profiles_come_from_compose_profiles():
    text = "services:\n  web:\n    image: nginx\n  debug:\n    image: busybox\n    profiles: [debug]\n"
    assert accepted(text).services == ("web",)
    assert accepted(text, {".env": "COMPOSE_PROFILES=debug\n"}).services == ("debug", "web")
    assert accepted(text, variables={"COMPOSE_PROFILES": "*"}).services == ("debug", "web")


def test_values_docker_compose_takes_are_carried_over_in_the_types_swarm_wants():
    text = """
    services:
      web:
        image: app
        environment: {DEBUG: true}
        labels: {traefik.enable: false}
        mem_limit: 1073741824
        pids_limit: ${PIDS:-100}
        init: ${INIT:-true}
    """
    web = accepted(text).document["services"]["web"]
    assert web["environment"] == {"DEBUG": "true"} and web["labels"] == {"traefik.enable": "false"}
    assert web["deploy"]["resources"]["limits"] == {"memory": "1073741824", "pids": 100}
    assert web["init"] is True


def test_an_env_file_reads_the_services_own_environment_and_raw_files_are_taken_as_written():
    text = """
    services:
      web:
        image: app
        env_file: [a.env, {path: raw.env, format: raw}]
        environment: {A: x}
    """
    parsed = accepted(text, {"a.env": "B=${A}\n", "raw.env": "PW=ab$cd\n"})
    assert parsed.document["services"]["web"]["environment"] == {"A": "x", "B": "x", "PW": "ab$cd"}


def test_label_files_are_read_from_the_commit_under_the_services_own_labels():
    text = "services:\n  web:\n    image: app\n    label_file: [web.labels]\n    labels: {tier: front}\n"
    parsed = accepted(text, {"web.labels": "tier=back\nteam=${TEAM:-shop}\n"})
    assert parsed.document["services"]["web"]["labels"] == {"tier": "front", "team": "shop"}
    assert "label_file" not in parsed.document["services"]["web"]


def test_a_long_syntax_bind_of_a_relative_path_is_the_repositorys():
    text = (
        "services:\n  web:\n    image: nginx\n    volumes:\n"
        "      - {type: bind, source: nginx.conf, target: /etc/n.conf, read_only: true}\n"
    )
    parsed = accepted(text, {"nginx.conf": "events {}\n"})
    assert parsed.document["services"]["web"]["configs"] == ({"source": "repo_nginx.conf", "target": "/etc/n.conf"},)


def test_the_dotenv_files_own_variables_without_a_value_are_refused():
    text = "services:\n  web:\n    image: app\n    environment: {URL: '${URL}'}\n"
    reading = read(text, {".env": "URL=${DB_URL:?set DB_URL}\n"})
    assert reading.problems == (
        "${DB_URL} has no value (.env (URL)): set it, aws ssm put-parameter --name /slipway/<environment>/vars/DB_URL "
        "--value ..., or give it a default, ${DB_URL:-value}",
    )


def test_no_value_reaches_a_warning_or_a_problem_whatever_form_a_message_gives_it():
    built = "services:\n  web:\n    build: .\n    image: ${REGISTRY}/app\n"
    reading = read(built, {"Dockerfile": "FROM x"}, variables={"REGISTRY": "reg.example/team-secret"})
    assert reading.stack is not None
    assert "team-secret" not in " ".join(reading.warnings + reading.stack.warnings)
    quoted = "services:\n  web:\n    image: app\n    healthcheck: {interval: '${PW}'}\n"
    reading = read(quoted, variables={"PW": "pa\\ss\nword"})
    assert reading.problems and "ss" not in reading.problems[0].split("interval")[1].replace("<the value of PW>", "")
    env_file = "services:\n  web:\n    image: app\n    env_file: a.env\n"
    for text in ("DB@PASS=s3cret\n", 'TOKEN="s3cret\n'):
        reading = read(env_file, {"a.env": text})
        assert reading.problems and "s3cret" not in reading.problems[0], reading.problems


# --- every problem at once -----------------------------------------------------------------------------


def test_three_problems_are_reported_in_one_refusal_the_first_line_counting_them():
    text = """
    services:
      web:
        image: app:${TAG}
        env_file: web.env
        volumes: [./site:/srv:ro]
    """
    with pytest.raises(StackInvalid) as caught:
        stack.parse(yml(text), path=PATH, files=Files({"site/a.html": "<p>"}))
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("compose.yaml: 3 problems; the first: ")
    assert len(lines) == 4 and all(line.startswith("- ") for line in lines[1:])
    assert any("env_file" in line for line in lines) and any("${TAG}" in line for line in lines)
    assert any("folder site" in line for line in lines)


def test_every_service_with_a_schema_error_is_named():
    text = """
    services:
      web: {image: app, portz: [80]}
      api: {image: app, imagee: app}
    """
    reading = read(text)
    assert len(reading.problems) == 2, reading.problems


# --- what the run keeps --------------------------------------------------------------------------------


def test_the_stored_stack_reads_back_as_the_same_stack_without_variables_or_repository():
    files = {"nginx/site.conf": "server {}\n", "web.env": "PRICE=$$5\n"}
    text = CONFIGS + "  web:\n    image: app\n    env_file: web.env\n    command: echo $${HOME}\n"
    text = text.replace("configs:\n  site:", "configs:\n  site:", 1)
    original = stack.parse(yml(CONFIGS), path=PATH, files=Files(files))
    again = stack.parse(stack.stored(original), path=PATH)
    assert again.document == original.document
    assert stack.rendered(again, {}, configs=original.configs) == stack.rendered(original, {})


def test_config_names_are_swarm_names():
    name = stack_sources.config_name("a key/with spaces and more than forty characters in it", "ab" * 32)
    assert name == "a-key-with-spaces-and-more-than-forty-ch-abababababab"


def test_the_vendored_compose_specification_schema_is_compose_gos_file_unchanged():
    import re
    from pathlib import Path

    schemas = Path(__file__).resolve().parents[2] / "chalicelib" / "schemas"
    readme = (schemas / "README.md").read_text()
    blob = re.search(r"Blob: `([0-9a-f]{40})`", readme.split("# The Compose Specification's schema")[1])
    data = (schemas / "compose-spec.json").read_bytes()
    assert blob and hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob.group(1)
    assert "Apache License" in (schemas / "LICENSE.compose-go").read_text()


def test_the_compose_specification_schema_uses_no_keyword_draft_07_lacks():
    # compose_schema compiles it as draft-07 (fastjsonschema knows no 2020-12)
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[2] / "chalicelib/schemas/compose-spec.json").read_text())
    newer = {
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$dynamicRef",
        "$dynamicAnchor",
        "dependentSchemas",
        "dependentRequired",
        "minContains",
        "maxContains",
        "$anchor",
    }
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            found.update(set(node) & newer)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    assert found == set()
