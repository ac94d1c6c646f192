"""Pure naming rules: execution names, image names, parameter names and tags."""

from __future__ import annotations

import hashlib
from typing import Any

TAG_ENVIRONMENT = "slipway:environment"
TAG_DEPLOYMENT = "slipway:deployment"
TAG_COMMIT = "slipway:commit"
TAG_ROLE = "slipway:role"
TAG_IMAGE = "slipway:image"
TAG_SWARM_ROLE = "slipway:swarm-role"  # on a node: "manager" or "worker", once it is in the swarm


def image_name(environment: str, image_key: str) -> str:
    """The AMI name the Packer template gives a bake of this content (names are unique per region)."""
    return f"slipway-{environment}-node-{image_key}"


STATE_MACHINES = ("deploy", "teardown")
QUEUE_STATE = "Look for earlier runs"  # the first state after a deploy's input was found good


def state_machine_name(environment: str, kind: str) -> str:
    """`slipway-<environment>-deploy` or `-teardown`, as .chalice/resources.yaml names them."""
    return f"slipway-{environment}-{kind}"


def sibling_state_machine(state_machine_arn: str, environment: str, kind: str) -> str:
    """The ARN of the environment's `kind` state machine, in the same account and region as
    `state_machine_arn` (arn:<partition>:states:<region>:<account>:stateMachine:<name>)."""
    prefix, separator, _ = state_machine_arn.rpartition(":stateMachine:")
    if not separator:
        raise ValueError(f"not a state machine ARN: {state_machine_arn!r}")
    return f"{prefix}:stateMachine:{state_machine_name(environment, kind)}"


def execution_console_url(execution_arn: str) -> str:
    """Where the Step Functions console shows the execution (its region is the ARN's fourth field)."""
    region = execution_arn.split(":")[3] if execution_arn.count(":") >= 6 else "us-east-1"
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"


def status_context(environment: str) -> str:
    """The commit status's name on GitHub: one per environment, so dev and prod show side by side."""
    return f"slipway/{environment}"


def swarm_path(environment: str) -> str:
    return f"/slipway/{environment}/swarm"


def swarm_parameter(environment: str, leaf: str) -> str:
    return f"{swarm_path(environment)}/{leaf}"


def deployed_parameter(environment: str) -> str:
    """Where the environment's last successful deployment is recorded (repository, ref, commit,
    execution): what a heal deploys again. Written by the success report, deleted by teardown."""
    return f"/slipway/{environment}/deployed"


def repository_name(environment: str, service: str) -> str:
    """The ECR repository of a service's built images: `slipway/<environment>/<service>` (ECR takes
    lower-case names only; Compose service names may have capitals)."""
    return f"slipway/{environment}/{service}".lower()


def cache_repository_name(environment: str, service: str) -> str:
    """The ECR repository of a service's BuildKit registry cache: `slipway/<environment>/cache/<service>`
    (mutable: each build rewrites the one cache tag, which the images' immutable repository refuses)."""
    return f"slipway/{environment}/cache/{service}".lower()


def repository_prefix(environment: str) -> str:
    """Every repository of the environment's builds is under this prefix (the build role's scope)."""
    return f"slipway/{environment}/".lower()


def variables_path(environment: str) -> str:
    """Where the environment's variables live (`${VAR}` and env files of its stack file), one
    parameter each, `<path>/<NAME>`: String or SecureString, read by 'Read the stack file' only."""
    return f"/slipway/{environment}/vars"


def secret_parameter(environment: str, key: str) -> str:
    """Where the value of a stack's secret `key` lives: a SecureString the user puts; the nodes'
    role reads this path only, no Lambda reads a value under it."""
    return f"/slipway/{environment}/secrets/{key}"


ELB_NAME_LIMIT = 32  # a load balancer's or target group's name: letters, digits and '-', at most 32


def elb_name(environment: str, suffix: str = "") -> str:
    """The name of the environment's load balancer (`suffix` ""), or of its target group for a port
    (`suffix` "80"): `slipway-<environment>[-<suffix>]`, or, where that is longer than ELB allows,
    as much of the environment as fits and a hash of the whole name, so names stay unique."""
    name = f"slipway-{environment}" + (f"-{suffix}" if suffix else "")
    if len(name) <= ELB_NAME_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    tail = f"-{digest}" + (f"-{suffix}" if suffix else "")
    head = f"slipway-{environment}"[: ELB_NAME_LIMIT - len(tail)].rstrip("-")
    return head + tail


def tags(environment: str, deployment: str, commit: str, role: str, **extra: str) -> dict[str, str]:
    """Every resource Slipway creates carries these tags; teardown and compensation find it by them."""
    result = {
        TAG_ENVIRONMENT: environment,
        TAG_DEPLOYMENT: deployment,
        TAG_COMMIT: commit,
        TAG_ROLE: role,
        "Name": f"slipway-{environment}-{role}",
    }
    result.update(extra)
    return result


def tag_list(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


def tag_filters(environment: str, deployment: str | None = None, **more: str) -> list[dict[str, Any]]:
    """EC2 Filters selecting what belongs to an environment (and optionally one deployment)."""
    filters: list[dict[str, Any]] = [{"Name": f"tag:{TAG_ENVIRONMENT}", "Values": [environment]}]
    if deployment:
        filters.append({"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment]})
    for key, value in more.items():
        filters.append({"Name": f"tag:slipway:{key}", "Values": [value]})
    return filters
