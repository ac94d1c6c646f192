"""The application's images: which services the stack builds from the repository, the content
address of each build, and what CodeBuild runs to make it. Pure: the steps (steps/build.py) gather
the facts (git tree ids from GitHub, what ECR has) and carry out the answers.

A service with `build:` (the Compose build specification: `context`, `dockerfile`,
`dockerfile_inline`, `args`, `target`, `platforms`, `secrets`, `labels`) is built from the pushed
commit by BuildKit in CodeBuild, never on the nodes, and pushed to the environment's ECR
repository for the service (`naming.repository_name`). Its **build key** is a digest of everything
that shapes the image: the git tree id of its context (every file under it), the Dockerfile's path,
and its blob id when it lies outside the context, the inline Dockerfile, the arguments, the target,
the platforms, the labels and the names of its build secrets (never their values: a changed secret
value alone does not rebuild). The image is tagged with its key, so a key ECR already holds is
never built again, and a push that changes nothing a build reads builds nothing. The rollout's
digest comparison then updates only the services whose image changed.

Keys the build specification has that BuildKit in CodeBuild would get wrong or that cannot reach it
are refused (`ssh`, `additional_contexts`, a remote context); `cache_from`, `cache_to`, `no_cache`,
`pull`, `tags`, `network`, `shm_size`, `extra_hosts`, `isolation` and `privileged` are ignored with a
warning (Slipway sets its own cache and tag).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.plans import TERMINAL_BAD_BUILD

KEY_VERSION = "slipway-build-1"  # part of every key: bump it when the way images are built changes
DEFAULT_PLATFORM = "linux/amd64"  # what the node image runs (packer/: an x86_64 AMI)
CACHE_TAG = "buildcache"  # the BuildKit registry cache's tag, in the service's own repository
# The environment variable of a build that holds one build secret's value (CodeBuild resolves it
# from Parameter Store: the value never passes through Slipway).
SECRET_VARIABLE = "BUILD_SECRET_{index}"
SUPPORTED = frozenset(
    {"context", "dockerfile", "dockerfile_inline", "args", "target", "platforms", "secrets", "labels"}
)
IGNORED = frozenset(
    {
        "cache_from",
        "cache_to",
        "no_cache",
        "pull",
        "tags",
        "network",
        "shm_size",
        "extra_hosts",
        "isolation",
        "privileged",
    }
)
# A built service's name names its ECR repository (a path component: lower-case letters and digits
# in runs joined by one '.', '_' or '-') and its buildx bake target ([a-zA-Z0-9_-]+): both hold for
# these names, compared lower-cased.
_BUILT_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[_-][a-zA-Z0-9]+)*$")
REFUSED = {
    "ssh": "SSH agent forwarding has no agent to forward in CodeBuild",
    "additional_contexts": "only the service's own context is read from the commit",
    "entitlements": "CodeBuild's BuildKit grants no entitlements",
    "ulimits": "CodeBuild's BuildKit sets no build ulimits",
}


@dataclass(frozen=True)
class BuildSpec:
    """One service's build, as the stack file gives it, paths relative to the repository's root."""

    service: str
    context: str  # "." for the root
    dockerfile: str  # relative to the context, as BuildKit reads it
    dockerfile_inline: str | None
    args: tuple[tuple[str, str], ...]
    target: str | None
    platforms: tuple[str, ...]
    secrets: tuple[str, ...]  # top-level secret keys: Slipway secrets, values in Parameter Store
    labels: tuple[tuple[str, str], ...]

    @property
    def dockerfile_path(self) -> str:
        """The Dockerfile's path from the repository's root."""
        return posixpath.normpath(posixpath.join(self.context, self.dockerfile))

    @property
    def dockerfile_outside_context(self) -> bool:
        if self.dockerfile_inline is not None:
            return False
        return not _within(self.dockerfile_path, self.context)


@dataclass(frozen=True)
class Specs:
    """Every build of a stack file, and what is wrong or ignored in them."""

    builds: tuple[BuildSpec, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def specs(services: Mapping[str, Any], stack_path: str) -> Specs:
    """The builds of the stack file at `stack_path` (contexts are relative to its folder, as
    Compose reads them), with every problem found, not only the first."""
    base = posixpath.dirname(stack_path)
    builds: list[BuildSpec] = []
    problems: list[str] = []
    warnings: list[str] = []
    repositories: dict[str, str] = {}
    for name in sorted(services):
        raw = (services[name] or {}).get("build")
        if raw is None:
            continue
        where = f"services.{name}.build"
        problems += _name_problems(name, repositories)
        spec = {"context": raw} if isinstance(raw, str) else dict(raw) if isinstance(raw, Mapping) else None
        if spec is None:
            problems.append(f"{where} must be a path or a mapping")
            continue
        found = len(problems)
        _check_keys(where, spec, problems, warnings)
        context = str(spec.get("context") or ".")
        if "://" in context or context.startswith("git@"):
            problems.append(f"{where}.context {context!r} is remote: Slipway builds from the pushed commit only")
        elif posixpath.isabs(context):
            problems.append(f"{where}.context {context!r} is absolute: give a path inside the repository")
        context = posixpath.normpath(posixpath.join(base, context))
        outside = context == ".." or context.startswith("../")
        if outside:
            problems.append(f"{where}.context leaves the repository ({context})")
        dockerfile = str(spec.get("dockerfile") or "Dockerfile")
        inline = spec.get("dockerfile_inline")
        if inline is not None and "dockerfile" in spec:
            problems.append(f"{where} has both dockerfile and dockerfile_inline: give one")
        path = posixpath.normpath(posixpath.join(context, dockerfile))
        if not outside and (posixpath.isabs(dockerfile) or path == ".." or path.startswith("../")):
            problems.append(f"{where}.dockerfile {dockerfile!r} is not a path inside the repository")
        args = _pairs(spec.get("args"), f"{where}.args", problems)
        labels = _pairs(spec.get("labels"), f"{where}.labels", problems)
        secrets = _secret_names(spec.get("secrets") or [], f"{where}.secrets", problems)
        platforms = tuple(str(p) for p in spec.get("platforms") or (DEFAULT_PLATFORM,))
        target = spec.get("target")
        if len(problems) > found:
            continue
        builds.append(
            BuildSpec(
                service=name,
                context=context,
                dockerfile=dockerfile,
                dockerfile_inline=str(inline) if inline is not None else None,
                args=args,
                target=str(target) if target else None,
                platforms=platforms,
                secrets=secrets,
                labels=labels,
            )
        )
    return Specs(tuple(builds), tuple(problems), tuple(warnings))


def _name_problems(name: str, repositories: dict[str, str]) -> list[str]:
    """A built service's name must make an ECR repository and a bake target, and no other built
    service's lower-cased name may equal it (`repositories`: lower-cased -> first name, updated)."""
    if not _BUILT_NAME.match(name):
        return [
            f"services.{name} is built, so its name names an ECR repository and a build target: use letters "
            "and digits joined by single '-' or '_'"
        ]
    first = repositories.setdefault(name.lower(), name)
    if first != name:
        return [
            f"services.{name} and services.{first} would share an ECR repository (repository names are "
            "lower-case): rename one"
        ]
    return []


def _check_keys(where: str, spec: Mapping[str, Any], problems: list[str], warnings: list[str]) -> None:
    for key in sorted(spec):
        if key in REFUSED:
            problems.append(f"{where}.{key} is not supported: {REFUSED[key]}")
        elif key in IGNORED:
            warnings.append(f"{where}.{key} is ignored: Slipway builds in CodeBuild with its own cache and tag")
        elif key not in SUPPORTED:
            problems.append(f"{where}.{key} is not a key of the Compose build specification Slipway reads")


def _pairs(value: Any, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """`args` or `labels` as sorted pairs: a mapping, or a list of `KEY=value`. A key without a
    value (Compose takes it from the shell) is refused: a build here has no shell to take it from."""
    if value is None:
        return ()
    items: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):  # a parsed Stack's document is frozen: its lists are tuples
        for entry in value:
            key, sep, rest = str(entry).partition("=")
            items.append((key, rest if sep else None))
    else:
        problems.append(f"{where} must be a mapping or a list of KEY=value")
        return ()
    unset = sorted(k for k, v in items if v is None)
    if unset:
        problems.append(
            f"{where}: {', '.join(unset)} ha{'ve' if len(unset) > 1 else 's'} no value (Compose would take it "
            "from the shell; a build in CodeBuild has none): give each a value"
        )
    return tuple(sorted((k, _text(v)) for k, v in items if v is not None))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _secret_names(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    names = []
    for i, entry in enumerate(value if isinstance(value, list | tuple) else [value]):
        name = entry if isinstance(entry, str) else entry.get("source") if isinstance(entry, Mapping) else None
        if not name:
            problems.append(f"{where}[{i}] names no secret")
            continue
        if isinstance(entry, Mapping) and entry.get("target") not in (None, name):
            problems.append(f"{where}[{i}]: a build secret's id is its name; drop target {entry.get('target')!r}")
        names.append(str(name))
    return tuple(sorted(set(names)))


def _within(path: str, folder: str) -> bool:
    return folder == "." or path == folder or path.startswith(folder.rstrip("/") + "/")


def paths_to_look_up(spec: BuildSpec) -> tuple[str, ...]:
    """The repository paths whose git ids make the key: the context, and an outside Dockerfile."""
    return (spec.context, spec.dockerfile_path) if spec.dockerfile_outside_context else (spec.context,)


def build_key(spec: BuildSpec, ids: Mapping[str, str | None]) -> str:
    """The content address of a service's image (see the module docstring). `ids` maps each of
    `paths_to_look_up(spec)` to its git object id at the commit (None: not there, ValueError)."""
    missing = [path for path in paths_to_look_up(spec) if not ids.get(path)]
    if missing:
        raise ValueError(f"no git id for {', '.join(missing)}")
    identity = {
        "version": KEY_VERSION,
        "context": ids[spec.context],
        "dockerfile": spec.dockerfile,
        "dockerfile_blob": ids[spec.dockerfile_path] if spec.dockerfile_outside_context else None,
        "dockerfile_inline": spec.dockerfile_inline,
        "args": spec.args,
        "target": spec.target,
        "platforms": spec.platforms,
        "labels": spec.labels,
        "secrets": spec.secrets,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def bake_file(spec: BuildSpec, repository_uri: str, key: str, cache_uri: str) -> dict[str, Any]:
    """The `docker buildx bake` file for one service's build (its JSON form; buildx's bake file
    reference): the image tagged with its key and pushed, BuildKit's registry cache beside it in the
    cache repository in the form ECR takes (an image manifest with OCI media types, moby/buildkit#699),
    each build secret read from an environment variable CodeBuild fills from Parameter Store."""
    cache = f"type=registry,ref={cache_uri}:{CACHE_TAG}"
    target: dict[str, Any] = {
        "context": spec.context,
        "dockerfile": spec.dockerfile,
        "tags": [f"{repository_uri}:{key}"],
        "platforms": list(spec.platforms),
        "cache-from": [cache],
        "cache-to": [f"{cache},mode=max,image-manifest=true,oci-mediatypes=true"],
        "output": ["type=registry"],
    }
    if spec.dockerfile_inline is not None:
        del target["dockerfile"]
        target["dockerfile-inline"] = spec.dockerfile_inline
    if spec.args:
        target["args"] = dict(spec.args)
    if spec.labels:
        target["labels"] = dict(spec.labels)
    if spec.target:
        target["target"] = spec.target
    if spec.secrets:
        target["secret"] = [f"id={name},env={SECRET_VARIABLE.format(index=i)}" for i, name in enumerate(spec.secrets)]
    return {"target": {spec.service: target}}


def secret_variables(spec: BuildSpec, parameter: Mapping[str, str]) -> list[dict[str, str]]:
    """CodeBuild's environment variables for the build secrets: each of type PARAMETER_STORE, whose
    value is the parameter's name (CodeBuild reads the value; Slipway never does)."""
    return [
        {"name": SECRET_VARIABLE.format(index=i), "value": parameter[name], "type": "PARAMETER_STORE"}
        for i, name in enumerate(spec.secrets)
    ]


# What CodeBuild runs for one service (passed as the build's buildspecOverride, so it is versioned
# with the code that writes the bake file). The docker-container driver is the one that can export
# a registry cache; --provenance=false keeps an unchanged build's digest (moby/buildkit#5894); the
# digest BuildKit pushed is exported for 'Check the builds'.
_LOGIN = 'aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin "$REGISTRY"'
_BAKE = (
    "docker buildx bake --file /tmp/slipway.bake.json --provenance=false"
    ' --metadata-file /tmp/metadata.json "$BUILD_TARGET"'
)
_DIGEST = 'IMAGE_DIGEST=$(jq -r --arg t "$BUILD_TARGET" \'.[$t]["containerimage.digest"]\' /tmp/metadata.json)'
BUILDSPEC = f"""\
version: 0.2
env:
  exported-variables:
    - IMAGE_DIGEST
phases:
  pre_build:
    commands:
      - printenv BAKE_FILE > /tmp/slipway.bake.json
      - {_LOGIN}
      - docker buildx create --name slipway --driver docker-container --use
  build:
    commands:
      - {_BAKE}
  post_build:
    commands:
      - {_DIGEST}
"""


def build_status(status: str, digest: str | None) -> str:
    """IN_PROGRESS, SUCCEEDED, or the reason a service's build failed."""
    if status == "SUCCEEDED":
        return "SUCCEEDED" if digest else "the build succeeded but exported no IMAGE_DIGEST"
    if status in TERMINAL_BAD_BUILD:
        return f"the build ended {status}"
    return "IN_PROGRESS"


def images(builds: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """{service: image reference to deploy} for the run's builds (`$.builds.services`)."""
    return {b["name"]: b["image"] for b in builds}
