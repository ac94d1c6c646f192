"""The linters the project promises: asl-validator on the state machines (as written and as
deployed), ansible-lint (production profile) and yamllint. Each must report nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slipway import PROJECT_DIR, statemachines

BIN = Path(sys.executable).parent
ASL_VALIDATOR = PROJECT_DIR / "node_modules" / ".bin" / "asl-validator"


def run(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def asl_validator() -> str:
    if not ASL_VALIDATOR.exists():
        if os.environ.get("CI") == "true" or shutil.which("npm"):
            pytest.fail("asl-validator is not installed: run `npm ci` (make does)")
        pytest.skip("npm is not installed, so asl-validator is not either")
    return str(ASL_VALIDATOR)


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_state_machines_validate_as_written(asl_validator, name):
    result = run(asl_validator, "--json-path", str(statemachines.path(name)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", statemachines.MACHINES)
def test_state_machines_validate_as_deployed(asl_validator, name, tmp_path):
    text = statemachines.path(name).read_text()
    arns = {
        p: f"arn:aws:lambda:eu-west-1:123456789012:function:slipway-prod-{p}" for p in statemachines.placeholders(text)
    }
    rendered = tmp_path / f"{name}.json"
    rendered.write_text(statemachines.render(text, arns))
    result = run(asl_validator, "--json-path", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_is_clean():
    result = run(
        str(BIN / "ansible-lint"), "--offline", "swarm_node.yml", "roles/swarm_node", cwd=PROJECT_DIR / "ansible"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_yamllint_is_clean():
    result = run(str(BIN / "yamllint"), "--strict", "ansible", "packer", ".ansible-lint", ".yamllint")
    assert result.returncode == 0, result.stdout + result.stderr
