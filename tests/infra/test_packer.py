"""The Packer template keeps its promises, and the emulator's stand-in bake matches it."""

import hcl2
import pytest
import yaml

from slipway import PROJECT_DIR
from slipway.emulator import CONSTANT_IMAGE_TAGS, IMAGE_TAGS

PACKER = PROJECT_DIR / "packer"


def load(name: str) -> dict:
    with open(PACKER / name) as f:
        return hcl2.load(f)


@pytest.fixture(scope="module")
def source() -> dict:
    return load("sources.pkr.hcl")["source"][0]["amazon-ebs"]["node"]


def test_base_image_is_canonicals_latest_ubuntu_not_a_fixed_id(source):
    flt = source["source_ami_filter"][0]
    assert flt["owners"] == ["099720109477"] and flt["most_recent"] is True
    assert "source_ami" not in source
    default = next(v for v in load("variables.pkr.hcl")["variable"] if "ubuntu_image_filter" in v)
    assert "ubuntu-noble-24.04-amd64" in default["ubuntu_image_filter"]["default"]


def test_imdsv2_encryption_and_no_ssh_from_the_world(source):
    assert source["imds_support"] == "v2.0"
    assert source["metadata_options"][0]["http_tokens"] == "required"
    assert source["encrypt_boot"] is True
    assert source["launch_block_device_mappings"][0]["encrypted"] is True
    assert source["ssh_interface"] == "session_manager"
    # The stack's security group (nothing in), subnet and instance profile: no temporary group
    # open to some address, no default VPC, no temporary IAM role.
    assert source["security_group_id"] == "${var.security_group_id}"
    assert source["subnet_id"] == "${var.subnet_id}"
    assert source["iam_instance_profile"] == "${var.iam_instance_profile}"
    assert not [key for key in source if key.startswith("temporary_")]


def test_image_name_is_the_pipelines_name(source):
    assert source["ami_name"] == "${var.ami_name}"


def test_image_and_snapshot_tags_are_those_the_emulator_applies(source):
    tags = load("sources.pkr.hcl")["locals"][0]["tags"]
    expected = {tag: f"${{var.{var}}}" for tag, var in IMAGE_TAGS.items()} | CONSTANT_IMAGE_TAGS
    assert tags == expected
    for key in ("tags", "snapshot_tags", "run_tags"):
        assert source[key] == "${local.tags}"


def test_every_variable_is_typed_and_described_and_none_is_a_credential():
    variables = {name: body for v in load("variables.pkr.hcl")["variable"] for name, body in v.items()}
    for name, body in variables.items():
        assert body.get("type") and body.get("description"), name
        assert not any(word in name for word in ("secret", "access_key", "token", "password")), name


def test_plugins_are_pinned():
    plugins = load("variables.pkr.hcl")["packer"][0]["required_plugins"][0]
    assert {name: spec["version"].startswith("=") for name, spec in plugins.items()} == {
        "amazon": True,
        "ansible": True,
    }


def test_provisioning_runs_the_same_playbook_and_writes_a_manifest():
    build = load("build.pkr.hcl")["build"][0]
    ansible = next(p["ansible"] for p in build["provisioner"] if "ansible" in p)
    assert ansible["playbook_file"].endswith("/../ansible/swarm_node.yml")
    assert (PROJECT_DIR / "ansible" / "swarm_node.yml").exists()
    assert build["post-processor"][0]["manifest"]["output"] == "manifest.json"


def test_buildspec_verifies_packer_and_exports_the_ami_id():
    spec = yaml.safe_load((PACKER / "buildspec.yml").read_text())
    assert spec["env"]["exported-variables"] == ["AMI_ID"]
    install = "\n".join(spec["phases"]["install"]["commands"])
    assert "sha256sum --check --strict packer/packer.sha256" in install
    version = spec["env"]["variables"]["PACKER_VERSION"]
    assert f"packer_{version}_linux_amd64.zip" in (PACKER / "packer.sha256").read_text()
    build = "\n".join(spec["phases"]["build"]["commands"])
    assert "manifest.json" in build and 'test -n "$AMI_ID"' in build


def test_the_pipeline_passes_every_required_variable_through_pkr_var():
    # Each required variable comes from the start of each bake (the deployment's names) or from
    # the CodeBuild project itself (where the build instance runs: the stack's bake network).
    import inspect

    from chalicelib.steps import bake
    from slipway.deploy import bootstrap

    variables = {
        name for v in load("variables.pkr.hcl")["variable"] for name, body in v.items() if "default" not in body
    }
    source = inspect.getsource(bake.start_bake)
    per_bake = {name for name in variables if f'"PKR_VAR_{name}"' in source}
    environment = bootstrap.load_template(PROJECT_DIR)["Resources"]["BakeProject"]["Properties"]["Environment"]
    for choice in environment["EnvironmentVariables"]["Fn::If"][1:]:  # with the stage's key and without
        per_project = {v["Name"].removeprefix("PKR_VAR_") for v in choice if v["Name"].startswith("PKR_VAR_")}
        assert per_bake | (per_project & variables) == variables
        assert not per_bake & per_project


def test_debians_packer_accepts_the_template_syntax(tmp_path, require):
    """Debian's packer (1.6.6) predates `required_plugins` and the amazon plugin's newer arguments
    (imds_support, temporary_security_group_source_public_ip, metadata_options), so it can check
    only HCL syntax, with the `packer {}` block removed. Full `packer validate` runs in CodeBuild."""
    import re
    import shutil
    import subprocess

    packer = shutil.which("packer")
    require(None if packer else "packer is not installed (apt-get install packer)")
    for path in PACKER.glob("*.pkr.hcl"):
        text = path.read_text()
        if path.name == "variables.pkr.hcl":
            text = re.sub(r"^packer \{.*?^\}\n", "", text, count=1, flags=re.S | re.M)
            assert "required_plugins" not in text
        (tmp_path / path.name).write_text(text)
    result = subprocess.run(
        [packer, "validate", "-syntax-only", "."], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
