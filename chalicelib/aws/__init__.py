"""Thin boto3 adapters, one module per service. Clients come from `client()`, built lazily.

Two kinds of client per service:
- the default one retries throttling and transient faults (botocore's `standard` mode; the
  default here would be `legacy`), for reads and for calls that are safe to repeat (idempotent
  ones, and those carrying a ClientToken);
- `client(service, retries=False)` makes one attempt, for creates AWS cannot deduplicate
  (CreateVpc, CreateSubnet, ...): a response lost after the call took effect must not be re-sent
  blindly. The step fails with TransientError instead, Step Functions retries the step, and the
  step finds what the lost call created by its tags.

Not found is an answer, not a fault: `is_transient` never retries it, so a misspelt CodeBuild
project or a parameter that is not there fails the step at once (a ConfigurationError naming the
setting, where one names the thing). The exception is a read of what a create has only just
made, which AWS may not show yet (eventual consistency): the adapter making that read turns that
call's not-found codes, and only those, into TransientError (`just_created`), and the state
machine's Retry runs the step again a little later. Every such read, by step (its Lambda's name):

ensure_network (network.ensure_network, NETWORK_NOT_VISIBLE): each call on the VPC, subnets, internet
    gateway, route table and security group it has just created (or found by their tags, made by
    an attempt whose answer was lost): DescribeVpcAttribute, ModifyVpcAttribute, CreateSubnet,
    AttachInternetGateway, CreateRouteTable, CreateSecurityGroup after CreateVpc ->
    InvalidVpcID.NotFound; ModifySubnetAttribute, AssociateRouteTable after CreateSubnet ->
    InvalidSubnetID.NotFound; AttachInternetGateway, CreateRoute after CreateInternetGateway ->
    InvalidInternetGatewayID.NotFound, InvalidGatewayID.NotFound; CreateRoute, AssociateRouteTable
    after CreateRouteTable -> InvalidRouteTableID.NotFound; AuthorizeSecurityGroupIngress after
    CreateSecurityGroup -> InvalidGroup.NotFound.
ensure_ingress (elb.ensure_load_balancer, LB_NOT_VISIBLE): the calls that configure the load
    balancer and target groups it has just created (or found by name, made by a lost attempt):
    SetSubnets, DescribeLoadBalancerAttributes, DescribeListeners, CreateListener ... ->
    LoadBalancerNotFound, TargetGroupNotFound, ListenerNotFound.
launch_nodes (ec2.ensure_launch_template, IMAGE_NOT_VISIBLE): DescribeImages of the image the
    bake has just registered (check_bake hands its id on) -> InvalidAMIID.NotFound.
launch_nodes (ec2.launch_nodes, LAUNCH_NOT_VISIBLE): RunInstances after CreateLaunchTemplate or
    CreateLaunchTemplateVersion in the same step -> InvalidLaunchTemplateId.NotFound,
    InvalidLaunchTemplateId.VersionNotFound; and on ensure_network's new subnets and security
    group, and the new image -> InvalidSubnetID.NotFound, InvalidGroup.NotFound,
    InvalidAMIID.NotFound.
check_nodes and the later steps that read nodes by id (ec2.list_nodes with instance_ids,
    INSTANCE_NOT_VISIBLE): DescribeInstances after RunInstances -> InvalidInstanceID.NotFound.
    The ids are always the run's own nodes (check_nodes reads them first, just after the launch).
check_bake (codebuild.describe, BUILD_NOT_VISIBLE): BatchGetBuilds after StartBuild ->
    ResourceNotFoundException (an empty `builds` answer is status NOT_FOUND, which check_bake
    also raises as TransientError).
check_swarm, evaluate_health, check_command, terminate_old_nodes (ssm.invocations,
    COMMAND_NOT_VISIBLE): ListCommandInvocations after the SendCommand of the step before ->
    InvalidCommandId, InvocationDoesNotExist.
check_swarm (ssm.put_secure, PARAMETER_NOT_VISIBLE): AddTagsToResource after PutParameter of
    the join tokens -> InvalidResourceId.
form_swarm (ssm.get_secure with just_put=True): GetParameter of the join tokens check_swarm has
    just put after this run's swarm init -> ParameterNotFound.

Where not found means the configuration is wrong, the adapter says which setting: StartBuild on a
missing project (codebuild.start: SLIPWAY_BAKE_PROJECT), a bake bucket that does not exist (s3:
SLIPWAY_BAKE_BUCKET) and a lease table that does not exist (dynamodb: SLIPWAY_LEASE_TABLE). A
GitHub token parameter that is not there turns commit statuses off, as no token does
(steps/report.py says which).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any, Literal, ParamSpec, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.loaders import Loader

from chalicelib.errors import TransientError

CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 5})
ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})

# A boto3 client: botocore builds its methods at run time from the service model, so its static
# type says nothing the adapters could check.
Client = Any
# The services Slipway's Lambdas call (boto3's stubs check each name against its own list).
Service = Literal["codebuild", "dynamodb", "ec2", "ecr", "elbv2", "logs", "s3", "ssm", "stepfunctions"]

_lock = threading.Lock()
_clients: dict[tuple[Service, bool], Client] = {}
# One session for every client (as boto3's default session would be), and one botocore loader for
# every session: it only reads botocore's own model files, so it outlives `reset()`; each client
# of its own session would parse the service's model again (a tenth of a second each, cold).
_session: boto3.session.Session | None = None
_loader: Loader | None = None

# Error codes worth trying again later: throttling, AWS-side faults, and a dependency not
# released yet. No not-found code: see the module docstring and `just_created`.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "DependencyViolation",
        # A target group while the load balancer using it is being deleted.
        "ResourceInUse",
        "IncorrectState",
        "IncorrectInstanceState",
        # A snapshot stays in use for a moment after its image is deregistered.
        "InvalidSnapshot.InUse",
    }
)
NETWORK_ERRORS = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)

P = ParamSpec("P")
R = TypeVar("R")


def client(service: Service, retries: bool = True) -> Client:
    """The process-wide client for `service` (created on first use, so warm Lambdas reuse it and
    the emulator is active before any client exists)."""
    key = (service, retries)
    cached = _clients.get(key)
    if cached is not None:
        return cached
    with _lock:
        if key not in _clients:
            config = CLIENT_CONFIG if retries else ONE_ATTEMPT
            _clients[key] = _shared_session().client(service, config=config)
        return _clients[key]


def _shared_session() -> boto3.session.Session:
    """The session clients are made from (call with `_lock` held)."""
    global _session, _loader
    if _session is None:
        core = botocore.session.Session()
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
        _session = boto3.session.Session(botocore_session=core)
    return _session


def reset() -> None:
    """Drop cached clients and their session (tests and the emulator switch endpoints and
    credentials, which a session resolves once)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None


def error_code(exc: ClientError) -> str:
    """The error code AWS answered with ("" if the response has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_not_found(exc: ClientError) -> bool:
    """EC2's "<Resource>ID.NotFound" family (used where "already gone" means done)."""
    return error_code(exc).endswith("NotFound")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, NETWORK_ERRORS):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500
    return False


@contextlib.contextmanager
def just_created(what: str, codes: Collection[str]) -> Iterator[None]:
    """Around a call on something a create has only just made: AWS answering one of `codes`
    (that call's not-found) means it does not show it yet, so TransientError, which the state
    machine retries. Any other error, another not-found included, propagates unchanged."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code in codes:
            message = exc.response.get("Error", {}).get("Message", "")
            raise TransientError(f"not visible yet, just after its create: {what} ({code}: {message})") from exc
        raise


def transient_errors(step: Callable[P, R]) -> Callable[P, R]:
    """Turn AWS faults worth retrying into TransientError, the error name the state machine's
    Retry matches; everything else propagates unchanged (and the deployment is undone)."""

    @functools.wraps(step)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(*args, **kwargs)
        except (ClientError, *NETWORK_ERRORS) as exc:
            if is_transient(exc):
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            raise

    return wrapper
