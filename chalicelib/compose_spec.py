"""A Compose file as docker compose reads it (the Compose Specification: no `version:` needed,
`depends_on` with conditions, `restart`, `mem_limit`, a top-level `name`, ...) made into what
`docker stack deploy` takes, each key it drops or changes a warning that says what Swarm does
instead. Pure.

`normalize` first translates what has a Swarm equivalent (`restart` -> deploy.restart_policy,
`mem_limit`/`mem_reservation`/`cpus`/`pids_limit` -> deploy.resources, `scale` -> deploy.replicas,
`depends_on`'s mapping -> its list), leaves out the services of a profile (docker compose starts
them only when asked), refuses what it cannot carry over (`include`, `extends`, `volumes_from`),
then drops every key docker/cli's newest schema (compose_schema.DEFAULT_VERSION) has no place for,
walking the document beside that schema: a key dropped there is named with the schema's own path,
never from a hand-written list. `build` is left as it is: Slipway builds it (builds.py) and the
rendered stack runs the image instead."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib import compose_schema

# What a dropped service key means on a swarm (the rest get the generic sentence).
_DROPPED = {
    "container_name": "Swarm names each task itself (<stack>_<service>.<n>); other services reach it by its "
    "service name",
    "expose": "services on the same network reach each other on any port",
    "privileged": "Swarm runs no privileged task; give the service the capabilities it needs (cap_add)",
    "network_mode": "a Swarm service joins the stack's overlay networks",
    "links": "services on the same network reach each other by name",
    "external_links": "services on the same network reach each other by name",
    "cpu_shares": "set deploy.resources.limits.cpus",
    "cpu_quota": "set deploy.resources.limits.cpus",
    "cpu_period": "set deploy.resources.limits.cpus",
    "cpuset": "set deploy.resources.limits.cpus",
    "memswap_limit": "set deploy.resources.limits.memory",
    "pull_policy": "a node pulls the image pinned to its digest",
    "platform": "a node runs the image built or pulled for its own platform",
    "develop": "docker compose watch is for a development machine",
}
_REFUSED = {
    "extends": "Slipway reads one file and does not merge services: write the service out (a YAML anchor and "
    "`<<: *base` share keys within the file)",
    "volumes_from": "share a named volume: declare it under the top-level volumes and mount it in both services",
}
_RESOURCES = {
    "mem_limit": ("limits", "memory"),
    "mem_reservation": ("reservations", "memory"),
    "cpus": ("limits", "cpus"),
    "pids_limit": ("limits", "pids"),
}
_RESTART = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}
_NETWORK_DRIVERS = ("bridge", "host", "none")


@dataclass
class Normalized:
    document: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def normalize(document: Mapping[str, Any], profiles: tuple[str, ...] = ()) -> Normalized:
    """`document` (valid against the Compose Specification, variables put in) as docker stack
    deploy takes it; see the module docstring. `profiles` are the active ones (COMPOSE_PROFILES;
    `*` all of them), as docker compose starts them."""
    out = Normalized(copy.deepcopy(dict(document)))
    doc = out.document
    if "name" in doc:
        out.warnings.append("name: the stack is named after the environment it deploys to; name is not used")
        del doc["name"]
    if "version" in doc and _docker_version(doc["version"]) is None:
        out.warnings.append(
            f"version: {doc['version']!r} is obsolete in the Compose Specification and not used (leave it out)"
        )
        del doc["version"]
    if "include" in doc:
        out.problems.append("include: Slipway reads one file: put the included services in it")
    services = doc.get("services") or {}
    for name in sorted(services):
        service = services[name]
        if not isinstance(service, dict):
            continue
        own = [str(p) for p in service.get("profiles") or []]
        if own and "*" not in profiles and not set(own) & set(profiles):
            shown = ", ".join(own)
            out.warnings.append(
                f"services.{name} is in profile {shown}, which docker compose starts only when asked "
                "(COMPOSE_PROFILES): not deployed"
            )
            del services[name]
            continue
        _service(name, service, out)
    for key, network in (doc.get("networks") or {}).items():
        driver = network.get("driver") if isinstance(network, dict) else None
        if driver in _NETWORK_DRIVERS:
            out.warnings.append(
                f"networks.{key}.driver: {driver} is a single host's network; a stack's networks are overlay networks "
                "across the swarm, so it is one"
            )
            del network["driver"]
    out.document = _fit(doc, _schema(), _schema(), "", out.warnings)
    return out


def docker_only(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`document` without the service keys docker/cli's newest schema has and the Compose
    Specification does not (cgroupns_mode), which docker stack deploy ignores: so a file docker
    takes is not refused for them. Each one dropped is a warning."""
    spec = compose_schema.schema(compose_schema.SPEC)["$defs"]["service"]["properties"]
    docker = _schema()["definitions"]["service"]["properties"]
    only = sorted(set(docker) - set(spec))
    services = document.get("services")
    if not isinstance(services, dict):
        return dict(document), []
    warnings = []
    kept = {}
    for name, service in services.items():
        if isinstance(service, dict) and any(key in service for key in only):
            warnings += [f"services.{name}.{key}: docker stack deploy ignores it" for key in only if key in service]
            service = {k: v for k, v in service.items() if k not in only}
        kept[name] = service
    return {**document, "services": kept}, warnings


def _docker_version(value: Any) -> str | None:
    text = str(value) if not isinstance(value, bool) and value is not None else ""
    text = compose_schema.DEFAULT_VERSION if text in ("", "3") else text
    return text if isinstance(value, str) and text in compose_schema.VERSIONS else None


def _service(name: str, service: dict[str, Any], out: Normalized) -> None:
    where = f"services.{name}"
    for key, why in _REFUSED.items():
        if key in service:
            out.problems.append(f"{where}.{key}: {why}")
    deploy: dict[str, Any] = service["deploy"] if isinstance(service.get("deploy"), dict) else {}
    _restart(where, service, deploy, out)
    _resources(where, service, deploy, out)
    if deploy:
        service["deploy"] = deploy
    _depends_on(name, service, out)
    for key in ("environment", "labels"):  # docker/cli's schema takes no boolean there; compose writes it so
        values = service.get(key)
        if isinstance(values, dict):
            service[key] = {k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items()}
    for port in service.get("ports") or []:
        for key in ("target", "published"):  # the Compose Specification takes strings, docker/cli numbers
            if isinstance(port, dict) and isinstance(port.get(key), str) and port[key].isdigit():
                port[key] = int(port[key])
    for key, why in _DROPPED.items():
        if key in service:
            del service[key]
            out.warnings.append(f"{where}.{key}: {why}; not used")


def _restart(where: str, service: dict[str, Any], deploy: dict[str, Any], out: Normalized) -> None:
    """`restart` (a container's) as deploy.restart_policy (a task's)."""
    if "restart" not in service:
        return
    restart = str(service.pop("restart"))
    policy, _, attempts = restart.partition(":")
    condition = _RESTART.get(policy)
    if not condition or "restart_policy" in deploy:
        out.warnings.append(f"{where}.restart: deploy.restart_policy decides how Swarm restarts tasks; not used")
        return
    deploy["restart_policy"] = {"condition": condition}
    shown = f"condition: {condition}"
    if attempts.strip().isdigit():
        deploy["restart_policy"]["max_attempts"] = int(attempts)
        shown += f", max_attempts: {attempts}"
    out.warnings.append(f"{where}.restart: {restart} became deploy.restart_policy ({shown}): Swarm restarts tasks")


def _resources(where: str, service: dict[str, Any], deploy: dict[str, Any], out: Normalized) -> None:
    """A container's limits as the task's deploy.resources, and `scale` as deploy.replicas."""
    resources: dict[str, Any] = deploy["resources"] if isinstance(deploy.get("resources"), dict) else {}
    for key, (kind, setting) in _RESOURCES.items():
        if key not in service:
            continue
        value = service.pop(key)
        section = resources.setdefault(kind, {})
        if setting in section:
            out.warnings.append(f"{where}.{key}: deploy.resources.{kind}.{setting} is set; {key} is not used")
            continue
        section[setting] = value if setting == "pids" else str(value)
        out.warnings.append(f"{where}.{key} became deploy.resources.{kind}.{setting}")
    if resources:
        deploy["resources"] = resources
    if "scale" in service:
        scale = service.pop("scale")
        if "replicas" in deploy:
            out.warnings.append(f"{where}.scale: deploy.replicas is set; scale is not used")
        else:
            deploy["replicas"] = scale
            out.warnings.append(f"{where}.scale became deploy.replicas")


def _depends_on(name: str, service: dict[str, Any], out: Normalized) -> None:
    """`depends_on`'s mapping as its list; a condition Swarm cannot wait for is a warning."""
    depends = service.get("depends_on")
    if not isinstance(depends, dict):
        return
    waits = sorted(
        f"{other} ({spec['condition']})"
        for other, spec in depends.items()
        if isinstance(spec, dict) and spec.get("condition") not in (None, "service_started")
    )
    if waits:
        out.warnings.append(
            f"services.{name}.depends_on: Swarm starts a stack's services together, with no start order: {name} does "
            f"not wait for {', '.join(waits)}; it must retry until they answer"
        )
    service["depends_on"] = sorted(depends)


def _schema() -> dict[str, Any]:
    return compose_schema.schema(compose_schema.DEFAULT_VERSION)


def _fit(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: str, warnings: list[str]) -> Any:
    """`value` without the keys `schema` (docker/cli's, resolved in `root`) has no place for, each
    one dropped named in `warnings`. `build` is kept whole: Slipway reads it, not docker."""
    definitions = root.get("definitions") or {}
    schema = compose_schema.resolve(schema, definitions)
    forms = schema.get("oneOf") or schema.get("anyOf")
    if forms:
        resolved = (compose_schema.resolve(f, definitions) for f in forms)
        fitting = [f for f in resolved if compose_schema.json_type(value) in compose_schema.types_of(f)]
        return _fit(value, fitting[0], root, where, warnings) if len(fitting) == 1 else value
    if isinstance(value, dict) and ("properties" in schema or "patternProperties" in schema):
        known: Mapping[str, Any] = schema.get("properties") or {}
        patterns: Mapping[str, Any] = schema.get("patternProperties") or {}
        extra = schema.get("additionalProperties", True)
        fitted: dict[str, Any] = {}
        for key, item in value.items():
            here = f"{where}.{key}" if where else key
            if key == "build" and where.startswith("services."):
                fitted[key] = item
            elif key in known:
                fitted[key] = _fit(item, known[key], root, here, warnings)
            elif (pattern := next((p for p in patterns if re.search(p, key)), None)) is not None:
                fitted[key] = _fit(item, patterns[pattern], root, here, warnings)
            elif extra is False:
                warnings.append(f"{here}: docker stack deploy has no such key; not used")
            else:
                fitted[key] = item
        return fitted
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_fit(item, schema["items"], root, f"{where}[{i}]", warnings) for i, item in enumerate(value)]
    return value
