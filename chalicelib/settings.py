"""The one place that reads the environment: a frozen, validated Settings built once per process.

Chalice puts each stage's `environment_variables` (.chalice/config.json) into the Lambda
environment; the deploy path (or the emulator) adds the ARNs that only exist after deployment.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.errors import ConfigurationError

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# One /24 subnet per availability zone; SLIPWAY_SUBNET_COUNT is at most MAX_SUBNETS.
SUBNET_PREFIX = 24
MAX_SUBNETS = 6
# TCP ports SLIPWAY_SERVICE_PORTS must not open to the world: SSH (never), and the swarm's own
# (cluster management, node gossip), which the security group opens within the group only.
RESERVED_PORTS = {22: "SSH", 2377: "swarm cluster management", 7946: "swarm node gossip"}
# Run Command's rate controls, as SendCommand accepts them (a count, or a percentage).
_MAX_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]?%|100%)$")
_MAX_ERRORS = re.compile(r"^([0-9]|[1-9][0-9]+|[0-9]%|[1-9][0-9]%|100%)$")


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


def _int(env: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = env.get(key, str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{key} must be a whole number, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigurationError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, str(default)).strip().lower()
    if raw not in ("true", "false"):
        raise ConfigurationError(f"{key} must be true or false, got {env.get(key)!r}")
    return raw == "true"


def _list(env: Mapping[str, str], key: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(key, default).split(",") if item.strip())


def _network(env: Mapping[str, str]) -> tuple[ipaddress.IPv4Network, tuple[str, ...]]:
    """The VPC's network and its subnets: the first SLIPWAY_SUBNET_COUNT /24 slices of it."""
    vpc_cidr = env.get("SLIPWAY_VPC_CIDR", "10.42.0.0/16").strip()
    try:
        network = ipaddress.ip_network(vpc_cidr)
    except ValueError as exc:
        raise ConfigurationError(
            f"SLIPWAY_VPC_CIDR is not a network: {vpc_cidr!r} (an IPv4 network address with its "
            f"prefix, host bits zero, e.g. 10.42.0.0/16): {exc}"
        ) from exc
    if not isinstance(network, ipaddress.IPv4Network):
        raise ConfigurationError(
            f"SLIPWAY_VPC_CIDR must be an IPv4 network (a VPC's primary CIDR block is IPv4), got {vpc_cidr!r}"
        )
    if not 16 <= network.prefixlen <= SUBNET_PREFIX:
        raise ConfigurationError(
            f"SLIPWAY_VPC_CIDR must have a prefix between /16 and /{SUBNET_PREFIX}, got {vpc_cidr!r}"
        )
    count = _int(env, "SLIPWAY_SUBNET_COUNT", 1, 1, MAX_SUBNETS)
    room = 2 ** (SUBNET_PREFIX - network.prefixlen)
    if count > room:
        # The longest prefix with room for `count` /24s, e.g. /22 for 3 or 4 of them.
        wanted = SUBNET_PREFIX - (count - 1).bit_length()
        raise ConfigurationError(
            f"SLIPWAY_VPC_CIDR {network} has room for {room} subnet{'s' if room > 1 else ''} of "
            f"/{SUBNET_PREFIX}; SLIPWAY_SUBNET_COUNT={count} needs a /{wanted} or larger "
            f"(e.g. SLIPWAY_VPC_CIDR={network.supernet(new_prefix=wanted)}), "
            f"or SLIPWAY_SUBNET_COUNT={room}"
        )
    slices = itertools.islice(network.subnets(new_prefix=SUBNET_PREFIX), count)
    return network, tuple(str(subnet) for subnet in slices)


def _ports(env: Mapping[str, str]) -> tuple[int, ...]:
    """SLIPWAY_SERVICE_PORTS: TCP port numbers, comma separated, each once, in the order given."""
    raw = env.get("SLIPWAY_SERVICE_PORTS", "80,443")
    ports: list[int] = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            port = int(item)
        except ValueError as exc:
            raise ConfigurationError(
                f"SLIPWAY_SERVICE_PORTS must be TCP port numbers (1-65535), comma separated, "
                f"e.g. 80,443; {item!r} in {raw!r} is not a number"
            ) from exc
        if not 1 <= port <= 65535:
            raise ConfigurationError(
                f"SLIPWAY_SERVICE_PORTS must be TCP port numbers (1-65535), comma separated, "
                f"e.g. 80,443; {port} in {raw!r} is out of range"
            )
        if port in RESERVED_PORTS:
            raise ConfigurationError(
                f"SLIPWAY_SERVICE_PORTS must not open {port} ({RESERVED_PORTS[port]}) to the world; got {raw!r}"
            )
        if port not in ports:  # a repeat would make the security group refuse the whole rule set
            ports.append(port)
    return tuple(ports)


# IAM's rule for an instance profile's name.
_PROFILE = re.compile(r"^[\w+=,.@-]{1,128}$")
# A key's ARN, not an alias: IAM policies scope a key by its key ARN (.chalice/resources.yaml).
_KMS_KEY = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):[0-9]{12}:key/[A-Za-z0-9-]+$")


def _instance_profile(env: Mapping[str, str]) -> str:
    """SLIPWAY_NODE_INSTANCE_PROFILE is required: a node without an instance profile never registers
    with SSM, and the deploy would fail only after every readiness check."""
    raw = env.get("SLIPWAY_NODE_INSTANCE_PROFILE", "").strip()
    if not raw:
        raise ConfigurationError(
            "SLIPWAY_NODE_INSTANCE_PROFILE is not set: the nodes need an instance profile with "
            "AmazonSSMManagedInstanceCore or they never register with SSM; `slipway bootstrap` "
            "creates one and writes its name"
        )
    if not _PROFILE.fullmatch(raw):
        raise ConfigurationError(
            f"SLIPWAY_NODE_INSTANCE_PROFILE must be an instance profile's name (1-128 letters, digits "
            f"or +=,.@_-), got {raw!r}"
        )
    return raw


def kms_key_arn(raw: str, region: str) -> str:
    """SLIPWAY_KMS_KEY_ARN: empty (AWS's default keys), or the ARN of a key in the stage's region
    (EBS and Parameter Store use a key of their own region only). `slipway bootstrap` checks it too."""
    raw = raw.strip()
    if not raw:
        return ""
    match = _KMS_KEY.fullmatch(raw)
    if not match:
        raise ConfigurationError(
            "SLIPWAY_KMS_KEY_ARN must be a KMS key's ARN (arn:aws:kms:<region>:<account>:key/<key id>; "
            f"not an alias), got {raw!r}"
        )
    if match.group(1) != region:
        raise ConfigurationError(
            f"SLIPWAY_KMS_KEY_ARN is a key in {match.group(1)}; the stage runs in {region}, and EBS and "
            "Parameter Store use a key of their own region only"
        )
    return raw


def _rate(env: Mapping[str, str], key: str, default: str, pattern: re.Pattern[str], what: str) -> str:
    raw = env.get(key, default).strip()
    if not pattern.fullmatch(raw):
        raise ConfigurationError(f"{key} must be {what}, got {raw!r}")
    return raw


_STACK_PATH = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._/-]{1,255}$")


def _stack_file(env: Mapping[str, str]) -> str:
    """SLIPWAY_STACK_FILE: the stack file's path in the repository, relative to its root."""
    raw = env.get("SLIPWAY_STACK_FILE", "stack.yml").strip()
    if not _STACK_PATH.fullmatch(raw) or raw.endswith("/") or "//" in raw:
        raise ConfigurationError(
            f"SLIPWAY_STACK_FILE must be a file's path in the repository, relative to its root "
            f"(letters, digits, '.', '_', '-', '/'; no '..'), e.g. stack.yml or deploy/stack.yml; got {raw!r}"
        )
    return raw


def _local_volumes(env: Mapping[str, str]) -> bool:
    raw = env.get("SLIPWAY_LOCAL_VOLUMES", "refuse").strip().lower()
    if raw not in ("refuse", "allow"):
        raise ConfigurationError(
            f"SLIPWAY_LOCAL_VOLUMES must be refuse or allow, got {env.get('SLIPWAY_LOCAL_VOLUMES')!r}"
        )
    return raw == "allow"


INGRESS = ("nlb", "none")
# An HTTP health check's path, as ELB accepts it: starts with '/', at most 1024 printable characters.
_HEALTH_PATH = re.compile(r"^/[\x21-\x7e]{0,1023}$")


def _ingress(env: Mapping[str, str]) -> str:
    raw = env.get("SLIPWAY_INGRESS", "nlb").strip().lower()
    if raw not in INGRESS:
        raise ConfigurationError(
            f"SLIPWAY_INGRESS must be nlb (a load balancer in front of the nodes) or none (public node "
            f"addresses), got {env.get('SLIPWAY_INGRESS')!r}"
        )
    return raw


def _health_check(env: Mapping[str, str]) -> tuple[str, str]:
    """SLIPWAY_HEALTH_CHECK: `tcp` (a connection is accepted), or `http:<path>` (GET <path>
    answers 200-399): how the load balancer decides a node may receive requests."""
    raw = env.get("SLIPWAY_HEALTH_CHECK", "tcp").strip()
    if raw.lower() == "tcp":
        return "TCP", ""
    protocol, _, path = raw.partition(":")
    if protocol.lower() == "http" and _HEALTH_PATH.fullmatch(path):
        return "HTTP", path
    raise ConfigurationError(
        f"SLIPWAY_HEALTH_CHECK must be tcp, or http:<path> with a path starting with '/' (e.g. http:/healthz), "
        f"got {raw!r}"
    )


# DynamoDB's rule for a table's name.
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


def _lease_table(env: Mapping[str, str], environment: str) -> str:
    raw = env.get("SLIPWAY_LEASE_TABLE", f"slipway-{environment}-leases").strip()
    if not _TABLE.fullmatch(raw):
        raise ConfigurationError(
            f"SLIPWAY_LEASE_TABLE must be a DynamoDB table's name (3-255 letters, digits, '_', '-' or '.'), got {raw!r}"
        )
    return raw


def from_environment(env: Mapping[str, str]) -> Settings:
    """Build and validate Settings from a mapping shaped like os.environ. Every bad value raises
    ConfigurationError naming its variable."""
    environment = env.get("SLIPWAY_ENVIRONMENT", "")
    if not _NAME.fullmatch(environment):
        raise ConfigurationError(
            "SLIPWAY_ENVIRONMENT must be 1-31 lower-case letters, digits or '-', "
            f"starting with a letter; got {environment!r}"
        )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if not region:
        raise ConfigurationError("AWS_REGION is not set")
    network, subnets = _network(env)
    ports = _ports(env)
    health_protocol, health_path = _health_check(env)
    branches = _list(env, "SLIPWAY_BRANCHES", "main")
    return Settings(
        stage=env.get("SLIPWAY_STAGE", "dev"),
        environment=environment,
        region=region,
        deploy_state_machine_arn=env.get("SLIPWAY_DEPLOY_STATE_MACHINE_ARN", ""),
        bake_project=env.get("SLIPWAY_BAKE_PROJECT", f"slipway-{environment}-bake"),
        bake_bucket=env.get("SLIPWAY_BAKE_BUCKET", ""),
        webhook_secret_parameter=env.get(
            "SLIPWAY_WEBHOOK_SECRET_PARAMETER", f"/slipway/{environment}/github-webhook-secret"
        ),
        branches=branches or ("main",),
        tags=_list(env, "SLIPWAY_TAGS", ""),
        repositories=_list(env, "SLIPWAY_REPOSITORIES", ""),
        node_count=_int(env, "SLIPWAY_NODE_COUNT", 1, 1, 50),
        instance_type=env.get("SLIPWAY_INSTANCE_TYPE", "t3.small"),
        vpc_cidr=str(network),
        subnet_cidrs=subnets,
        service_ports=ports,
        poll_seconds=_int(env, "SLIPWAY_POLL_SECONDS", 30, 0, 3600),
        node_ready_attempts=_int(env, "SLIPWAY_NODE_READY_ATTEMPTS", 40, 1, 1000),
        # 360 polls of 30 s: three hours behind earlier runs (a few bakes) before giving up.
        queue_max_checks=_int(env, "SLIPWAY_QUEUE_MAX_CHECKS", 360, 1, 2000),
        skip_superseded=_bool(env, "SLIPWAY_SKIP_SUPERSEDED", True),
        prune_filter=env.get("SLIPWAY_PRUNE_FILTER", "until=24h"),
        prune_volumes=_bool(env, "SLIPWAY_PRUNE_VOLUMES", False),
        prune_max_concurrency=_rate(
            env,
            "SLIPWAY_PRUNE_MAX_CONCURRENCY",
            "25%",
            _MAX_CONCURRENCY,
            "a number of nodes (1 or more) or a percentage (1%-100%)",
        ),
        prune_max_errors=_rate(
            env,
            "SLIPWAY_PRUNE_MAX_ERRORS",
            "0",
            _MAX_ERRORS,
            "a number of errors (0 or more) or a percentage (0%-100%)",
        ),
        node_instance_profile=_instance_profile(env),
        kms_key_arn=kms_key_arn(env.get("SLIPWAY_KMS_KEY_ARN", ""), region),
        command_timeout_seconds=_int(env, "SLIPWAY_COMMAND_TIMEOUT_SECONDS", 600, 30, 172800),
        github_api=env.get("SLIPWAY_GITHUB_API", "https://api.github.com"),
        keep_images=_int(env, "SLIPWAY_KEEP_IMAGES", 3, 1, 100),
        github_token_parameter=env.get("SLIPWAY_GITHUB_TOKEN_PARAMETER", ""),
        stack_file=_stack_file(env),
        local_volumes=_local_volumes(env),
        stack_timeout_seconds=_int(env, "SLIPWAY_STACK_TIMEOUT_SECONDS", 900, 10, 86400),
        # Polls start this short and double up to SLIPWAY_POLL_SECONDS: a step done in seconds costs seconds.
        poll_first_seconds=_int(env, "SLIPWAY_POLL_FIRST_SECONDS", 2, 0, 3600),
        ingress=_ingress(env),
        health_check_protocol=health_protocol,
        health_check_path=health_path,
        # ELB's own range and default for a target group's deregistration delay.
        deregistration_delay_seconds=_int(env, "SLIPWAY_DEREGISTRATION_DELAY_SECONDS", 30, 0, 3600),
        # A target new to an NLB may stay `initial` for minutes before its first passed checks count.
        target_health_timeout_seconds=_int(env, "SLIPWAY_TARGET_HEALTH_TIMEOUT_SECONDS", 600, 10, 86400),
        lease_table=_lease_table(env, environment),
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
    expression = os.environ.get("SLIPWAY_PRUNE_SCHEDULE", "rate(1 day)").strip()
    if not re.match(r"^(rate|cron)\(.+\)$", expression):
        raise ConfigurationError(f"SLIPWAY_PRUNE_SCHEDULE must be rate(...) or cron(...), got {expression!r}")
    return expression


def drift_schedule() -> str:
    """When the drift check runs (steps/heal.py: a node lost without its event is healed too), read
    as prune_schedule is; daily by default."""
    expression = os.environ.get("SLIPWAY_DRIFT_SCHEDULE", "rate(1 day)").strip()
    if not re.match(r"^(rate|cron)\(.+\)$", expression):
        raise ConfigurationError(f"SLIPWAY_DRIFT_SCHEDULE must be rate(...) or cron(...), got {expression!r}")
    return expression
