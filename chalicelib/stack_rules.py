"""Slipway's own rules for a stack file, on top of what docker stack deploy checks (chalicelib/stack.py
runs them in order, and its docstring says what they are): images or builds, references to what the
file declares, node-local data, Slipway secrets. Pure: problems and warnings as sentences naming
the service and the key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib import builds, compose_yaml

LOCAL_VOLUMES_OPT_IN = "SLIPWAY_LOCAL_VOLUMES=allow"


@dataclass(frozen=True)
class Findings:
    problems: list[str]
    warnings: list[str]
    secrets: tuple[str, ...]
    builds: tuple[str, ...]
    build_secrets: tuple[str, ...]


def check(document: Mapping[str, Any], local_volumes: bool, path: str = "stack.yml") -> Findings:
    """What the schema cannot say: images and builds, undeclared references, node-local data,
    Slipway secrets."""
    problems: list[str] = []
    warnings: list[str] = []
    services: Mapping[str, Any] = document.get("services") or {}
    volumes: Mapping[str, Any] = document.get("volumes") or {}
    secrets: Mapping[str, Any] = document.get("secrets") or {}
    configs: Mapping[str, Any] = document.get("configs") or {}
    if not services:
        problems.append("defines no services")
    used: set[str] = set()
    build_specs = builds.specs(services, path)
    problems += build_specs.problems
    warnings += build_specs.warnings
    built = {spec.service for spec in build_specs.builds}
    build_secrets = {name for spec in build_specs.builds for name in spec.secrets}
    for name in sorted(services):
        service = services[name]
        if not service.get("image") and "build" not in service:
            problems.append(f"service {name} has neither image nor build: give it one to run")
        elif service.get("image") and name in built:
            warnings.append(
                f"services.{name}.image ({service['image']}) is not used: Slipway builds the service and runs the "
                "image it pushes to the environment's ECR repository"
            )
        for i, mount in enumerate(service.get("volumes") or []):
            _check_mount(name, f"services.{name}.volumes[{i}]", mount, volumes, local_volumes, problems, warnings)
        for section, declared in (("secrets", secrets), ("configs", configs)):
            found = _references(name, section, service.get(section) or [], declared, problems)
            if section == "secrets":
                used |= found
    for key in sorted(build_secrets):
        if key not in secrets:
            problems.append(f"a build mounts secret {key}, which the top-level secrets do not declare")
    slipway_secrets = _check_declarations(volumes, secrets, configs, used | build_secrets, problems, warnings)
    return Findings(
        problems,
        warnings,
        tuple(sorted(set(slipway_secrets) & used)),
        tuple(sorted(built)),
        tuple(sorted(set(slipway_secrets) & build_secrets)),
    )


def _references(
    service: str, section: str, references: list[Any], declared: Mapping[str, Any], problems: list[str]
) -> set[str]:
    """A service's secrets or configs: each must name what the file declares. The names used."""
    used: set[str] = set()
    for i, reference in enumerate(references):
        source = reference if isinstance(reference, str) else reference.get("source")
        if not source:
            problems.append(f"services.{service}.{section}[{i}] has no source")
        elif source not in declared:
            problems.append(
                f"service {service} uses {section[:-1]} {source!r}, which the file does not declare under "
                f"the top-level {section}"
            )
        else:
            used.add(source)
    return used


def _check_declarations(
    volumes: Mapping[str, Any],
    secrets: Mapping[str, Any],
    configs: Mapping[str, Any],
    used: set[str],
    problems: list[str],
    warnings: list[str],
) -> list[str]:
    """The top-level volumes, secrets and configs; the external secrets a service uses (Slipway's
    to create from SSM)."""
    for key, spec in volumes.items():
        if isinstance(spec, dict) and spec.get("external"):
            conflicts = [k for k in ("driver", "driver_opts", "labels") if spec.get(k)]
            if conflicts:
                problems.append(f"volumes.{key}: an external volume takes no {conflicts[0]} (docker refuses both)")
    slipway_secrets = []
    for key, spec in secrets.items():
        if spec.get("external"):
            if key in used:
                slipway_secrets.append(key)
            else:
                warnings.append(f"secrets.{key} is declared but no service uses it")
        elif not spec.get("driver"):
            problems.append(
                f"secrets.{key} has no source: declare it `external: true` and put its value in SSM Parameter "
                f"Store under {compose_yaml.SECRETS_HOME}/{key}"
            )
    for key, spec in configs.items():
        if not spec.get("external"):
            problems.append(
                f"configs.{key} has no source: declare it `external: true`, or make it a secret (its value in "
                f"SSM Parameter Store under {compose_yaml.SECRETS_HOME}/{key})"
            )
    return slipway_secrets


def _check_mount(
    service: str,
    where: str,
    mount: Any,
    volumes: Mapping[str, Any],
    local_volumes: bool,
    problems: list[str],
    warnings: list[str],
) -> None:
    if isinstance(mount, str):
        kind, source, error = short_mount(mount)
        if error:
            problems.append(f"{where}: invalid volume spec {mount!r}: {error}")
            return
    else:
        kind, source = str(mount.get("type")), str(mount.get("source") or "")
    if kind == "bind":
        warnings.append(
            f"{where} binds {source} from the node: nodes are replaced whenever the node image changes, so "
            f"only what the node image put there is found"
        )
    elif kind == "volume" and not source:
        warnings.append(f"{where} is an anonymous volume: its data is lost when the task is replaced")
    elif kind == "volume":
        if source not in volumes:
            problems.append(
                f"service {service} mounts volume {source!r}, which the file does not declare under the top-level "
                f"volumes"
            )
        elif _is_local(volumes[source]) and local_volumes:
            warnings.append(
                f"service {service} keeps volume {source!r} on the node ({LOCAL_VOLUMES_OPT_IN}): its data is "
                f"lost when the node is replaced"
            )
        elif _is_local(volumes[source]):
            problems.append(
                f"service {service} mounts volume {source!r}, which uses the local driver: nodes are replaced "
                f"whenever the node image changes, so its data would be lost; give the volume a driver that keeps "
                f"data off the node, or set {LOCAL_VOLUMES_OPT_IN} to accept the loss"
            )


def _is_local(spec: Any) -> bool:
    """No driver given is the local driver; an external volume's driver is unknown, so local too."""
    if not isinstance(spec, dict) or spec.get("external"):
        return True
    return spec.get("driver") in (None, "", "local")


def short_mount(spec: str) -> tuple[str, str, str | None]:
    """(type, source, error) of a short-syntax volume, as docker/cli internal/volumespec Parse reads
    it: `[source:]target[:mode]`; a source starting with '.', '/' or '~' (or a Windows path) binds."""
    if not spec:
        return "volume", "", "invalid empty volume spec"
    if len(spec) <= 2:
        return "volume", "", None
    source = target = ""
    buffer = ""
    for char in [*spec, None]:
        if char == ":" and len(buffer) == 1 and buffer.isalpha():  # a Windows drive, "c:"
            buffer += char
        elif char in (":", None):
            if not buffer:
                return "volume", source, "empty section between colons"
            if not source and char is None:
                target = buffer
            elif not source:
                source = buffer
            elif not target:
                target = buffer
            elif char == ":":
                return "volume", source, "too many colons"
            buffer = ""
        else:
            buffer += char
    return ("bind" if source and _is_file_path(source) else "volume"), source, None


def _is_file_path(source: str) -> bool:
    if source[0] in "./~":
        return True
    if len(source) == 1:
        return False
    return source.startswith("\\\\") or (source[0].isalpha() and source[1] == ":")
