"""How each setting's value is read and checked: one reader per kind of value, each given the
variable's name and its raw text, each raising ConfigurationError that names the variable and
says what would be accepted. settings.py declares which variable each reader reads.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable
from typing import Any

from chalicelib.errors import ConfigurationError

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# One /24 subnet per availability zone; SLIPWAY_SUBNET_COUNT is at most MAX_SUBNETS.
SUBNET_PREFIX = 24
MAX_SUBNETS = 6
# TCP ports SLIPWAY_SERVICE_PORTS must not open to the world: SSH (never), and the swarm's own
# (cluster management, node gossip), which the security group opens within the group only.
RESERVED_PORTS = {22: "SSH", 2377: "swarm cluster management", 7946: "swarm node gossip"}
# Run Command's rate controls, as SendCommand accepts them (a count, or a percentage).
MAX_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]?%|100%)$")
MAX_ERRORS = re.compile(r"^([0-9]|[1-9][0-9]+|[0-9]%|[1-9][0-9]%|100%)$")


Reader = Callable[[str, str], Any]  # (variable, raw value) -> value; ConfigurationError names the variable


def text(variable: str, raw: str) -> str:
    return raw


def whole(low: int, high: int) -> Reader:
    def read(variable: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{variable} must be a whole number, got {raw!r}") from exc
        if not low <= value <= high:
            raise ConfigurationError(f"{variable} must be between {low} and {high}, got {value}")
        return value

    return read


def truth(variable: str, raw: str) -> bool:
    if raw.strip().lower() not in ("true", "false"):
        raise ConfigurationError(f"{variable} must be true or false, got {raw!r}")
    return raw.strip().lower() == "true"


def listed(variable: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def branches(variable: str, raw: str) -> tuple[str, ...]:
    return listed(variable, raw) or ("main",)


def environment_name(variable: str, raw: str) -> str:
    if not _NAME.fullmatch(raw):
        raise ConfigurationError(
            f"{variable} must be 1-31 lower-case letters, digits or '-', starting with a letter; got {raw!r}"
        )
    return raw


def vpc_cidr(variable: str, raw: str) -> ipaddress.IPv4Network:
    vpc_cidr = raw.strip()
    try:
        network = ipaddress.ip_network(vpc_cidr)
    except ValueError as exc:
        raise ConfigurationError(
            f"{variable} is not a network: {vpc_cidr!r} (an IPv4 network address with its "
            f"prefix, host bits zero, e.g. 10.42.0.0/16): {exc}"
        ) from exc
    if not isinstance(network, ipaddress.IPv4Network):
        raise ConfigurationError(
            f"{variable} must be an IPv4 network (a VPC's primary CIDR block is IPv4), got {vpc_cidr!r}"
        )
    if not 16 <= network.prefixlen <= SUBNET_PREFIX:
        raise ConfigurationError(f"{variable} must have a prefix between /16 and /{SUBNET_PREFIX}, got {vpc_cidr!r}")
    return network


def subnets(network: ipaddress.IPv4Network, count: int) -> tuple[str, ...]:
    """The first SLIPWAY_SUBNET_COUNT /24 slices of the VPC's network."""
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
    return tuple(str(subnet) for subnet in slices)


def ports(variable: str, raw: str) -> tuple[int, ...]:
    """TCP port numbers, comma separated, each once, in the order given."""
    ports: list[int] = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            port = int(item)
        except ValueError as exc:
            raise ConfigurationError(
                f"{variable} must be TCP port numbers (1-65535), comma separated, "
                f"e.g. 80,443; {item!r} in {raw!r} is not a number"
            ) from exc
        if not 1 <= port <= 65535:
            raise ConfigurationError(
                f"{variable} must be TCP port numbers (1-65535), comma separated, "
                f"e.g. 80,443; {port} in {raw!r} is out of range"
            )
        if port in RESERVED_PORTS:
            raise ConfigurationError(
                f"{variable} must not open {port} ({RESERVED_PORTS[port]}) to the world; got {raw!r}"
            )
        if port not in ports:  # a repeat would make the security group refuse the whole rule set
            ports.append(port)
    return tuple(ports)


# IAM's rule for an instance profile's name.
_PROFILE = re.compile(r"^[\w+=,.@-]{1,128}$")
# A key's ARN, not an alias: IAM policies scope a key by its key ARN (.chalice/resources.yaml).
_KMS_KEY = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):[0-9]{12}:key/[A-Za-z0-9-]+$")


def instance_profile(variable: str, raw: str) -> str:
    """Required: a node without an instance profile never registers with SSM, and the deploy
    would fail only after every readiness check."""
    raw = raw.strip()
    if not raw:
        raise ConfigurationError(
            f"{variable} is not set: the nodes need an instance profile with "
            "AmazonSSMManagedInstanceCore or they never register with SSM; `slipway bootstrap` "
            "creates one and writes its name"
        )
    if not _PROFILE.fullmatch(raw):
        raise ConfigurationError(
            f"{variable} must be an instance profile's name (1-128 letters, digits or +=,.@_-), got {raw!r}"
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


def rate(pattern: re.Pattern[str], what: str) -> Reader:
    def read(variable: str, raw: str) -> str:
        if not pattern.fullmatch(raw.strip()):
            raise ConfigurationError(f"{variable} must be {what}, got {raw.strip()!r}")
        return raw.strip()

    return read


_STACK_PATH = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._/-]{1,255}$")


def stack_file(variable: str, raw: str) -> str:
    """The stack file's path in the repository, relative to its root ("": look for it by name)."""
    raw = raw.strip()
    if not raw:
        return ""
    if not _STACK_PATH.fullmatch(raw) or raw.endswith("/") or "//" in raw:
        raise ConfigurationError(
            f"{variable} must be a file's path in the repository, relative to its root "
            f"(letters, digits, '.', '_', '-', '/'; no '..'), e.g. stack.yml or deploy/stack.yml; got {raw!r}"
        )
    return raw


def local_volumes(variable: str, raw: str) -> bool:
    if raw.strip().lower() not in ("refuse", "allow"):
        raise ConfigurationError(f"{variable} must be refuse or allow, got {raw!r}")
    return raw.strip().lower() == "allow"


INGRESS = ("nlb", "none")
# An HTTP health check's path, as ELB accepts it: starts with '/', at most 1024 printable characters.
_HEALTH_PATH = re.compile(r"^/[\x21-\x7e]{0,1023}$")


def ingress(variable: str, raw: str) -> str:
    if raw.strip().lower() not in INGRESS:
        raise ConfigurationError(
            f"{variable} must be nlb (a load balancer in front of the nodes) or none (public node "
            f"addresses), got {raw!r}"
        )
    return raw.strip().lower()


def health_check(variable: str, raw: str) -> tuple[str, str]:
    """`tcp` (a connection is accepted), or `http:<path>` (GET <path> answers 200-399): how the
    load balancer decides a node may receive requests. (protocol, path)"""
    raw = raw.strip()
    if raw.lower() == "tcp":
        return "TCP", ""
    protocol, _, path = raw.partition(":")
    if protocol.lower() == "http" and _HEALTH_PATH.fullmatch(path):
        return "HTTP", path
    raise ConfigurationError(
        f"{variable} must be tcp, or http:<path> with a path starting with '/' (e.g. http:/healthz), got {raw!r}"
    )


# DynamoDB's rule for a table's name.
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


def lease_table(variable: str, raw: str) -> str:
    raw = raw.strip()
    if not _TABLE.fullmatch(raw):
        raise ConfigurationError(
            f"{variable} must be a DynamoDB table's name (3-255 letters, digits, '_', '-' or '.'), got {raw!r}"
        )
    return raw


def schedule(variable: str, raw: str) -> str:
    expression = raw.strip()
    if not re.match(r"^(rate|cron)\(.+\)$", expression):
        raise ConfigurationError(f"{variable} must be rate(...) or cron(...), got {expression!r}")
    return expression
