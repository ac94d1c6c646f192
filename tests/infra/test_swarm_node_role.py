"""The swarm_node role, converged for real on a Debian 12 root (debootstrap) through the chroot
connection, converged again with nothing changed, and its results read from the root's files;
and the node tool it installs (files/slipway-node), run here against moto's server with a fake
docker on PATH.

Needs root and debootstrap. Where they are missing the tests skip and say why; on CI (CI=true)
a missing prerequisite is a failure, not a skip.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slipway import PROJECT_DIR, realnodes
from slipway.realnodes import base_root, prepare_chroot

ROLE = PROJECT_DIR / "ansible" / "roles" / "swarm_node"
TOOL = ROLE / "files" / "slipway-node"
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@pytest.fixture(scope="module")
def node_root(tmp_path_factory, require) -> Path:
    require("chroot and debootstrap need root" if os.geteuid() != 0 else None)
    require(None if shutil.which("debootstrap") else "debootstrap is not installed (apt-get install debootstrap)")
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
    config = json.loads((root / "etc/docker/daemon.json").read_text())
    assert config == {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}


# --- what the converge installed for the pipeline's stack deploys ------------------------------


def test_the_node_tool_is_installed_and_runs_on_the_distributions_boto3(converged):
    root = converged[0]
    tool = root / "usr/local/bin/slipway-node"
    assert tool.read_bytes() == TOOL.read_bytes()
    assert (tool.stat().st_mode & 0o7777, tool.stat().st_uid) == (0o755, 0)
    # Debian 12's boto3 is 1.26: older than the AWS_ENDPOINT_URL support (1.28) the tool makes up for.
    found = subprocess.run(
        ["chroot", str(root), "python3", "-c", "import boto3; print(boto3.__version__)"],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0 and found.stdout.startswith("1."), found.stderr
    usage = subprocess.run(["chroot", str(root), "/usr/local/bin/slipway-node"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: slipway-node" in usage.stderr


def test_roots_docker_cli_gets_ecr_credentials_from_the_helper_for_ecr_only(converged):
    root = converged[0]
    config = root / "root/.docker/config.json"
    # credHelpers for ECR Public only (no account given): no credsStore, so other registries stay anonymous.
    assert json.loads(config.read_text()) == {"credHelpers": {"public.ecr.aws": "ecr-login"}}
    assert config.stat().st_mode & 0o777 == 0o600
    assert (root / "root/.docker").stat().st_mode & 0o777 == 0o700
    assert (root / "usr/bin/docker-credential-ecr-login").exists()
    # Without credentials the helper answers "not found" (docker then pulls anonymously) rather
    # than an error that would fail the pull. No metadata service and no network: nothing to ask.
    home = root / "tmp/ecr-home"
    home.mkdir(exist_ok=True)
    answer = subprocess.run(
        [
            "chroot",
            str(root),
            "env",
            "-i",
            "HOME=/tmp/ecr-home",
            "AWS_EC2_METADATA_DISABLED=true",
            "docker-credential-ecr-login",
            "get",
        ],
        input="public.ecr.aws\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode != 0 and "credentials not found in native keychain" in answer.stdout, answer


@pytest.mark.parametrize(
    ("extra", "registries"),
    [
        ({}, ["public.ecr.aws"]),
        (
            {"swarm_node_ecr_account_id": "012345678901", "swarm_node_ecr_region": "eu-west-1"},
            ["012345678901.dkr.ecr.eu-west-1.amazonaws.com", "public.ecr.aws"],
        ),
        (
            {"swarm_node_ecr_registries": ["public.ecr.aws", "example.dkr.ecr.us-east-2.amazonaws.com"]},
            ["example.dkr.ecr.us-east-2.amazonaws.com", "public.ecr.aws"],
        ),
    ],
)
def test_the_credential_helper_registries_follow_the_role_variables(tmp_path, extra, registries):
    # The role's own template and defaults, rendered by Ansible (no converge needed).
    dest = tmp_path / "config.json"
    variables = tmp_path / "extra.json"
    variables.write_text(json.dumps(extra))
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible")),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={ROLE / 'templates/docker-config.json.j2'} dest={dest}",
            "-e",
            f"@{ROLE / 'defaults/main.yml'}",
            "-e",
            f"@{variables}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"ANSIBLE_NOCOLOR": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    helpers = json.loads(dest.read_text())["credHelpers"]
    assert sorted(helpers) == registries and set(helpers.values()) == {"ecr-login"}


# --- the node tool, run here: a fake docker on PATH, moto's server as the AWS endpoint ----------

FAKE_DOCKER = """#!/bin/sh
# Records each call: its arguments, its environment and what it read on stdin.
n=$(ls "$DOCKER_LOG" | wc -l)
call="$DOCKER_LOG/$n"
mkdir "$call"
printf '%s\\n' "$@" > "$call/argv"
env > "$call/env"
case "$1 $2" in
  "secret inspect") [ -e "$DOCKER_STATE/$3" ]; exit $? ;;
  "secret create")
    cat > "$call/stdin"
    if [ -e "$DOCKER_STATE/fail-create" ]; then
      echo "Error response from daemon: rpc error: code = Unavailable" >&2
      exit 1
    fi
    touch "$DOCKER_STATE/$5"  # secret create --label L NAME -
    echo "k3x0secretid"
    exit 0 ;;
esac
echo "unexpected docker call: $*" >&2
exit 99
"""


@pytest.fixture(scope="module")
def aws_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    server.stop()


@pytest.fixture
def tool(tmp_path, aws_server):
    """Run the node tool as SSM would on a node: AWS through the endpoint, docker faked."""
    import boto3

    calls, state_dir, bin_dir = tmp_path / "calls", tmp_path / "state", tmp_path / "bin"
    for folder in (calls, state_dir, bin_dir):
        folder.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": aws_server,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "DOCKER_LOG": str(calls),
        "DOCKER_STATE": str(state_dir),
    }
    clients = {
        service: boto3.client(
            service,
            endpoint_url=aws_server,
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for service in ("s3", "ssm")
    }

    class Tool:
        s3, ssm, env = clients["s3"], clients["ssm"], environment
        state = state_dir

        def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess:
            merged = {**environment, **env}
            return subprocess.run(
                [sys.executable, str(TOOL), *args],
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in merged.items() if v is not None},
            )

        def calls(self) -> list[dict[str, str]]:
            found = []
            for call in sorted(calls.iterdir(), key=lambda p: int(p.name)):
                found.append({p.name: p.read_text() for p in call.iterdir()})
            return found

    return Tool()


def _bucket(tool, name: str) -> str:
    tool.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return name


def test_fetch_writes_the_object_with_mode_0600_replacing_the_file(tool, tmp_path):
    bucket = _bucket(tool, "slipway-fetch-1")
    tool.s3.put_object(Bucket=bucket, Key="stacks/abc/stack.yml", Body=b"version: '3.8'\n")
    dest = tmp_path / "stack.yml"
    dest.write_text("old")
    dest.chmod(0o644)
    done = tool("fetch", bucket, "stacks/abc/stack.yml", str(dest))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert dest.read_bytes() == b"version: '3.8'\n"
    assert dest.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".slipway-node")) == []


def test_fetch_of_a_missing_key_fails_with_one_line_naming_it(tool, tmp_path):
    bucket = _bucket(tool, "slipway-fetch-2")
    dest = tmp_path / "stack.yml"
    failed = tool("fetch", bucket, "stacks/none.yml", str(dest))
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and f"s3://{bucket}/stacks/none.yml" in failed.stderr
    assert "NoSuchKey" in failed.stderr
    assert not dest.exists()


def test_fetch_into_a_missing_folder_fails_naming_the_object(tool, tmp_path):
    bucket = _bucket(tool, "slipway-fetch-3")
    tool.s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    failed = tool("fetch", bucket, "k", str(tmp_path / "missing-dir" / "stack.yml"))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1
    assert f"s3://{bucket}/k" in failed.stderr and "missing-dir" in failed.stderr


VALUE = "s3cr3t-Value-that-must-stay-on-stdin"


def test_secret_goes_to_docker_on_stdin_only(tool):
    tool.ssm.put_parameter(Name="/slipway/test/web-token", Value=VALUE, Type="SecureString")
    done = tool("secret", "web_token", "/slipway/test/web-token")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    inspect, create = tool.calls()
    assert inspect["argv"].split() == ["secret", "inspect", "web_token"]
    assert create["argv"].split("\n")[:-1] == [
        "secret",
        "create",
        "--label",
        "slipway.parameter=/slipway/test/web-token",
        "web_token",
        "-",
    ]
    assert create["stdin"] == VALUE
    for call in (inspect, create):
        assert VALUE not in call["argv"] and VALUE not in call["env"]


def test_an_existing_secret_is_left_alone_without_reading_the_parameter(tool):
    (tool.state / "web_token").touch()
    done = tool("secret", "web_token", "/slipway/test/not-there")  # would fail if it were read
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert [c["argv"].split() for c in tool.calls()] == [["secret", "inspect", "web_token"]]


def test_a_missing_parameter_fails_naming_it_and_creates_nothing(tool):
    failed = tool("secret", "web_token", "/slipway/test/missing")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and "/slipway/test/missing" in failed.stderr
    assert "ParameterNotFound" in failed.stderr
    assert [c["argv"].split()[:2] for c in tool.calls()] == [["secret", "inspect"]]


def test_a_failed_create_names_the_parameter_never_the_value(tool):
    tool.ssm.put_parameter(Name="/slipway/test/web-token-2", Value=VALUE, Type="SecureString")
    (tool.state / "fail-create").touch()
    failed = tool("secret", "web_token", "/slipway/test/web-token-2")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1
    assert "/slipway/test/web-token-2" in failed.stderr and "rpc error" in failed.stderr
    assert VALUE not in failed.stderr


@pytest.mark.parametrize(
    "args",
    [(), ("fetch",), ("fetch", "bucket", "key"), ("secret", "name"), ("secret", "a", "b", "c"), ("push", "x")],
)
def test_wrong_arguments_print_the_usage_and_exit_2(tool, args):
    refused = tool(*args)
    assert refused.returncode == 2 and refused.stdout == "" and "usage: slipway-node" in refused.stderr
    assert tool.calls() == []


class _Metadata(http.server.BaseHTTPRequestHandler):
    """IMDSv2: a token from PUT /latest/api/token, required by the GET."""

    requests: list[str] = []

    def do_PUT(self):  # the name http.server calls
        self.requests.append(f"PUT {self.path} ttl={self.headers.get('X-aws-ec2-metadata-token-ttl-seconds')}")
        self._answer(b"tok-123")

    def do_GET(self):  # the name http.server calls
        self.requests.append(f"GET {self.path} token={self.headers.get('X-aws-ec2-metadata-token')}")
        if self.headers.get("X-aws-ec2-metadata-token") != "tok-123":
            self.send_response(401)
            self.end_headers()
            return
        self._answer(b"eu-west-1")

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_without_aws_region_the_region_comes_from_imdsv2(tool, tmp_path):
    bucket = _bucket(tool, "slipway-fetch-4")
    tool.s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Metadata.requests = []
    try:
        done = tool(
            "fetch",
            bucket,
            "k",
            str(tmp_path / "out"),
            AWS_REGION=None,
            AWS_DEFAULT_REGION=None,
            AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (done.returncode, done.stderr) == (0, "")
    assert _Metadata.requests == [
        "PUT /latest/api/token ttl=60",
        "GET /latest/meta-data/placement/region token=tok-123",
    ]


def test_without_a_region_or_metadata_the_tool_says_so(tool, tmp_path):
    with socket.socket() as unused:  # a loopback port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    failed = tool(
        "fetch",
        "b",
        "k",
        str(tmp_path / "out"),
        AWS_REGION=None,
        AWS_DEFAULT_REGION=None,
        AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    assert failed.returncode == 1 and failed.stderr.startswith("slipway-node: no AWS region")
    assert failed.stderr.count("\n") == 1
