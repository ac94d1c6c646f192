"""The builds' pure decisions: the build specification read as Compose reads it, every problem at
once; the key that decides what is built; the bake file and the buildspec CodeBuild runs."""

import pytest
import yaml

from chalicelib import builds
from chalicelib.builds import BuildSpec


def specs(services: dict, path: str = "stack.yml") -> builds.Specs:
    return builds.specs(services, path)


def test_short_and_long_syntax_read_as_compose_reads_them_relative_to_the_stack_file():
    found = specs(
        {
            "web": {"build": "./web"},
            "api": {
                "build": {
                    "context": "../services/api",
                    "dockerfile": "docker/Dockerfile.prod",
                    "args": ["MODE=prod", "DEBUG=false"],
                    "target": "runtime",
                    "platforms": ["linux/arm64"],
                    "secrets": ["npm_token", {"source": "pip_conf"}],
                    "labels": {"team": "core"},
                }
            },
            "db": {"image": "postgres:16"},
        },
        path="deploy/stack.yml",
    )
    assert found.problems == found.warnings == ()
    api, web = found.builds
    assert web == BuildSpec("web", "deploy/web", "Dockerfile", None, (), None, ("linux/amd64",), (), ())
    assert api == BuildSpec(
        service="api",
        context="services/api",
        dockerfile="docker/Dockerfile.prod",
        dockerfile_inline=None,
        args=(("DEBUG", "false"), ("MODE", "prod")),
        target="runtime",
        platforms=("linux/arm64",),
        secrets=("npm_token", "pip_conf"),
        labels=(("team", "core"),),
    )
    assert api.dockerfile_path == "services/api/docker/Dockerfile.prod" and not api.dockerfile_outside_context


def test_every_problem_of_every_build_is_named_at_once():
    found = specs(
        {
            "a": {"build": {"context": "https://github.com/x/y.git"}},
            "b": {"build": {"context": "../../outside"}},
            "c": {"build": {"context": ".", "ssh": ["default"], "additional_contexts": {"x": "."}}},
            "d": {"build": {"context": ".", "args": {"TOKEN": None}, "dockerfile": "D", "dockerfile_inline": "FROM x"}},
            "f": {"build": {"context": "web", "dockerfile": "../../Dockerfile"}},
            "e": {"build": {"context": ".", "cache_from": ["x"], "no_cache": True, "frobnicate": 1}},
        }
    )
    assert found.problems == (
        "services.a.build.context 'https://github.com/x/y.git' is remote: Slipway builds from the pushed commit only",
        "services.b.build.context leaves the repository (../../outside)",
        "services.c.build.additional_contexts is not supported: only the service's own context is read from the commit",
        "services.c.build.ssh is not supported: SSH agent forwarding has no agent to forward in CodeBuild",
        "services.d.build has both dockerfile and dockerfile_inline: give one",
        "services.d.build.args: TOKEN has no value (Compose would take it from the shell; a build in CodeBuild has "
        "none): give each a value",
        "services.e.build.frobnicate is not a key of the Compose build specification Slipway reads",
        "services.f.build.dockerfile '../../Dockerfile' is not a path inside the repository",
    )
    assert found.warnings == (
        "services.e.build.cache_from is ignored: Slipway builds in CodeBuild with its own cache and tag",
        "services.e.build.no_cache is ignored: Slipway builds in CodeBuild with its own cache and tag",
    )
    assert [b.service for b in found.builds] == []


WEB = BuildSpec("web", "web", "Dockerfile", None, (("V", "1"),), None, ("linux/amd64",), ("tok",), ())
IDS = {"web": "a" * 40}


def test_the_key_changes_with_what_shapes_the_image_and_nothing_else():
    key = builds.build_key(WEB, IDS)
    assert len(key) == 24 and builds.build_key(WEB, dict(IDS)) == key  # the same content, the same key
    import dataclasses

    changed = [
        builds.build_key(WEB, {"web": "b" * 40}),  # a file under the context
        builds.build_key(dataclasses.replace(WEB, args=(("V", "2"),)), IDS),
        builds.build_key(dataclasses.replace(WEB, target="test"), IDS),
        builds.build_key(dataclasses.replace(WEB, platforms=("linux/arm64",)), IDS),
        builds.build_key(dataclasses.replace(WEB, dockerfile="Dockerfile.prod"), IDS),
        builds.build_key(dataclasses.replace(WEB, secrets=("other",)), IDS),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    # The service's name is not part of it: two services built alike share content, not a key's meaning
    assert builds.build_key(dataclasses.replace(WEB, service="web2"), IDS) == key


def test_a_dockerfile_outside_the_context_is_keyed_by_its_own_blob():
    spec = BuildSpec("w", "worker", "../docker/w.Dockerfile", None, (), None, ("linux/amd64",), (), ())
    assert spec.dockerfile_outside_context
    assert builds.paths_to_look_up(spec) == ("worker", "docker/w.Dockerfile")
    one = builds.build_key(spec, {"worker": "a" * 40, "docker/w.Dockerfile": "1" * 40})
    two = builds.build_key(spec, {"worker": "a" * 40, "docker/w.Dockerfile": "2" * 40})
    assert one != two
    with pytest.raises(ValueError, match="no git id for docker/w.Dockerfile"):
        builds.build_key(spec, {"worker": "a" * 40})


def test_the_bake_file_pushes_the_key_caches_as_ecr_takes_it_and_reads_secrets_from_variables():
    uri, cache = (
        "1.dkr.ecr.eu-west-1.amazonaws.com/slipway/dev/web",
        "1.dkr.ecr.eu-west-1.amazonaws.com/slipway/dev/cache/web",
    )
    assert builds.bake_file(WEB, uri, "k" * 24, cache) == {
        "target": {
            "web": {
                "context": "web",
                "dockerfile": "Dockerfile",
                "tags": [f"{uri}:{'k' * 24}"],
                "platforms": ["linux/amd64"],
                "cache-from": [f"type=registry,ref={cache}:buildcache"],
                "cache-to": [f"type=registry,ref={cache}:buildcache,mode=max,image-manifest=true,oci-mediatypes=true"],
                "output": ["type=registry"],
                "args": {"V": "1"},
                "secret": ["id=tok,env=BUILD_SECRET_0"],
            }
        }
    }
    assert builds.secret_variables(WEB, {"tok": "/slipway/dev/secrets/tok"}) == [
        {"name": "BUILD_SECRET_0", "value": "/slipway/dev/secrets/tok", "type": "PARAMETER_STORE"}
    ]


def test_the_buildspec_bakes_the_one_target_without_provenance_and_exports_its_digest():
    spec = yaml.safe_load(builds.BUILDSPEC)
    assert spec["version"] == 0.2 and spec["env"]["exported-variables"] == ["IMAGE_DIGEST"]
    commands = [c for phase in spec["phases"].values() for c in phase["commands"]]
    assert any("--driver docker-container" in c for c in commands)
    (bake,) = [c for c in commands if c.startswith("docker buildx bake")]
    assert "--provenance=false" in bake and bake.endswith('"$BUILD_TARGET"') and "--metadata-file" in bake
    assert any(c.startswith("IMAGE_DIGEST=") and "containerimage.digest" in c for c in commands)


@pytest.mark.parametrize(
    ("status", "digest", "verdict"),
    [
        ("IN_PROGRESS", None, "IN_PROGRESS"),
        ("SUCCEEDED", "sha256:" + "a" * 64, "SUCCEEDED"),
        ("SUCCEEDED", None, "the build succeeded but exported no IMAGE_DIGEST"),
        ("FAILED", None, "the build ended FAILED"),
        ("TIMED_OUT", None, "the build ended TIMED_OUT"),
    ],
)
def test_a_builds_status_is_in_progress_succeeded_or_why_it_failed(status, digest, verdict):
    assert builds.build_status(status, digest) == verdict


def test_a_built_services_name_must_make_an_ecr_repository_and_a_bake_target():
    found = specs({name: {"build": "."} for name in ("api--v2", "_worker", "a.b", "Web", "web", "api_v2", "svc-1")})
    assert found.problems == (
        "services._worker is built, so its name names an ECR repository and a build target: use letters and digits "
        "joined by single '-' or '_'",
        "services.a.b is built, so its name names an ECR repository and a build target: use letters and digits "
        "joined by single '-' or '_'",
        "services.api--v2 is built, so its name names an ECR repository and a build target: use letters and digits "
        "joined by single '-' or '_'",
        "services.web and services.Web would share an ECR repository (repository names are lower-case): rename one",
    )
