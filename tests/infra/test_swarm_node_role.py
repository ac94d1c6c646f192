"""The swarm_node role, converged for real on a Debian 12 root (debootstrap) through the chroot
connection, converged again with nothing changed, and its results read from the root's files.

Needs root and debootstrap. Where they are missing the tests skip and say why; on CI (CI=true)
a missing prerequisite is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from slipway import realnodes
from slipway.realnodes import base_root, prepare_chroot

RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def _prerequisite(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the real converge, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node_root(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        _prerequisite("chroot and debootstrap need root")
    if not shutil.which("debootstrap"):
        _prerequisite("debootstrap is not installed (apt-get install debootstrap)")
    root = tmp_path_factory.mktemp("node") / "root"
    subprocess.run(["cp", "-a", str(base_root()), str(root)], check=True)
    prepare_chroot(root)  # no services in a chroot; the machine's resolver for apt
    return root


def converge(root: Path) -> tuple[int, int, str]:
    result = realnodes.converge(root)  # ansible-playbook through the chroot connection
    match = RECAP.search(result.stdout)
    assert result.returncode == 0 and match, result.stdout[-4000:] + result.stderr[-2000:]
    return int(match.group(2)), int(match.group(4)), result.stdout


@pytest.fixture(scope="module")
def converged(node_root):
    first_changed, first_failed, _ = converge(node_root)
    second_changed, second_failed, second_out = converge(node_root)
    return node_root, first_changed, second_changed, second_out


def test_first_converge_changes_the_root(converged):
    _, first_changed, _, _ = converged
    assert first_changed > 0


def test_second_converge_changes_nothing(converged):
    _, _, second_changed, output = converged
    assert second_changed == 0, output[-3000:]


def test_open_files_limit_for_root_and_everyone(converged):
    root = converged[0]
    text = (root / "etc/security/limits.d/90-ulimit-open-files-increase.conf").read_text()
    entries = {tuple(line.split()) for line in text.splitlines() if line and not line.startswith("#")}
    assert entries == {
        ("root", "soft", "nofile", "65536"),
        ("root", "hard", "nofile", "65536"),
        ("*", "soft", "nofile", "65536"),
        ("*", "hard", "nofile", "65536"),
    }
    assert "session required pam_limits.so" in (root / "etc/pam.d/common-session").read_text()


def test_kernel_settings_are_persistent(converged):
    root = converged[0]
    lines = (root / "etc/sysctl.d/60-swarm-node.conf").read_text().splitlines()
    settings = dict(
        tuple(part.strip() for part in line.split("=", 1)) for line in lines if "=" in line and not line.startswith("#")
    )
    assert settings == {
        "fs.file-max": "1000000",
        "net.core.optmem_max": "40960",
        "net.core.rmem_default": "16777216",
        "net.core.rmem_max": "16777216",
        "net.core.wmem_default": "16777216",
        "net.core.wmem_max": "16777216",
        "net.ipv4.tcp_rmem": "4096 87380 16777216",
        "net.ipv4.tcp_wmem": "4096 87380 16777216",
        "net.netfilter.nf_conntrack_tcp_timeout_established": "43200",
        "net.netfilter.nf_conntrack_max": "524288",
    }


def test_conntrack_loads_at_boot_with_its_hash_size(converged):
    root = converged[0]
    assert (root / "etc/modules-load.d/nf_conntrack.conf").read_text().split() == ["nf_conntrack"]
    assert "options nf_conntrack hashsize=131072" in (root / "etc/modprobe.d/nf_conntrack.conf").read_text()


def test_docker_is_installed_enabled_and_rotates_logs(converged):
    root = converged[0]
    assert (root / "usr/sbin/dockerd").exists() or (root / "usr/bin/dockerd").exists()
    assert (root / "usr/bin/docker").exists()
    version = subprocess.run(["chroot", str(root), "docker", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("Docker version"), version.stderr
    wants = root / "etc/systemd/system/multi-user.target.wants/docker.service"
    assert wants.is_symlink() or wants.exists()
    import json

    config = json.loads((root / "etc/docker/daemon.json").read_text())
    assert config == {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}
