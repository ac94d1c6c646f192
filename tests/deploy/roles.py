"""What the IAM tests of the roles share: the stack's template resolved for example names and ids,
a role's policy documents, and the two questions asked of a role with AWS's authorization data
(tests/deploy/iam_model.py): which calls it denies, and what it allows that no call needs."""

from __future__ import annotations

from typing import Any

from slipway import PROJECT_DIR
from slipway.deploy import bootstrap
from tests.deploy.iam_model import Call, Resource, decision, matches, statements

ACCOUNT, REGION, ENV = "111122223333", "eu-west-1", "dev"
STAGE_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SSM_DEFAULT_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c3d-aws-ssm0-0000-000000000000"  # the account's aws/ssm
STAR = Resource("*", "")
CODEBUILD_DOC = "https://docs.aws.amazon.com/codebuild/latest/userguide/setting-up-service-role.html"


def _parameters(kms: bool) -> dict[str, str]:
    return {"Stage": "dev", "Environment": ENV} | ({"KmsKeyArn": STAGE_KEY} if kms else {})


def _template() -> dict:
    return bootstrap.load_template(PROJECT_DIR)


def _ids(template: dict, kms: bool) -> dict[str, Any]:
    return bootstrap.example_ids(template, _parameters(kms), ACCOUNT, REGION)


def role_documents(role: str, *, kms: bool = False, template: dict | None = None) -> list[dict]:
    template = template or _template()
    resolved = bootstrap.role_policies(template, role, _parameters(kms), ACCOUNT, REGION)
    return list(resolved["Policies"].values())


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def denied(calls: list[Call], documents: list[dict]) -> list[str]:
    return [
        f"{call.action} on {resource.arn} ({call.cite}{', ' + call.note if call.note else ''}): {verdict}"
        for call in calls
        for resource in call.resources
        if (verdict := decision(documents, call.action, resource)) != "Allow"
    ]


def unused(calls: list[Call], documents: list[dict]) -> list[str]:
    """Each action and each resource of every Allow statement that no call needs."""
    from fnmatch import fnmatchcase

    found = []
    for statement in statements(documents):
        if statement["Effect"] != "Allow":
            continue
        hits = [(c.action, r) for c in calls for r in c.resources if matches(statement, c.action, r)]
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        sid = statement.get("Sid", "?")
        found += [f"{sid}: {a}" for a in actions if not any(fnmatchcase(h[0].lower(), a.lower()) for h in hits)]
        found += [f"{sid}: {r}" for r in resources if not any(fnmatchcase(h[1].arn, r) for h in hits)]
    return found
