"""The repository's stack file: refused before anything changes, with a sentence naming the file and the
problem, where docker stack deploy or Slipway would refuse it; rendered with safe update defaults."""

import hashlib
import json
import re
import textwrap
import time
from pathlib import Path

import jsonschema  # an independent draft-04 validator (ansible-lint's dependency) to check render's output
import pytest
import yaml

from chalicelib import compose_schema, compose_yaml
from chalicelib.durations import format_duration, parse_duration
from chalicelib.errors import InvalidInput, StackInvalid
from chalicelib.stack import content_key, parse, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example" / "stack.yml"
SCHEMAS = ROOT / "chalicelib" / "schemas"
PATH = "deploy/stack.yml"


def yml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def refused(text: str | bytes, **options: bool) -> str:
    """The message of the StackInvalid that parsing `text` raises; it always starts with the file."""
    with pytest.raises(StackInvalid) as caught:
        parse(text, path=PATH, **options)
    message = str(caught.value)
    assert message.startswith(f"{PATH}: "), message
    return message


def rendered(text: str, names: dict[str, str] | None = None, **options: bool) -> dict:
    """The rendered document as docker reads it back: it must parse, and validate against the schema of
    the version it declares, checked by a second implementation of JSON Schema."""
    parsed = parse(text, path=PATH, **options)
    data = render(parsed, names or {}, {name: f"registry.example/{name}:key" for name in parsed.builds})
    document = parse(data, path="rendered.yml", **options).document
    schema = json.loads((SCHEMAS / f"config_schema_v{document['version']}.json").read_text())
    reloaded = yaml.safe_load(data)
    assert list(jsonschema.Draft4Validator(schema).iter_errors(reloaded)) == []
    return reloaded


WEB = yml(
    """
    version: "3.8"
    services:
      web:
        image: nginx:1.27
    """
)


# --- the example and the vendored schemas ---------------------------------------------------------


def test_the_example_stack_parses_and_renders():
    # Given the stack the demo deploys
    parsed = parse(EXAMPLE.read_bytes(), path="example/stack.yml")
    # Then it has its two services, both built, and its one Slipway secret, and nothing to warn about
    assert parsed.services == ("web", "worker")
    assert parsed.builds == ("web", "worker")
    assert parsed.secrets == ("app_token",)
    assert parsed.warnings == ()
    web = parsed.document["services"]["web"]
    assert (web["build"]["context"], web["deploy"]["replicas"], web["ports"]) == ("./web", 2, ("80:8080",))
    # And its rendering validates against its own version, web monitored at least its health check's 26 s
    document = rendered(EXAMPLE.read_text(), {"app_token": "app_token-v1"})
    assert document["services"]["web"]["deploy"]["update_config"]["monitor"] == "30s"
    assert document["secrets"]["app_token"] == {"external": True, "name": "app_token-v1"}


def test_the_vendored_schemas_are_docker_clis_files_unchanged():
    # Given the blob ids the README records for the docker/cli commit
    listed = dict(
        re.findall(r"\| (config_schema_v3\.\d+\.json) \| `([0-9a-f]{40})` \|", (SCHEMAS / "README.md").read_text())
    )
    # Then every vendored file is listed, one per version, with git's id of its bytes
    files = sorted(p.name for p in SCHEMAS.glob("config_schema_v*.json"))
    assert sorted(listed) == files == sorted(f"config_schema_v{v}.json" for v in compose_schema.VERSIONS)
    for name, blob in listed.items():
        data = (SCHEMAS / name).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, name
    assert "Apache License" in (SCHEMAS / "LICENSE").read_text()


@pytest.mark.parametrize("version", compose_schema.VERSIONS)
def test_every_vendored_schema_version_loads_and_validates(version):
    # Given a small stack declaring each version docker/cli has a schema for
    text = f'version: "{version}"\nservices:\n  web:\n    image: nginx\n    healthcheck: {{interval: 10s}}\n'
    # Then it parses, and renders to a document that validates against its own version
    assert parse(text, path=PATH).services == ("web",)
    assert rendered(text)["version"] == max(version, "3.7", key=lambda v: tuple(map(int, v.split("."))))


# --- versions -------------------------------------------------------------------------------------

START_INTERVAL = "services:\n  web:\n    image: nginx\n    healthcheck: {start_interval: 1s}\n"  # 3.12 and later


@pytest.mark.parametrize("header", ["", 'version: "3"\n', 'version: ""\n', 'version: "3.13"\n'])
def test_no_version_or_3_is_the_newest_schema(header):
    assert parse(header + START_INTERVAL, path=PATH).services == ("web",)


def test_a_declared_version_does_not_limit_the_keys_as_docker_compose_reads_it():
    # Given a file declaring 3.11 with a key of 3.12 (docker stack deploy refuses it; docker compose,
    # for which `version` is obsolete, takes it)
    text = 'version: "3.11"\n' + START_INTERVAL
    # Then it is read, and rendered under the first version that has the key
    assert parse(text, path=PATH).services == ("web",)
    assert rendered(text)["version"] == "3.12"


@pytest.mark.parametrize("version", ['"2.4"', '"3.14"', '"4"', '"latest"'])
def test_a_version_docker_stack_deploy_does_not_know_is_obsolete_and_left_out(version):
    parsed = parse(f"version: {version}\nservices:\n  web:\n    image: nginx\n", path=PATH)
    assert parsed.warnings == (
        f"version: {version.replace(chr(34), chr(39))} is obsolete in the Compose Specification and not used "
        "(leave it out)",
    )
    assert "version" not in parsed.document


def test_an_unquoted_version_is_refused_as_docker_does():
    # Given version: 3.8 (a number, which docker's schema refuses: it wants a string)
    message = refused("version: 3.8\nservices:\n  web:\n    image: nginx\n")
    assert 'version must be a string, not a number (write it in quotes, version: "3.8"' in message


# --- reading the YAML -----------------------------------------------------------------------------


def test_bad_yaml_is_refused_with_line_and_column():
    message = refused("services:\n  web:\n    image: [nginx\n")
    assert re.search(r"is not valid YAML at line \d+, column \d+: ", message), message


@pytest.mark.parametrize(("text", "what"), [("- web\n", "a list"), ("", "empty"), ("just text\n", "a string")])
def test_a_file_that_is_not_a_mapping_is_refused(text, what):
    assert refused(text).endswith(f"the top level must be a mapping (services:, ...), but the file is {what}")


def test_a_file_over_one_mib_is_refused():
    # Given a 2 MiB file, as bytes and as text
    big = b"services:\n  web:\n    image: nginx\n" + b"# padding\n" * (2 * 1024 * 1024 // 10)
    # Then neither is read
    assert "is 2.0 MiB; Slipway reads stack files of up to 1 MiB" in refused(big)
    assert "Slipway reads stack files of up to 1 MiB" in refused(big.decode())


def test_an_alias_bomb_is_refused_fast():
    # Given a billion laughs: 10**9 values once its aliases are expanded, in 600 bytes
    lines = ["x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = "services:\n  web: {image: nginx}\n" + "\n".join(lines) + "\n"
    started = time.perf_counter()
    message = refused(bomb)
    assert time.perf_counter() - started < 1.0
    assert f"has more than {compose_yaml.MAX_VALUES} values once its aliases are expanded" in message


def test_aliases_within_bounds_are_read():
    text = yml(
        """
        x-common: &common {image: nginx, deploy: {replicas: 2}}
        services:
          web: *common
          api:
            <<: *common
            image: api:1
        """
    )
    parsed = parse(text, path=PATH)
    assert parsed.document["services"]["web"]["image"] == "nginx"
    assert dict(parsed.document["services"]["api"]) == {"image": "api:1", "deploy": {"replicas": 2}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x-a: &a [*a]\nservices: {web: {image: nginx}}\n", "contains itself"),
        (
            "services:\n  web: {image: nginx}\n  web: {image: httpd}\n",
            "the key 'web' at line 3, column 3 is already given at line 2",
        ),
        ("services:\n  80: {image: nginx}\n", "the key 80 at line 2, column 3 is not a string (quote it)"),
        ("services:\n  web: {image: !!binary bmdpbng=}\n", "the YAML tag tag:yaml.org,2002:binary"),
        ("[" * 70 + "]" * 70, "nests more than 64 levels deep"),
        (b"services: {web: {image: \xff}}\n", "is not UTF-8 text"),
    ],
)
def test_yaml_docker_would_not_read_the_same_is_refused(text, problem):
    assert problem in refused(text)


def test_plain_scalars_are_typed_as_docker_types_them():
    # Given values YAML 1.1 would make numbers, booleans or dates, which yaml.v3 (docker) keeps as strings
    text = yml(
        """
        services:
          web:
            image: nginx
            ports: [22:22, "8080:80"]
            labels: {debug: yes, on-call: off, since: 2001-12-14, mode: 0o17, limit: 1e3}
        """
    )
    web = parse(text, path=PATH).document["services"]["web"]
    # Then the strings stay strings, and numbers are numbers as yaml.v3 reads them
    assert web["ports"] == ("22:22", "8080:80")
    assert dict(web["labels"]) == {"debug": "yes", "on-call": "off", "since": "2001-12-14", "mode": 15, "limit": 1000.0}
    # And the rendered file keeps them so for docker
    labels = rendered(text)["services"]["web"]["labels"]
    assert labels == {"debug": "yes", "on-call": "off", "since": "2001-12-14", "mode": 15, "limit": 1000.0}


# --- the schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            WEB.replace("image:", "imagee:"),
            "services.web.imagee is not a key the Compose Specification has here (did you mean image?)",
        ),
        (WEB + "servicess: {}\n", "servicess is not a key the Compose Specification has at the top level"),
        (WEB.replace("web:", "web app:"), "'web app' under services is not a valid name"),
        (
            WEB + "    volumes: [{type: volume, source: data, target: /x, bogus: 1}]\nvolumes: {data: {driver: x}}\n",
            "services.web.volumes[0].bogus is not a key the Compose Specification has here",
        ),
        (
            WEB + "    volumes: [{source: data, target: /x}]\nvolumes: {data: {driver: x}}\n",
            "services.web.volumes[0] needs type",
        ),
        (WEB + "    healthcheck: {interval: 5}\n", "services.web.healthcheck.interval must be a string, not a number"),
        (WEB + "    healthcheck: {interval: 5x}\n", "services.web.healthcheck.interval is not a duration (Go syntax"),
        (
            WEB + "    deploy: {update_config: {order: random}}\n",
            "must be one of start-first, stop-first, not 'random'",
        ),
        (WEB + "    ports: ['99999:80']\n", "services.web.ports[0] is not a port or port mapping"),
        (WEB + "    ports: [70000]\n", "services.web.ports[0] is not a port: 70000"),
        (WEB + "    deploy: {replicas: two}\n", "services.web.deploy.replicas must be an integer, not a string"),
    ],
)
def test_what_the_schema_refuses_is_refused_naming_the_key(text, problem):
    assert problem in refused(text)


@pytest.mark.parametrize(
    "ports", ["8080:8080", "127.0.0.1:8080:80", "[::1]:8080:80", "8000-8001:80-81", "53/udp", "9000-9010:80"]
)
def test_port_specs_docker_accepts_are_accepted(ports):
    assert parse(WEB + f"    ports: ['{ports}']\n", path=PATH).services == ("web",)


def test_a_service_without_an_image_is_refused():
    message = refused(WEB.replace("image: nginx:1.27", "deploy: {replicas: 1}"))
    assert "service web has neither image nor build" in message


def test_a_file_without_services_is_refused():
    assert refused('version: "3.8"\nservices: {}\n').endswith("defines no services")


def test_keys_docker_refuses_become_their_swarm_form_or_are_refused_saying_what_to_do():
    # Given keys docker compose takes and docker stack deploy refuses
    message = refused(WEB + "    extends: base\n    volumes_from: [db]\n")
    assert "services.web.extends: Slipway reads one file and does not merge services" in message
    assert "services.web.volumes_from: share a named volume" in message
    parsed = parse(WEB + "    mem_limit: 1g\n    cpus: 0.5\n    cpu_shares: 512\n    scale: 3\n", path=PATH)
    deploy = parsed.document["services"]["web"]["deploy"]
    assert deploy["resources"] == {"limits": {"memory": "1g", "cpus": "0.5"}}
    assert deploy["replicas"] == 3
    assert "services.web.cpu_shares: set deploy.resources.limits.cpus; not used" in parsed.warnings
    assert "services.web.mem_limit became deploy.resources.limits.memory" in parsed.warnings


IGNORED = {
    "cgroupns_mode": "host",
    "cgroup_parent": "x",
    "devices": ["/dev/fuse"],
    "domainname": "example.org",
    "external_links": ["db"],
    "ipc": "host",
    "links": ["db"],
    "mac_address": "02:42:ac:11:00:02",
    "network_mode": "host",
    "pid": "host",
    "privileged": True,
    "restart": "always",
    "security_opt": ["label:disable"],
    "shm_size": "1g",
    "userns_mode": "host",
    "container_name": "web",
    "expose": ["80"],
}


def test_keys_docker_stack_deploy_ignores_are_warnings_naming_service_and_key():
    # Given a service with every key docker/cli's loader lists as unsupported or deprecated
    # (but `build`, which Slipway builds: chalicelib/builds.py)
    assert set(IGNORED) == set(compose_yaml.UNSUPPORTED_PROPERTIES) | set(compose_yaml.DEPRECATED_PROPERTIES)
    text = yaml.safe_dump({"services": {"web": {"image": "nginx", **IGNORED}}})
    # When it is parsed
    parsed = parse(text, path=PATH)
    # Then each is a warning naming the service and the key, none an error
    assert sorted(w.split(":", 1)[0].split(" ")[0] for w in parsed.warnings) == sorted(
        f"services.web.{key}" for key in IGNORED
    )
    # And `restart` is carried over as Swarm has it
    assert parsed.document["services"]["web"]["deploy"]["restart_policy"] == {"condition": "any"}


# --- node-local data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mount", "volume"),
    [
        ("data:/var/lib/postgresql/data", "{}"),
        ("data:/var/lib/postgresql/data:rw", ""),
        ("{type: volume, source: data, target: /var/lib/postgresql/data}", "{driver: local}"),
        ("data:/var/lib/postgresql/data", "{external: true}"),
        ("data:/var/lib/postgresql/data", "{external: true, name: pgdata}"),
    ],
)
def test_a_named_volume_on_the_local_driver_is_refused_unless_allowed(mount, volume):
    # Given a service keeping its data in a node-local volume (short or long syntax)
    text = yml(
        f"""
        version: "3.8"
        services:
          db:
            image: postgres:16
            volumes: [{mount}]
        volumes:
          data: {volume}
        """
    )
    # Then it is refused, naming the service and the volume and the opt-in
    message = refused(text)
    assert "service db mounts volume 'data', which uses the local driver" in message
    assert "SLIPWAY_LOCAL_VOLUMES=allow" in message
    # Unless the environment opted in: then it is a warning
    parsed = parse(text, path=PATH, local_volumes=True)
    assert parsed.warnings == (
        "service db keeps volume 'data' on the node (SLIPWAY_LOCAL_VOLUMES=allow): its data is lost when the node is "
        "replaced",
    )


def test_a_volume_with_another_driver_is_accepted():
    text = WEB + "    volumes: ['data:/srv']\nvolumes:\n  data: {driver: rexray/ebs}\n"
    assert parse(text, path=PATH).warnings == ()


@pytest.mark.parametrize(
    ("mount", "warning"),
    [
        ("/var/cache/nginx", "services.web.volumes[0] is an anonymous volume"),
        ("'{type: volume, target: /var/cache/nginx}'", "services.web.volumes[0] is an anonymous volume"),
        ("/etc/slipway:/etc/nginx/conf.d:ro", "services.web.volumes[0] binds /etc/slipway from the node"),
        ("'{type: bind, source: /srv, target: /srv}'", "services.web.volumes[0] binds /srv from the node"),
    ],
)
def test_anonymous_volumes_and_bind_mounts_are_warnings(mount, warning):
    mount = mount.strip("'")
    parsed = parse(WEB + f"    volumes: [{mount}]\n", path=PATH)
    assert len(parsed.warnings) == 1 and parsed.warnings[0].startswith(warning)


def test_a_volume_the_file_does_not_declare_is_refused():
    assert "service web mounts volume 'data', which the file does not declare" in refused(
        WEB + "    volumes: [data:/x]\n"
    )


# --- secrets and configs --------------------------------------------------------------------------

SECRET_STACK = yml(
    """
    version: "3.8"
    services:
      web:
        image: nginx
        secrets: [app_token, {source: db_password, target: db}]
      worker:
        image: worker:1
        secrets: [app_token]
    secrets:
      app_token:
        external: true
      db_password:
        external: true
        name: whatever-the-user-called-it
    """
)


def test_external_secrets_are_slipway_secrets_named_by_their_key():
    parsed = parse(SECRET_STACK, path=PATH)
    assert parsed.secrets == ("app_token", "db_password")


def test_render_names_each_secret_after_its_swarm_secret():
    document = rendered(SECRET_STACK, {"app_token": "app_token-v3", "db_password": "db_password-v1"})
    assert document["secrets"] == {
        "app_token": {"external": True, "name": "app_token-v3"},
        "db_password": {"external": True, "name": "db_password-v1"},
    }
    assert document["services"]["web"]["secrets"] == ["app_token", {"source": "db_password", "target": "db"}]


def test_render_without_a_name_for_a_secret_is_a_value_error():
    with pytest.raises(ValueError, match="db_password"):
        render(parse(SECRET_STACK, path=PATH), {"app_token": "app_token-v3"})


def test_a_declared_secret_no_service_uses_is_a_warning():
    parsed = parse(WEB + "secrets:\n  spare: {external: true}\n", path=PATH)
    assert parsed.secrets == ()
    assert parsed.warnings == ("secrets.spare is declared but no service uses it",)


@pytest.mark.parametrize("source", ["file: ./token.txt", "environment: TOKEN"])
def test_a_secret_from_the_repository_or_a_variable_is_refused_pointing_to_ssm(source):
    text = WEB + f"    secrets: [token]\nsecrets:\n  token:\n    {source}\n"
    message = refused(text)
    assert f"secrets.token.{source.split(':')[0]}: a secret read from the repository or a variable is no secret" in (
        message
    )
    assert "aws ssm put-parameter --type SecureString --name /slipway/<environment>/secrets/<key>" in message
    assert message.count("\n") == 0  # one problem: the secret is not also said to have no source


def test_a_secret_the_file_does_not_declare_is_refused():
    message = refused(WEB + "    secrets: [app_token]\n")
    assert "service web uses secret 'app_token', which the file does not declare under the top-level secrets" in message


# --- interpolation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nginx:${TAG}", "${TAG} has no value (services.web.image): set it, aws ssm put-parameter --name "),
        ("nginx:$TAG", "${TAG} has no value (services.web.image)"),
        ("nginx:${TAG:?set the tag}", "${TAG} has no value (set the tag) (services.web.image)"),
        ("nginx:${TAG?}", "${TAG} has no value (services.web.image)"),
        ("nginx:${}", "services.web.image has a $ that starts no variable: write $$ for a literal $"),
        ("nginx:${TAG", "services.web.image has a $ that starts no variable"),
    ],
)
def test_a_variable_without_a_value_is_refused_naming_the_parameter_to_create(value, problem):
    message = refused(WEB.replace("nginx:1.27", f"'{value}'"))
    assert problem in message
    assert "/slipway/<environment>/vars/TAG --value ..., or give it a default, ${TAG:-value}" in message or "$$" in (
        message
    )


def test_defaults_and_escapes_are_interpolated_as_docker_does():
    # Given each form docker/cli's template package substitutes without an environment
    text = yml(
        """
        services:
          web:
            image: "nginx:${TAG:-1.27}"
            command: ["sh", "-c", "echo $$HOME ${A-x}${B:-} $$${C:-y} $$$${D}"]
            environment: {MODE: "${MODE:-b}"}
            deploy: {replicas: "${REPLICAS:-2}"}
            labels: {"${not-a-key}": v}
        """
    )
    web = parse(text, path=PATH).document["services"]["web"]
    # Then defaults are taken, $$ is a literal $, a typed key is cast, and keys are never interpolated
    assert web["image"] == "nginx:1.27"
    assert web["command"] == ("sh", "-c", "echo $HOME x $y $${D}")
    assert web["environment"]["MODE"] == "b"
    assert web["deploy"]["replicas"] == 2
    assert list(web["labels"]) == ["${not-a-key}"]
    # And the rendered file keeps every $ literal for docker's second interpolation
    assert rendered(text)["services"]["web"]["command"] == ["sh", "-c", "echo $$HOME x $$y $$$${D}"]


def test_an_interpolated_value_that_cannot_be_cast_is_refused():
    message = refused(WEB + "    deploy: {replicas: '${N:-two}'}\n")
    assert "services.web.deploy.replicas is not an integer once its variables are put in" in message


# --- update defaults ------------------------------------------------------------------------------


def test_render_gives_every_service_safe_update_defaults():
    document = rendered(WEB)
    deploy = document["services"]["web"]["deploy"]
    # No healthcheck in the file: the image may have one, with Docker's defaults: 3 x (30 s + 30 s)
    assert deploy["update_config"] == {"order": "start-first", "failure_action": "rollback", "monitor": "3m0s"}
    assert deploy["rollback_config"] == {"order": "start-first"}


def test_a_services_own_update_settings_win_key_by_key():
    own = "update_config: {order: stop-first, parallelism: 2}, rollback_config: {order: stop-first}"
    text = WEB + f"    deploy: {{{own}}}\n"
    deploy = rendered(text)["services"]["web"]["deploy"]
    assert deploy["update_config"] == {
        "order": "stop-first",
        "parallelism": 2,
        "failure_action": "rollback",
        "monitor": "3m0s",
    }
    assert deploy["rollback_config"] == {"order": "stop-first"}
    text = WEB + "    deploy: {update_config: {failure_action: pause, monitor: 10s}}\n"
    assert rendered(text)["services"]["web"]["deploy"]["update_config"] == {
        "failure_action": "pause",
        "monitor": "10s",
        "order": "start-first",
    }


def test_a_service_publishing_a_host_mode_port_updates_stop_first():
    text = WEB + "    ports: [{target: 80, published: 80, mode: host}]\n"
    deploy = rendered(text)["services"]["web"]["deploy"]
    assert deploy["update_config"]["order"] == deploy["rollback_config"]["order"] == "stop-first"


@pytest.mark.parametrize("mode", ["replicated-job", "global-job"])
def test_a_job_gets_no_update_defaults(mode):
    # Given a one-shot job, which Swarm never updates (docker refuses update_config on one)
    document = rendered('version: "3.13"\n' + WEB.split("\n", 1)[1] + f"    deploy: {{mode: {mode}}}\n")
    assert document["services"]["web"]["deploy"] == {"mode": mode}


@pytest.mark.parametrize(
    ("healthcheck", "monitor"),
    [
        ("{interval: 10s, timeout: 5s, retries: 5, start_period: 1m}", "2m15s"),  # 60 + 5 x (10 + 5)
        ("{interval: 1m30s}", "6m0s"),  # 3 x (90 + 30)
        ("{interval: 1s, timeout: 1s, retries: 2}", "30s"),  # 4 s: never below 30 s
        ("{disable: true}", "30s"),
        ("{test: [NONE]}", "30s"),
        ("{interval: 0s, retries: 0}", "3m0s"),  # zero is Docker's default
    ],
)
def test_the_update_monitor_covers_the_health_check(healthcheck, monitor):
    document = rendered(WEB + f"    healthcheck: {healthcheck}\n")
    assert document["services"]["web"]["deploy"]["update_config"]["monitor"] == monitor


@pytest.mark.parametrize(
    ("header", "body", "version"),
    [
        ('version: "3.4"\n', "", "3.7"),
        ('version: "3.9"\n', "", "3.9"),
        ("", "", "3.7"),
        ("", "    healthcheck: {start_interval: 2s}\n", "3.12"),
    ],
)
def test_the_rendered_version_is_the_lowest_that_has_every_key(header, body, version):
    text = header + "services:\n  web:\n    image: nginx\n" + body
    assert rendered(text)["version"] == version


# --- durations, keys, the dataclass ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1m30s", 90 * 10**9),
        ("500ms", 500 * 10**6),
        ("1.5h", 5400 * 10**9),
        ("-1.5h", -5400 * 10**9),
        ("+5s", 5 * 10**9),
        ("0", 0),
        (".5s", 5 * 10**8),
        ("5.s", 5 * 10**9),
        ("1h2m3s4ms5us6ns", 3723004005006),
        ("3µs", 3000),
        ("3μs", 3000),
        ("2562047h47m16.854775807s", 2**63 - 1),
    ],
)
def test_durations_parse_as_go_parses_them(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "s", ".s", "1x", "1 s", "-", "5s3", "2562047h47m16.854775808s"])
def test_durations_go_refuses_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0s"), (90 * 10**9, "1m30s"), (3600 * 10**9, "1h0m0s"), (1_500_000_000, "1.5s"), (250 * 10**6, "250ms")],
)
def test_durations_print_as_go_prints_them(ns, text):
    assert format_duration(ns) == text


def test_the_content_key_is_the_sha256_of_the_bytes():
    data = b"services: {}\n"
    assert content_key(data) == f"stacks/{hashlib.sha256(data).hexdigest()}.yml"


def test_a_stack_is_frozen_and_its_document_read_only():
    parsed = parse(WEB, path=PATH)
    with pytest.raises(AttributeError):
        parsed.services = ()  # type: ignore[misc]  # the refused write is the test
    with pytest.raises(TypeError):
        parsed.document["services"]["web"]["image"] = "other"  # type: ignore[index]  # the refused write is the test
    assert parsed == parse(WEB, path=PATH) and hash(parsed) == hash(parse(WEB, path=PATH))


def test_stack_invalid_is_an_invalid_input():
    assert issubclass(StackInvalid, InvalidInput)
