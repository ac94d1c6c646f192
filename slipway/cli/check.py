"""`slipway check [FILE]`: the checks 'Read the stack file' makes, on the user's machine, before a push:
no AWS account, no emulator. The same code (chalicelib/stack.py `read`) reads the same files: the
repository as git will commit it (files git tracks or has staged, their bytes from the working tree;
an ignored `.env` is not read, as the pushed commit will not have it), with the variables named by
`--var` assumed set. Exit 1 with every problem, 0 with the warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chalicelib import plans, stack
from chalicelib.errors import StackInvalid

ASSUMED = "1"  # the value of a variable named without one: a number, so that `replicas: ${N}` casts


class WorkingTree:
    """The repository's files as its next commit will have them (stack_sources.RepositoryFiles)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached"], capture_output=True, check=False
        )
        self.tracked: set[str] | None = None
        if listed.returncode == 0:
            self.tracked = {p.decode() for p in listed.stdout.split(b"\0") if p}
            self.folders = {parent.as_posix() for p in self.tracked for parent in Path(p).parents}

    def kind(self, path: str) -> str | None:
        where = self.root / path
        if where.is_symlink():  # GitHub's API does not follow a link: the pipeline takes it as missing
            return None
        if self.tracked is not None:
            if path in self.tracked and where.is_file():
                return "executable" if os.access(where, os.X_OK) else "file"
            return "dir" if path in self.folders and where.is_dir() else None
        if where.is_dir():
            return "dir"
        if where.is_file():
            return "executable" if os.access(where, os.X_OK) else "file"
        return None

    def read(self, path: str) -> bytes | None:
        return (self.root / path).read_bytes() if self.kind(path) in ("file", "executable") else None


def _root(start: Path) -> Path:
    found = subprocess.run(
        ["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    return Path(found.stdout.strip()) if found.returncode == 0 else start


def _variables(given: list[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for item in given:
        for part in item.split(","):
            name, equals, value = part.strip().partition("=")
            if name:
                variables[name] = value if equals else ASSUMED
    return variables


def run(file: str | None, variables: list[str], as_json: bool) -> int:
    cwd = Path.cwd()
    root = _root(cwd if file is None else (cwd / file).resolve().parent)
    files = WorkingTree(root)
    if file is None:
        path = next((n for n in plans.STACK_FILE_NAMES if files.kind(n) in ("file", "executable")), None)
        if path is None:
            print(f"slipway check: no {', '.join(plans.STACK_FILE_NAMES)} in {root}", file=sys.stderr)
            return 1
    else:
        path = (cwd / file).resolve().relative_to(root.resolve()).as_posix()
    data = (root / path).read_bytes() if (root / path).is_file() else None
    if data is None:
        print(f"slipway check: {path}: no such file", file=sys.stderr)
        return 1
    local_volumes = os.environ.get("SLIPWAY_LOCAL_VOLUMES", "").strip().lower() == "allow"
    try:
        reading = stack.read(data, path=path, local_volumes=local_volumes, variables=_variables(variables), files=files)
    except StackInvalid as exc:  # a YAML that cannot be read stops the reading
        reading = stack.Reading(None, (str(exc).removeprefix(f"{path}: "),), ())
    parsed = reading.stack
    if as_json:
        print(
            json.dumps(
                {
                    "file": path,
                    "ok": not reading.problems,
                    "problems": list(reading.problems),
                    "warnings": list(reading.warnings),
                    "services": list(parsed.services) if parsed else [],
                    "builds": list(parsed.builds) if parsed else [],
                    "secrets": sorted(set(parsed.secrets) | set(parsed.build_secrets)) if parsed else [],
                    "variables": list(parsed.variables) if parsed else [],
                },
                indent=2,
            )
        )
        return 1 if reading.problems else 0
    for warning in reading.warnings:
        print(f"warning: {warning}")
    if reading.problems:
        print(stack.describe_problems(path, reading.problems), file=sys.stderr)
        return 1
    assert parsed is not None
    summary = f"{path}: deploys {len(parsed.services)} service{'s' if len(parsed.services) != 1 else ''}"
    summary += f" ({', '.join(parsed.services)})"
    if parsed.builds:
        summary += f"; builds {', '.join(parsed.builds)}"
    secrets = sorted(set(parsed.secrets) | set(parsed.build_secrets))
    if secrets:
        summary += f"; needs the secrets {', '.join(secrets)} in SSM (/slipway/<environment>/secrets/<key>)"
    if parsed.variables:
        summary += f"; uses the variables {', '.join(parsed.variables)}"
    print(summary)
    return 0
