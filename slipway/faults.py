"""Faults injected where the tests and the benchmarks need them. On the clients the pipeline's
functions use, through botocore's own send path
(a `before-send` handler registered first), so standard-mode retries and the state machine's
Retry see the faults as they would on AWS. botocore's Stubber would answer before the retry logic.

Faults, injected on the first call of one operation:
- throttle: the call does not take effect; the client gets the service's throttling error;
- lost: the call takes effect, then the connection drops before the client reads the answer;
- not-found: the first read after the create answers NotFound (EC2's eventual consistency).

On emulated nodes: `break_after` kills a node's dockerd right after it runs a script of a kind.
CASES is every mutating call of a first deploy under each fault that applies to it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ConnectionClosedError
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

from slipway.emulator.nodes import Result

if TYPE_CHECKING:
    from slipway.emulator import Emulator

# The read that follows each create in the pipeline, and the NotFound code EC2 gives it.
FIRST_READ_AFTER = {
    "CreateVpc": ("DescribeVpcAttribute", "InvalidVpcID.NotFound"),
    "CreateSubnet": ("ModifySubnetAttribute", "InvalidSubnetID.NotFound"),
    "CreateInternetGateway": ("AttachInternetGateway", "InvalidInternetGatewayID.NotFound"),
    "CreateRouteTable": ("CreateRoute", "InvalidRouteTableID.NotFound"),
    "CreateSecurityGroup": ("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound"),
    "CreateLaunchTemplate": ("RunInstances", "InvalidLaunchTemplateId.NotFound"),
    "RunInstances": ("DescribeInstances", "InvalidInstanceID.NotFound"),
    "SendCommand": ("ListCommandInvocations", "InvalidCommandId"),
    "PutParameter": ("AddTagsToResource", "InvalidResourceId"),
    "StartBuild": ("BatchGetBuilds", "ResourceNotFoundException"),
    "CreateLoadBalancer": ("DescribeLoadBalancerAttributes", "LoadBalancerNotFound"),
    "CreateTargetGroup": ("DescribeTargetGroupAttributes", "TargetGroupNotFound"),
}
JSON_PROTOCOL = {"ssm", "codebuild", "states", "ecr"}


def error_response(request, service: str, code: str, status: int = 400) -> AWSResponse:
    if service in JSON_PROTOCOL:
        body = json.dumps({"__type": code, "message": f"injected {code}"})
        headers = {"Content-Type": "application/x-amz-json-1.1"}
    else:
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>injected {code}</Message>"
            f"</Error></Errors><RequestID>fault</RequestID></Response>"
        )
        headers = {"Content-Type": "text/xml"}
    return AWSResponse(request.url, status, HTTPHeaders.from_dict(headers), MockRawResponse(body))


class Fault:
    def __init__(self, operation: str, kind: str, *, skip: int = 0, times: int = 1) -> None:
        """Inject on `times` calls of `operation`, after letting the first `skip` through."""
        self.operation, self.kind = operation, kind
        self.skip, self.times = skip, times
        self.target = operation if kind != "not-found" else FIRST_READ_AFTER[operation][0]
        self.armed = kind != "not-found"  # not-found waits for its create to happen first
        self.fired = 0
        self._lock = threading.Lock()

    def install(self, clients) -> None:
        for client in clients:
            client.meta.events.register_first("before-send", self)

    def __call__(self, request, event_name: str, **kwargs):
        service, operation = event_name.split(".")[1:3]
        with self._lock:
            if self.kind == "not-found" and operation == self.operation and not self.fired:
                self.armed = True
                return None
            if operation != self.target or not self.armed or self.fired >= self.times:
                return None
            if self.skip:
                self.skip -= 1
                return None
            self.fired += 1
        if self.kind == "throttle":
            code = (
                "ThrottlingException"
                if service in JSON_PROTOCOL
                else "Throttling"
                if service.startswith("elastic-load-balancing")
                else "RequestLimitExceeded"
            )
            request.url = "http://fault-injected.invalid/"  # moto must not execute this one
            return error_response(request, service, code, 400)
        if self.kind == "not-found":
            request.url = "http://fault-injected.invalid/"
            return error_response(request, service, FIRST_READ_AFTER[self.operation][1], 400)
        # lost: let the call take effect, then drop the connection before the answer.
        botocore_stubber(event_name=event_name, request=request)
        raise ConnectionClosedError(endpoint_url=request.url)


# Every mutating call a first deploy makes, in the order it makes them.
MUTATING = [
    "StartBuild",
    "CreateVpc",
    "ModifyVpcAttribute",
    "CreateSubnet",
    "ModifySubnetAttribute",
    "CreateInternetGateway",
    "AttachInternetGateway",
    "CreateRouteTable",
    "CreateRoute",
    "AssociateRouteTable",
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "CreateLaunchTemplate",
    "RunInstances",
    "SendCommand",
    "PutParameter",
    "AddTagsToResource",
    "CreateTags",
    "CreateLoadBalancer",
    "ModifyLoadBalancerAttributes",
    "CreateTargetGroup",
    "ModifyTargetGroupAttributes",
    "CreateListener",
    "RegisterTargets",
]
CASES = [
    (op, kind)
    for op in MUTATING
    for kind in ("throttle", "lost", "not-found")
    if kind != "not-found" or op in FIRST_READ_AFTER
]


def break_after(emu: Emulator, kind: str) -> Callable[[str, list[str]], Result]:
    """From now on, an emulated node's dockerd dies right after it runs a script of this kind (a
    key of scripts.MARKERS); returns the original run."""
    from chalicelib import scripts

    assert kind in scripts.MARKERS, kind
    original_run = emu.nodes.run

    def run(instance_id: str, commands: list[str]) -> Result:
        result = original_run(instance_id, commands)
        if scripts.command_kind(commands) == kind:
            emu.nodes.broken.add(instance_id)
        return result

    emu.nodes.run = run
    return original_run
