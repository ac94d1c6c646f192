"""A call that makes a service create its service-linked role on first use in an account is allowed
to: in a new account, the first deploy would otherwise be denied where the call is made.

IAM User Guide, "Service-linked role permissions": for a service to create its service-linked role
on your behalf, the caller needs iam:CreateServiceLinkedRole on that role (condition key
iam:AWSServiceName). Which calls do so is each service's own guide's word:
- Elastic Load Balancing, "Elastic Load Balancing service-linked role": "Elastic Load Balancing
  creates this role for you when you create a load balancer or a target group."
- Amazon EFS, "Using service-linked roles for Amazon EFS": created when you create mount targets or
  a replication configuration; its example policy grants the caller of CreateFileSystem the same.
- Amazon ECR, "Using service-linked roles for Amazon ECR": roles for replication, pull through cache
  and repository creation templates only.

Checked, and needing none for what Slipway calls or the open issues add: ECR repositories, image
pushes, lifecycle policies and authorization tokens; ACM public certificates validated by DNS (its
role is for certificates a private CA signs); Route 53 hosted zones and records; CodeBuild projects
and builds; SNS topics; EC2 On-Demand instances (its roles are for Spot and Fleets); SSM Run Command
(its role is for Inventory and Explorer); Step Functions; DynamoDB tables without global tables or
auto scaling; S3 objects; CloudWatch Logs (its role is for delivery to Firehose); EventBridge rules
with Lambda targets (its roles are for API destinations' connections and schema discovery).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from slipway import PROJECT_DIR
from tests.deploy.iam_model import Resource, check_resource, decision, statements
from tests.deploy.lambda_calls import chalicelib_actions

CHALICE = PROJECT_DIR / ".chalice"
GUIDE = "https://docs.aws.amazon.com/{}"


@dataclass(frozen=True)
class ServiceLinkedRole:
    service: str  # the service principal: iam:AWSServiceName's value
    name: str
    guide: str

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::123456789012:role/aws-service-role/{self.service}/{self.name}"

    def request(self) -> Resource:
        return Resource(self.arn, "role", {"iam:AWSServiceName": self.service})


ELB = ServiceLinkedRole(
    "elasticloadbalancing.amazonaws.com",
    "AWSServiceRoleForElasticLoadBalancing",
    GUIDE.format("elasticloadbalancing/latest/userguide/elb-service-linked-roles.html"),
)
EFS = ServiceLinkedRole(
    "elasticfilesystem.amazonaws.com",
    "AWSServiceRoleForAmazonElasticFileSystem",
    GUIDE.format("efs/latest/ug/using-service-linked-roles.html"),
)
ECR_REPLICATION = ServiceLinkedRole(
    "replication.ecr.amazonaws.com",
    "AWSServiceRoleForECRReplication",
    GUIDE.format("AmazonECR/latest/userguide/slr-replication.html"),
)
ECR_PULL_THROUGH_CACHE = ServiceLinkedRole(
    "pullthroughcache.ecr.amazonaws.com",
    "AWSServiceRoleForECRPullThroughCache",
    GUIDE.format("AmazonECR/latest/userguide/slr-pullthroughcache.html"),
)
ECR_TEMPLATES = ServiceLinkedRole(
    "ecr.amazonaws.com", "AWSServiceRoleForECRTemplate", GUIDE.format("AmazonECR/latest/userguide/slr-rct.html")
)
# Each call (as the IAM action that authorises it) that creates a service-linked role on first use.
CREATES_ON_FIRST_USE = {
    "elasticloadbalancing:CreateLoadBalancer": ELB,
    "elasticloadbalancing:CreateTargetGroup": ELB,
    "elasticfilesystem:CreateFileSystem": EFS,
    "elasticfilesystem:CreateMountTarget": EFS,
    "elasticfilesystem:CreateReplicationConfiguration": EFS,
    "ecr:PutReplicationConfiguration": ECR_REPLICATION,
    "ecr:CreatePullThroughCacheRule": ECR_PULL_THROUGH_CACHE,
    "ecr:CreateRepositoryCreationTemplate": ECR_TEMPLATES,
}


def _documents() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(CHALICE.glob("policy-*.json"))}


def _allows(document: dict, action: str) -> bool:
    return any(
        s["Effect"] == "Allow" and action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        for s in statements([document])
    )


def test_every_call_that_creates_a_service_linked_role_may_create_it():
    # Given every call the functions make, then each policy that allows one which creates a
    # service-linked role on first use also allows creating that role, for that service.
    made = chalicelib_actions() & CREATES_ON_FIRST_USE.keys()
    assert made >= {"elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"}
    for name, document in _documents().items():
        for action in sorted(a for a in made if _allows(document, a)):
            role = CREATES_ON_FIRST_USE[action]
            verdict = decision([document], "iam:CreateServiceLinkedRole", role.request())
            assert verdict == "Allow", f"{name} allows {action}, which creates {role.name} ({role.guide}): {verdict}"


def test_a_policy_may_create_only_the_service_linked_roles_its_calls_need():
    # Every grant of iam:CreateServiceLinkedRole is for a role that a call the same policy allows
    # creates, conditioned on that service: no other role, no other service.
    for name, document in _documents().items():
        needed = {role for action, role in CREATES_ON_FIRST_USE.items() if _allows(document, action)}
        for statement in statements([document]):
            if statement["Effect"] != "Allow" or not _allows({"Statement": [statement]}, "iam:CreateServiceLinkedRole"):
                continue
            assert statement["Action"] in ("iam:CreateServiceLinkedRole", ["iam:CreateServiceLinkedRole"]), name
            [role] = [r for r in needed if statement["Resource"].endswith(f"/{r.service}/{r.name}")]
            assert statement["Resource"] == f"arn:aws:iam::*:role/aws-service-role/{role.service}/{role.name}", name
            assert statement["Condition"] == {"StringEquals": {"iam:AWSServiceName": role.service}}, name


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_task_role_may_create_elbs_role_and_nothing_else(stage):
    # Then the grant holds for that role and that service, and is refused for any other.
    tasks = [json.loads((CHALICE / f"policy-{stage}.json").read_text())]
    check_resource("iam:CreateServiceLinkedRole", ELB.request())  # the ARN AWS's data expects
    assert decision(tasks, "iam:CreateServiceLinkedRole", ELB.request()) == "Allow"
    assert decision(tasks, "iam:CreateServiceLinkedRole", EFS.request()) == "ImplicitDeny"
    other_service = Resource(ELB.arn, "role", {"iam:AWSServiceName": EFS.service})
    assert decision(tasks, "iam:CreateServiceLinkedRole", other_service) == "ImplicitDeny"
    a_role_of_our_own = Resource("arn:aws:iam::123456789012:role/admin", "role", {})
    assert decision(tasks, "iam:CreateRole", a_role_of_our_own) == "ImplicitDeny"
    # Only the tasks create load balancers: the webhook, prune, heal and report roles may not.
    for other in ("webhook", "prune", "heal", "report"):
        document = json.loads((CHALICE / f"policy-{stage}-{other}.json").read_text())
        assert decision([document], "iam:CreateServiceLinkedRole", ELB.request()) == "ImplicitDeny", other
