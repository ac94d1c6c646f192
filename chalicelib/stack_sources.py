"""What a Compose file takes from the repository beside it, read from the pushed commit as docker
compose reads it from the project folder (paths relative to the Compose file's folder), so that the
stack a manager deploys needs no checkout:

- `env_file:` files, parsed as env files (dotenv.py) with the environment's variables, merged under
  the service's own `environment` (which wins, as in docker compose); a file missing from the commit
  is refused unless marked `required: false`; `label_file:` the same way into `labels`;
- top-level `configs:` from a `file:`, an inline `content:` or a variable (`environment:`) become
  Swarm configs named by their content (`config_name`), so a changed file is a new config and updates
  the services that use it; within Swarm's size limit (MAX_CONFIG_BYTES);
- a read-only bind mount of a file of the repository (`./nginx.conf:/etc/nginx/nginx.conf:ro`) becomes
  such a config, with a warning; a directory, a writable bind or a path the commit lacks is refused;
- `secrets:` from a `file:` or a variable stay refused: a file in a repository is no secret.

Pure: the repository comes in as `RepositoryFiles` (GitHub at a commit in the pipeline, the working
tree for `slipway check`)."""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib import compose_yaml, dotenv, interpolation, stack_rules

# swarmkit manager/controlapi/config.go: "config data must be larger than 0 and less than 1000KB".
MAX_CONFIG_BYTES = 1000 * 1024 - 1
MAX_ENV_FILE_BYTES = 1024 * 1024
SECRETS_HOME = compose_yaml.SECRETS_HOME


class RepositoryFiles(Protocol):
    """The pushed commit's files, by path from the repository's root."""

    def kind(self, path: str) -> str | None:
        """ "file", "executable" (a file git keeps as 100755), "dir", or None when the commit has no such path."""

    def read(self, path: str) -> bytes | None:
        """A file's bytes (None when the commit has no such file)."""


@dataclass
class Sources:
    document: dict[str, Any]
    configs: dict[str, str] = field(default_factory=dict)  # top-level config key -> sha256 of its bytes
    data: dict[str, bytes] = field(default_factory=dict)  # sha256 -> the bytes
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class _Reading:
    """What every step of `resolve` reads from and writes to."""

    out: Sources
    base: str  # the Compose file's folder: paths are relative to it
    files: RepositoryFiles | None
    lookup: interpolation.Lookup
    findings: interpolation.Findings


def config_name(key: str, digest: str) -> str:
    """The Swarm config holding a config's bytes: named by its content, so that a change is a new
    config (Swarm configs cannot change) and updates every service that uses it."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', key)[:40].strip('-_.') or 'config'}-{digest[:12]}"


def repository_path(base: str, path: str) -> str | None:
    """`path` (relative to the Compose file's folder `base`) from the repository's root; None when
    it leaves the repository or is absolute."""
    if path.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", path):
        return None
    joined = posixpath.normpath(posixpath.join(base or ".", path))
    if joined == ".." or joined.startswith("../"):
        return None
    return joined


def resolve(
    document: Mapping[str, Any],
    base: str,
    files: RepositoryFiles | None,
    lookup: interpolation.Lookup,
    findings: interpolation.Findings,
) -> Sources:
    """`document` with what it reads from the repository put in (module docstring); the variables
    an env file needs and lacks go to `findings` as the document's own do."""
    out = Sources({**document})
    reading = _Reading(out, base, files, lookup, findings)
    _secrets(out)
    _configs(reading)
    services = {**(document.get("services") or {})}
    out.document["services"] = services
    for name in sorted(services):
        if isinstance(services[name], dict):
            services[name] = _service(name, dict(services[name]), reading)
    return out


def _secrets(out: Sources) -> None:
    """Secrets from a file or a variable: one problem naming them all, the advice once. Each is then
    taken as the Slipway secret it should be, so that nothing else is said about it."""
    secrets = {**(out.document.get("secrets") or {})}
    sourced = [
        f"secrets.{key}.{source}"
        for key, spec in secrets.items()
        for source in ("file", "environment")
        if isinstance(spec, dict) and source in spec
    ]
    if not sourced:
        return
    out.problems.append(
        f"{', '.join(sourced)}: a secret read from the repository or a variable is no secret (whoever reads those "
        f"reads it): put each value in SSM Parameter Store, aws ssm put-parameter --type SecureString --name "
        f"{SECRETS_HOME}/<key> --value ..., and declare the secret `external: true`"
    )
    for where in sourced:
        key = where.split(".")[1]
        secrets[key] = {"external": True}
    out.document["secrets"] = secrets


def _configs(at: _Reading) -> None:
    out, lookup, findings = at.out, at.lookup, at.findings
    configs = {**(out.document.get("configs") or {})}
    for key, spec in configs.items():
        if not isinstance(spec, dict) or spec.get("external"):
            continue
        where = f"configs.{key}"
        data: bytes | None = None
        if "file" in spec:
            data = _read_file(f"{where}.file", str(spec["file"]), at)
        elif "content" in spec:
            data = str(spec["content"]).encode()
        elif "environment" in spec:
            variable = str(spec["environment"])
            findings.used.add(variable)
            value = lookup(variable)
            if value is None:
                findings.unset.setdefault(variable, []).append(f"{where}.environment")
            data = value.encode() if value is not None else None
        else:
            continue
        if data is not None and not 0 < len(data) <= MAX_CONFIG_BYTES:
            out.problems.append(
                f"{where} is {len(data)} bytes; a Swarm config holds 1 byte to 1000 KiB (put larger files in the image)"
            )
            data = None
        if data is None:  # said why: taken as declared, so that nothing else is said about it
            configs[key] = {"external": True}
            continue
        configs[key] = _as_config(key, spec, data, out)
        out.configs[key] = hashlib.sha256(data).hexdigest()
    if configs:
        out.document["configs"] = configs


def _as_config(key: str, spec: Mapping[str, Any], data: bytes, out: Sources) -> dict[str, Any]:
    """The top-level config as the stored stack declares it: the Swarm config named by its bytes,
    which 'Update the stack' has the manager create from them (stack.rendered)."""
    digest = hashlib.sha256(data).hexdigest()
    out.data[digest] = data
    kept = {k: v for k, v in spec.items() if k in ("labels", "template_driver") or k.startswith("x-")}
    return {**kept, "external": True, "name": config_name(key, digest)}


def _read_file(where: str, path: str, at: _Reading) -> bytes | None:
    out, files = at.out, at.files
    found = repository_path(at.base, path)
    if found is None:
        out.problems.append(f"{where}: {path} is outside the repository; Slipway reads files of the pushed commit")
        return None
    if files is None:
        out.problems.append(f"{where}: {path} would be read from the repository, and there is none here")
        return None
    kind = files.kind(found)
    if kind is None:
        out.problems.append(f"{where}: {found} is not in the commit")
        return None
    if kind == "dir":
        out.problems.append(f"{where}: {found} is a folder, not a file")
        return None
    data = files.read(found)
    if data is None:
        out.problems.append(f"{where}: {found} is not in the commit")
    return data


def _service(name: str, service: dict[str, Any], at: _Reading) -> dict[str, Any]:
    if "env_file" in service:
        service = _env_files(name, service, at)
    if "label_file" in service:
        service = _label_files(name, service, at)
    if "environment" in service:
        service["environment"] = _resolved(_environment_mapping(service["environment"]), at.lookup, at.findings)
    if service.get("volumes"):
        service = _bind_mounts(name, service, at)
    return service


def _env_files(name: str, service: dict[str, Any], at: _Reading) -> dict[str, Any]:
    """`env_file:` merged under the service's own `environment` (which wins, as in docker compose)."""
    own = {k: v for k, v in _environment_mapping(service.get("environment")).items() if v is not None}

    def look(variable: str) -> str | None:  # compose-go: the variables, then the service's own environment
        found = at.lookup(variable)
        return found if found is not None else (str(own[variable]) if variable in own else None)

    merged = _key_value_files(name, "env_file", service.pop("env_file"), look, at)
    service["environment"] = {**merged, **_environment_mapping(service.get("environment"))}
    return service


def _label_files(name: str, service: dict[str, Any], at: _Reading) -> dict[str, Any]:
    """`label_file:` (the same format) merged under the service's own `labels`."""
    merged = _key_value_files(name, "label_file", service.pop("label_file"), at.lookup, at)
    service["labels"] = {**merged, **_environment_mapping(service.get("labels"))}
    return service


def _key_value_files(name: str, key: str, entries: Any, look: interpolation.Lookup, at: _Reading) -> dict[str, str]:
    """The files an `env_file:` or `label_file:` names, read from the commit in order (a later one's
    keys win), as docker compose reads them: dotenv's format, or `format: raw` lines taken as written."""
    out, files, findings = at.out, at.files, at.findings
    entries = [entries] if isinstance(entries, str) else list(entries or [])
    merged: dict[str, str] = {}
    for i, entry in enumerate(entries):
        path = str(entry.get("path") if isinstance(entry, dict) else entry)
        required = not (isinstance(entry, dict) and entry.get("required") in (False, "false"))
        where = f"services.{name}.{key}[{i}]"
        found = repository_path(at.base, path)
        if found is None or files is None:
            _read_file(where, path, at)  # says why it cannot be read
            continue
        if files.kind(found) is None:
            if required:
                out.problems.append(
                    f"{where}: {found} is not in the commit (docker compose refuses a missing {key.replace('_', ' ')} "
                    "too; mark it `required: false` if it is optional)"
                )
            continue
        data = _read_file(where, path, at)
        if data is None:
            continue
        if len(data) > MAX_ENV_FILE_BYTES:
            out.problems.append(f"{where}: {found} is larger than 1 MiB")
            continue
        if isinstance(entry, dict) and entry.get("format") not in (None, "", "raw"):
            out.problems.append(f"{where}: format {entry['format']!r} is not one docker compose reads (raw, or none)")
            continue
        if isinstance(entry, dict) and entry.get("format") == "raw":  # KEY=value lines, taken as written
            text = data.decode("utf-8", "replace")
            merged = {**merged, **dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)}
            continue
        try:
            parsed = dotenv.parse(data.decode("utf-8", "replace"), look, merged)
        except dotenv.DotenvError as exc:
            out.problems.append(f"{where}: {found} cannot be read as an env file: {exc}")
            continue
        for variable, keys in parsed.unset.items():
            findings.used.add(variable)
            findings.unset.setdefault(variable, []).extend(f"{found} ({key})" for key in keys)
        for invalid in parsed.invalid:
            out.problems.append(
                f"{where}: {found} ({invalid}) has a $ that starts no variable: write $$ for a literal $"
            )
        merged = parsed.values
    return merged


def _resolved(
    environment: dict[str, Any], lookup: interpolation.Lookup, findings: interpolation.Findings
) -> dict[str, Any]:
    """A service's environment as docker compose resolves it: a key without a value (`- KEY`) takes
    the variable of that name, and is left out when there is none. (Left in, docker stack deploy
    would give it the manager's own environment's value.)"""
    resolved: dict[str, Any] = {}
    for key, value in environment.items():
        if value is None:
            findings.used.add(key)
            value = lookup(key)
            if value is None:
                continue
        resolved[key] = value
    return resolved


def _environment_mapping(environment: Any) -> dict[str, Any]:
    """A service's `environment` as a mapping (its list form is `KEY=value`, or `KEY` alone)."""
    if isinstance(environment, Mapping):
        return dict(environment)
    mapping: dict[str, Any] = {}
    for item in environment or []:
        key, equals, value = str(item).partition("=")
        mapping[key] = value if equals else None
    return mapping


def _bind_mounts(name: str, service: dict[str, Any], at: _Reading) -> dict[str, Any]:
    """Each bind mount of a path of the repository: a read-only file becomes a config, the rest is refused."""
    out, files, base = at.out, at.files, at.base
    kept: list[Any] = []
    added: list[dict[str, Any]] = []
    for i, mount in enumerate(service["volumes"]):
        where = f"services.{name}.volumes[{i}]"
        bind = _repository_bind(mount)
        if bind is None:
            kept.append(mount)
            continue
        source, target, read_only = bind
        found = repository_path(base, source)
        if found is None:
            out.problems.append(f"{where}: {source} is outside the repository, and a node has no checkout")
            continue
        kind = files.kind(found) if files is not None else None
        if files is None:
            out.problems.append(f"{where} binds {found} from the repository, and there is none here")
        elif kind is None:
            out.problems.append(
                f"{where} binds {found} from the repository, which is not in the commit (a node has no checkout)"
            )
        elif kind == "dir":
            out.problems.append(
                f"{where} binds the folder {found} from the repository, and a node has no checkout: build it into the "
                "image, or mount each file read-only (`:ro`), which Slipway ships as a config"
            )
        elif not read_only:
            out.problems.append(
                f"{where} binds {found} from the repository writable, and a node has no checkout: mount it read-only "
                "(`:ro`), which Slipway ships as a config, or keep the data in a named volume"
            )
        else:
            data = files.read(found)
            if data is None or not 0 < len(data) <= MAX_CONFIG_BYTES:
                size = "missing" if data is None else f"{len(data)} bytes"
                out.problems.append(f"{where} binds {found} ({size}); a Swarm config holds 1 byte to 1000 KiB")
                continue
            key = _bind_key(found, out)
            configs = {**(out.document.get("configs") or {})}
            configs[key] = _as_config(key, {}, data, out)
            out.document["configs"] = configs
            out.configs[key] = hashlib.sha256(data).hexdigest()
            reference: dict[str, Any] = {"source": key, "target": target}
            if kind == "executable":
                reference["mode"] = 0o555
            added.append(reference)
            out.warnings.append(
                f"{where}: {found} is mounted read-only from the repository: Slipway ships the commit's bytes as a "
                f"Swarm config at {target} (a change to the file updates the service)"
            )
    service["volumes"] = kept
    if not kept:
        del service["volumes"]
    if added:
        service["configs"] = [*(service.get("configs") or []), *added]
    return service


def _bind_key(path: str, out: Sources) -> str:
    """The top-level config key a bind-mounted file becomes (x- keys are the file's own names)."""
    key = "repo_" + re.sub(r"[^A-Za-z0-9_.-]", "_", path)
    taken = out.document.get("configs") or {}
    suffix = 1
    candidate = key
    while candidate in taken:
        suffix += 1
        candidate = f"{key}_{suffix}"
    return candidate


def _repository_bind(mount: Any) -> tuple[str, str, bool] | None:
    """(source, target, read-only) of a bind mount whose source is a relative path (`./x`, `../x`, `x/` are
    the repository's; `/x` and `~/x` the node's), else None."""
    if isinstance(mount, str):
        kind, source, error = stack_rules.short_mount(mount)
        if error or kind != "bind" or not source.startswith("."):
            return None
        rest = mount[len(source) + 1 :]
        target, _, mode = rest.partition(":")
        return source, target, "ro" in mode.split(",")
    if isinstance(mount, Mapping) and mount.get("type") == "bind":
        source = str(mount.get("source") or "")
        if not source or source.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", source):
            return None  # the long syntax resolves any other path against the project folder
        read_only = mount.get("read_only") in (True, "true")
        return source, str(mount.get("target") or ""), read_only
    return None
