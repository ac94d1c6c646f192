"""The one place that reads the environment: a frozen, validated Settings built once per process.

Every variable is declared once, in SETTINGS: its name, its default, what it means and how it is
read. Settings is built from that table, and docs/settings.md is generated from it (`make docs`;
tests/unit/test_settings_naming.py fails on a field or variable the table does not declare).

Chalice puts each stage's `environment_variables` (.chalice/config.json) into the Lambda
environment; the deploy path (or the emulator) adds the ARNs that only exist after deployment.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib import setting_values as read
from chalicelib.errors import ConfigurationError
from chalicelib.setting_values import Reader, kms_key_arn


@dataclass(frozen=True)
class Settings:
    stage: str
    environment: str
    region: str
    deploy_state_machine_arn: str
    bake_project: str
    bake_bucket: str
    webhook_secret_parameter: str
    branches: tuple[str, ...]
    tags: tuple[str, ...]
    repositories: tuple[str, ...]
    deploy_workflow: str  # a GitHub Actions workflow whose success deploys, instead of a push ("": pushes)
    node_count: int
    instance_type: str
    vpc_cidr: str
    subnet_cidrs: tuple[str, ...]
    service_ports: tuple[int, ...]
    poll_seconds: int
    node_ready_attempts: int
    queue_max_checks: int
    skip_superseded: bool
    prune_filter: str
    prune_volumes: bool
    prune_max_concurrency: str
    prune_max_errors: str
    node_instance_profile: str
    kms_key_arn: str
    command_timeout_seconds: int
    github_api: str
    keep_images: int
    github_token_parameter: str
    stack_file: str
    local_volumes: bool
    stack_timeout_seconds: int
    poll_first_seconds: int
    ingress: str  # "nlb": a Network Load Balancer in front of the nodes; "none": public node addresses
    health_check_protocol: str  # the load balancer's target health check: TCP or HTTP
    health_check_path: str  # HTTP's path ("" for TCP)
    deregistration_delay_seconds: int
    target_health_timeout_seconds: int
    lease_table: str  # the DynamoDB table of the environments' leases: one run at a time, for certain
    build_project: str  # the CodeBuild project that builds the stack's images
    builds_kept: int  # build images each service's ECR repository keeps
    node_image_key: str  # the installation's node image source (packer/, ansible/), uploaded by bootstrap


@dataclass(frozen=True)
class Setting:
    variable: str
    default: str | None  # as the environment spells it; {environment} is SLIPWAY_ENVIRONMENT's value
    meaning: str  # one line of docs/settings.md
    reader: Reader = read.text
    field: str | None = None  # the Settings field it fills alone; None: from_environment combines it
    shown: str | None = None  # the default as docs/settings.md shows it, where a person needs words


# Every variable Slipway's functions read, in the order docs/settings.md lists them.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "SLIPWAY_ENVIRONMENT",
        None,
        "the `slipway:environment` tag value; teardown's input",
        read.environment_name,
        "environment",
        "required (each stage sets it)",
    ),
    Setting("SLIPWAY_STAGE", "dev", "the Chalice stage the functions belong to (each stage sets it)", field="stage"),
    Setting("SLIPWAY_BRANCHES", "main", "globs of branches that deploy (empty: `main`)", read.branches, "branches"),
    Setting("SLIPWAY_TAGS", "", "globs of tags that deploy (none by default)", read.listed, "tags"),
    Setting(
        "SLIPWAY_DEPLOY_WORKFLOW",
        "",
        "the name of a GitHub Actions workflow: deploy when it completes successfully for a commit of a "
        "deploying branch (`workflow_run`), instead of on the push ([webhook](webhook.md))",
        field="deploy_workflow",
        shown="none: pushes deploy",
    ),
    Setting(
        "SLIPWAY_REPOSITORIES",
        "",
        "allow-list of `owner/name` (any when empty; 403 otherwise)",
        read.listed,
        "repositories",
    ),
    Setting(
        "SLIPWAY_WEBHOOK_SECRET_PARAMETER",
        "/slipway/{environment}/github-webhook-secret",
        "SecureString with the webhook's secret (`-previous` beside it during a rotation)",
        field="webhook_secret_parameter",
    ),
    Setting("SLIPWAY_NODE_COUNT", "1", "swarm nodes", read.whole(1, 50), "node_count"),
    Setting("SLIPWAY_INSTANCE_TYPE", "t3.small", "node instance type", field="instance_type"),
    Setting(
        "SLIPWAY_VPC_CIDR",
        "10.42.0.0/16",
        "the VPC's network (a VPC too small for SLIPWAY_SUBNET_COUNT is refused, naming the size that fits)",
        read.vpc_cidr,
    ),
    Setting("SLIPWAY_SUBNET_COUNT", "1", "/24 subnets, one per availability zone", read.whole(1, read.MAX_SUBNETS)),
    Setting(
        "SLIPWAY_SERVICE_PORTS",
        "80,443",
        "the only ports open to the world, on the load balancer (`nlb`) or the nodes (`none`); no SSH, "
        "ever: 22, and the swarm's 2377 and 7946, are refused",
        read.ports,
        "service_ports",
    ),
    Setting(
        "SLIPWAY_INGRESS",
        "nlb",
        "`nlb`: one stable address, a Network Load Balancer in front of the nodes, which take the service "
        "ports only from it; `none`: the nodes' own public addresses (a cheaper dev stage)",
        read.ingress,
        "ingress",
    ),
    Setting(
        "SLIPWAY_HEALTH_CHECK",
        "tcp",
        "how the load balancer decides a node may take connections: `tcp` (it accepts one), or "
        "`http:<path>` (GET answers 200–399)",
        read.health_check,
    ),
    # ELB's own range and default for a target group's deregistration delay.
    Setting(
        "SLIPWAY_DEREGISTRATION_DELAY_SECONDS",
        "30",
        "how long a node leaving the load balancer keeps its open connections before it leaves the swarm",
        read.whole(0, 3600),
        "deregistration_delay_seconds",
    ),
    # A target new to an NLB may stay `initial` for minutes before its first passed checks count.
    Setting(
        "SLIPWAY_TARGET_HEALTH_TIMEOUT_SECONDS",
        "600",
        "how long new nodes may take to turn healthy in the load balancer before the run fails (the "
        "previous ones stay registered)",
        read.whole(10, 86400),
        "target_health_timeout_seconds",
    ),
    Setting(
        "SLIPWAY_NODE_INSTANCE_PROFILE",
        "",
        "the nodes' instance profile (`AmazonSSMManagedInstanceCore` and the stack's reads); without it "
        "a deploy is refused at its first step, naming it",
        read.instance_profile,
        "node_instance_profile",
        "required (written by `slipway bootstrap`)",
    ),
    Setting(
        "SLIPWAY_KMS_KEY_ARN",
        "",
        "the stage's own KMS key for parameters and EBS ([security](security.md))",
    ),
    Setting(
        "SLIPWAY_BAKE_PROJECT",
        "slipway-{environment}-bake",
        "the CodeBuild project that bakes the node image",
        field="bake_project",
        shown="`slipway-<env>-bake` (written by `slipway bootstrap`)",
    ),
    Setting(
        "SLIPWAY_BUILD_PROJECT",
        "slipway-{environment}-build",
        "the CodeBuild project that builds the stack's images ([builds](builds.md))",
        field="build_project",
        shown="`slipway-<env>-build` (written by `slipway bootstrap`)",
    ),
    Setting(
        "SLIPWAY_BUILDS_KEPT",
        "20",
        "build images each service's ECR repository keeps (its lifecycle policy)",
        read.whole(1, 1000),
        "builds_kept",
    ),
    Setting(
        "SLIPWAY_NODE_IMAGE_KEY",
        "",
        "the content key of the installation's packer/ and ansible/, which bake the node image of a "
        "repository that has neither",
        field="node_image_key",
        shown="written by `slipway bootstrap`",
    ),
    Setting(
        "SLIPWAY_BAKE_BUCKET",
        "",
        "the bucket each bake's source goes to",
        field="bake_bucket",
        shown="written by `slipway bootstrap`",
    ),
    Setting(
        "SLIPWAY_LEASE_TABLE",
        "slipway-{environment}-leases",
        "the DynamoDB table of the environment's lease: one run at a time",
        read.lease_table,
        "lease_table",
        "`slipway-<env>-leases` (written by `slipway bootstrap`)",
    ),
    Setting(
        "SLIPWAY_DEPLOY_STATE_MACHINE_ARN",
        "",
        "the deploy state machine the webhook and the heal start",
        field="deploy_state_machine_arn",
        shown="written by `slipway bootstrap`",
    ),
    Setting("SLIPWAY_KEEP_IMAGES", "3", "newest images kept (plus any a node runs)", read.whole(1, 100), "keep_images"),
    Setting(
        "SLIPWAY_POLL_SECONDS",
        "30",
        "every Wait state of the pipeline (the longest, for the health gate's and the stack's polls)",
        read.whole(0, 3600),
        "poll_seconds",
    ),
    # Polls start this short and double up to SLIPWAY_POLL_SECONDS: a step done in seconds costs seconds.
    Setting(
        "SLIPWAY_POLL_FIRST_SECONDS",
        "2",
        "the first wait of the health gate's and the stack's polls, doubling up to `SLIPWAY_POLL_SECONDS`",
        read.whole(0, 3600),
        "poll_first_seconds",
    ),
    Setting(
        "SLIPWAY_COMMAND_TIMEOUT_SECONDS",
        "600",
        "how long a Run Command may take on a node before SSM stops it (SendCommand's TimeoutSeconds)",
        read.whole(30, 172800),
        "command_timeout_seconds",
    ),
    Setting(
        "SLIPWAY_STACK_FILE",
        "",
        "the stack file's path in the repository; empty: the first of stack.yml, stack.yaml, compose.yaml, "
        "compose.yml, docker-compose.yaml, docker-compose.yml at its root (none there: nodes only)",
        read.stack_file,
        "stack_file",
    ),
    Setting(
        "SLIPWAY_LOCAL_VOLUMES",
        "refuse",
        "`allow`: deploy a stack with named volumes on the local driver (lost when a node is replaced)",
        read.local_volumes,
        "local_volumes",
    ),
    Setting(
        "SLIPWAY_STACK_TIMEOUT_SECONDS",
        "900",
        "how long the services may take to converge before the run fails",
        read.whole(10, 86400),
        "stack_timeout_seconds",
    ),
    # 360 polls of 30 s: three hours behind earlier runs (a few bakes) before giving up.
    Setting(
        "SLIPWAY_QUEUE_MAX_CHECKS",
        "360",
        "polls a run waits behind the environment's earlier runs before it gives up",
        read.whole(1, 2000),
        "queue_max_checks",
    ),
    Setting(
        "SLIPWAY_SKIP_SUPERSEDED",
        "true",
        "a queued deploy is skipped when a newer deploy has started behind it (`false`: every push deploys in turn)",
        read.truth,
        "skip_superseded",
    ),
    Setting(
        "SLIPWAY_NODE_READY_ATTEMPTS",
        "40",
        "polls before nodes that never come online fail the deploy, or nodes that never finish terminating "
        "fail the undo or teardown",
        read.whole(1, 1000),
        "node_ready_attempts",
    ),
    Setting(
        "SLIPWAY_DRIFT_SCHEDULE",
        "rate(1 day)",
        "when the drift check looks for nodes missing or not Ready, and heals them",
        read.schedule,
    ),
    Setting("SLIPWAY_PRUNE_SCHEDULE", "rate(1 day)", "when the prune runs", read.schedule),
    Setting(
        "SLIPWAY_PRUNE_FILTER",
        "until=24h",
        "what the prune may remove (`docker system prune --filter`)",
        field="prune_filter",
    ),
    Setting(
        "SLIPWAY_PRUNE_VOLUMES", "false", "whether the prune removes unused volumes too", read.truth, "prune_volumes"
    ),
    Setting(
        "SLIPWAY_PRUNE_MAX_CONCURRENCY",
        "25%",
        "Run Command's rate control: nodes pruned at once",
        read.rate(read.MAX_CONCURRENCY, "a number of nodes (1 or more) or a percentage (1%-100%)"),
        "prune_max_concurrency",
    ),
    Setting(
        "SLIPWAY_PRUNE_MAX_ERRORS",
        "0",
        "Run Command's rate control: failures before the prune stops",
        read.rate(read.MAX_ERRORS, "a number of errors (0 or more) or a percentage (0%-100%)"),
        "prune_max_errors",
    ),
    Setting(
        "SLIPWAY_GITHUB_API",
        "https://api.github.com",
        "where the image's content key is read and commit statuses are set",
        field="github_api",
    ),
    Setting(
        "SLIPWAY_GITHUB_TOKEN_PARAMETER",
        "",
        "the SSM SecureString holding the GitHub token (none: public repositories only, no statuses)",
        field="github_token_parameter",
    ),
)
DECLARED: Mapping[str, Setting] = {setting.variable: setting for setting in SETTINGS}
# Settings fields from_environment makes of several variables, or of AWS's own.
COMBINED = ("region", "vpc_cidr", "subnet_cidrs", "health_check_protocol", "health_check_path", "kms_key_arn")


def _value(env: Mapping[str, str], variable: str, environment: str = "") -> Any:
    setting = DECLARED[variable]
    raw = env.get(variable, (setting.default or "").replace("{environment}", environment))
    return setting.reader(variable, raw)


def from_environment(env: Mapping[str, str]) -> Settings:
    """Build and validate Settings from a mapping shaped like os.environ. Every bad value raises
    ConfigurationError naming its variable."""
    environment = _value(env, "SLIPWAY_ENVIRONMENT")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if not region:
        raise ConfigurationError("AWS_REGION is not set")
    network = _value(env, "SLIPWAY_VPC_CIDR")
    health_protocol, health_path = _value(env, "SLIPWAY_HEALTH_CHECK")
    alone = {s.field: _value(env, s.variable, environment) for s in SETTINGS if s.field and s.field != "environment"}
    return Settings(
        environment=environment,
        region=region,
        vpc_cidr=str(network),
        subnet_cidrs=read.subnets(network, _value(env, "SLIPWAY_SUBNET_COUNT")),
        health_check_protocol=health_protocol,
        health_check_path=health_path,
        kms_key_arn=kms_key_arn(env.get("SLIPWAY_KMS_KEY_ARN", ""), region),
        **alone,
    )


@functools.cache
def get_settings() -> Settings:
    """Settings for this process, read once (warm Lambdas reuse them)."""
    return from_environment(os.environ)


def reset() -> None:
    """Forget the cached Settings (tests and the emulator change the environment)."""
    get_settings.cache_clear()


def prune_schedule() -> str:
    """The prune schedule (an EventBridge rate() or cron() expression). Chalice loads the app to
    deploy it with the stage's environment_variables from .chalice/config.json in os.environ, so
    each stage sets its own SLIPWAY_PRUNE_SCHEDULE; daily by default."""
    schedule: str = _value(os.environ, "SLIPWAY_PRUNE_SCHEDULE")
    return schedule


def drift_schedule() -> str:
    """When the drift check runs (steps/heal.py: a node lost without its event is healed too), read
    as prune_schedule is; daily by default."""
    schedule: str = _value(os.environ, "SLIPWAY_DRIFT_SCHEDULE")
    return schedule
