"""IAM: the nodes' role and instance profile, as `slipway bootstrap` creates them from
.chalice/resources.yaml, named in SLIPWAY_NODE_INSTANCE_PROFILE; moto loads AWS's managed policies
only all at once (seconds on every start), so the emulator loads the ones the node role names."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from slipway import PROJECT_DIR
from slipway.emulator.account import ACCOUNT, REGION, STAGE


@functools.cache
def aws_managed_policy_data(name: str) -> dict:
    """One of AWS's managed policies from moto's copy, without parsing the whole 4.7 MB of it."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    key = f'\n "{name}":'  # a top-level key of the JSON object, as moto writes it
    data, _ = json.JSONDecoder().raw_decode(aws_managed_policies_data, aws_managed_policies_data.index(key) + len(key))
    return data


def load_aws_managed_policy(arn: str) -> None:
    """Make an AWS managed policy attachable: moto loads them only when configured to, all of them,
    which costs seconds on every start; the emulator loads the ones the node role names."""
    from moto.iam.models import AWSManagedPolicy, iam_backends

    backend = iam_backends[ACCOUNT]["aws"]
    if arn not in backend.managed_policies:
        name = arn.rsplit("/", 1)[-1]
        backend.managed_policies[arn] = AWSManagedPolicy.from_data(name, ACCOUNT, REGION, aws_managed_policy_data(name))


def create_node_role(environment: str, iam: Any) -> None:
    """The nodes' role and instance profile as `slipway bootstrap` creates them (NodeRole and
    NodeInstanceProfile of .chalice/resources.yaml, resolved for this account and stage), and
    SLIPWAY_NODE_INSTANCE_PROFILE naming the profile unless the environment names one."""
    from slipway.deploy import bootstrap

    template = bootstrap.load_template(PROJECT_DIR)
    parameters = {"Stage": STAGE, "Environment": environment}
    if os.environ.get("SLIPWAY_KMS_KEY_ARN"):
        parameters["KmsKeyArn"] = os.environ["SLIPWAY_KMS_KEY_ARN"]
    bucket = os.environ["SLIPWAY_BAKE_BUCKET"]
    ids = {"SourceBucket": bucket, "SourceBucket.Arn": f"arn:aws:s3:::{bucket}"}
    role = bootstrap.role_policies(template, "NodeRole", parameters, ACCOUNT, REGION, ids)
    name = role["RoleName"]
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(role["AssumeRolePolicyDocument"]))
    for policy, document in role["Policies"].items():
        iam.put_role_policy(RoleName=name, PolicyName=policy, PolicyDocument=json.dumps(document))
    for arn in role["ManagedPolicyArns"]:
        load_aws_managed_policy(arn)
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    profile_properties = template["Resources"]["NodeInstanceProfile"]["Properties"]
    profile = bootstrap.resolve(profile_properties["InstanceProfileName"], {}, parameters, ACCOUNT, REGION)
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=name)
    os.environ.setdefault("SLIPWAY_NODE_INSTANCE_PROFILE", profile)
