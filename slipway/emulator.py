"""The embedded AWS emulator: moto, in this process, running Slipway's real state machines.

What it adds to moto, and only here (chalicelib never knows it runs locally):
- Lambda: every invocation moto's Step Functions interpreter makes is dispatched to the Chalice
  app's own function in this process (moto would need Docker images it cannot pull here).
- CodeBuild: moto runs no build. The emulator stands in for Packer's output: on the build's
  second status check it registers the AMI under the name and tags the Packer template gives it
  and exports AMI_ID, or fails the build when told to.
- GitHub: the pipeline's REST calls (a commit's top-level trees, its archive, commit statuses)
  are answered by slipway.github_api, with a token kept in SSM as on AWS.
- EventBridge: the rules Chalice creates are created; when a Run Command finishes, SSM's
  "EC2 Command Status-change Notification", and when an execution is stopped, Step Functions'
  "Execution Status Change", are matched against them (moto's matcher) and delivered to the
  Lambda targets on a worker thread (moto's EventBridge has no Lambda targets).
- EC2: RunInstances honours its ClientToken (a repeat returns the first reservation), and gives
  an instance launched from a template the template's MetadataOptions and instance profile.
- IAM: the nodes' role and instance profile, as `slipway bootstrap` creates them from
  .chalice/resources.yaml, named in SLIPWAY_NODE_INSTANCE_PROFILE.
- Step Functions: an execution started without a name gets a UUID, and a name is taken atomically,
  as on AWS.
- SSM: `DescribeInstanceInformation` and `ListCommandInvocations` (missing in moto), targets
  limited to running instances, and commands answered by emulated nodes (slipway.nodes).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import io
import json
import os
import queue
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from slipway import PROJECT_DIR, statemachines
from slipway.github_api import FakeGitHub
from slipway.nodes import EmulatedNodes, Machine

ACCOUNT = "123456789012"
# The images example/stack.yml names: the emulated registry has them from the start.
EXAMPLE_IMAGES = ("slipway-example/web:1", "slipway-example/worker:1")
# Ports a real node container publishes on this machine's loopback (example/stack.yml's web).
REAL_NODE_PORTS = (8080,)
# Real nodes: the routing-mesh stand-in's ports (slipway/mesh.py), published port -> the tasks'
# host-mode port: example/stack.yml publishes 80, which its web tasks publish as 8080 on their node.
REAL_NODE_MESH = {80: 8080}
REGION = "us-east-1"
STAGE = "dev"
_VALID_DEFINITIONS: set[str] = set()  # ASL texts moto has already parsed in this process

_PROGRAMS: dict[str, Any] = {}  # ASL text -> the program moto's interpreter parsed it into
_PROGRAMS_LOCK = threading.Lock()
_INTERPRETER_CLIENTS: dict[tuple[str, str, bool, str], Any] = {}
_INTERPRETER_CLIENTS_LOCK = threading.Lock()

_LOADER: Any = None  # botocore's loader of its model files, shared by the emulator's sessions
_LOADER_LOCK = threading.Lock()


def _session():
    """A new boto3 session that reads botocore's model files through the process's one loader:
    moto gives every mock a new default session, which would parse each service's model again."""
    global _LOADER
    import boto3
    import botocore.session

    core = botocore.session.Session()
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


def _shared_interpreter_client(make: Callable[..., Any], region: str, service: str, state_credentials: Any = None):
    """moto's interpreter's boto_client_for (`make`), one client per region, service and endpoint
    for the process: a boto3 client is thread-safe, and building one is most of a Task's cost.
    (moto's own ignores `state_credentials`: every client signs with the same placeholder keys.)"""
    from moto.core.models import botocore_stubber
    from moto.settings import moto_server_port

    key = (region, service, botocore_stubber.enabled, moto_server_port())
    with _INTERPRETER_CLIENTS_LOCK:
        if key not in _INTERPRETER_CLIENTS:
            _INTERPRETER_CLIENTS[key] = make(region, service)
        return _INTERPRETER_CLIENTS[key]


MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
IMAGE_TAGS = {  # AMI tag -> Packer variable, as packer/sources.pkr.hcl's local.tags sets them
    "Name": "ami_name",
    "slipway:environment": "environment",
    "slipway:deployment": "deployment",
    "slipway:commit": "commit",
    "slipway:image-key": "image_key",
}
CONSTANT_IMAGE_TAGS = {"slipway:role": "image"}


@dataclass
class LambdaContext:
    """The attributes of AWS's Lambda context object that Powertools and Chalice read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""

    def __post_init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def _importable() -> None:
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))


@contextlib.contextmanager
def _observability_per_invocation():
    """Keep the app's log keys and pending metrics apart per thread, as Lambda processes are.

    On AWS each invocation is its own process with its own Logger and Metrics. Here the webhook and
    the Lambdas the Step Functions interpreter and the event worker run on their threads share one
    of each: a step's `clear_state` once wiped the webhook's `delivery_id` between its
    `append_keys` and its "deployment accepted" line, and a schedule's flush could publish another
    invocation's metrics. Every thread starts from the state they had when the emulator started.
    """
    from chalicelib.observability import logger, metrics

    with (
        _per_thread(logger.registered_formatter, ("log_format",)),
        _per_thread(metrics.provider, ("metric_set", "dimension_set", "metadata_set", "dimension_sets", "timestamp")),
    ):
        yield


@contextlib.contextmanager
def _per_thread(target: object, attributes: tuple[str, ...]):
    """`target`'s `attributes` become thread-local, each thread's a copy of their present value."""
    start = {name: copy.deepcopy(getattr(target, name)) for name in attributes}
    local = threading.local()

    def attribute(name: str) -> property:
        def get(_self):
            if not hasattr(local, name):
                setattr(local, name, copy.deepcopy(start[name]))
            return getattr(local, name)

        return property(get, lambda _self, value: setattr(local, name, value))

    original = type(target)
    target.__class__ = type(original.__name__, (original,), {name: attribute(name) for name in attributes})
    try:
        yield
    finally:
        target.__class__ = original


def load_app():
    """Import the Chalice app (app.py at the project root) once."""
    _importable()
    return importlib.import_module("app")


def stage_environment(stage: str = STAGE) -> dict[str, str]:
    """The environment variables .chalice/config.json gives the stage's functions."""
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return env


@functools.cache
def _aws_managed_policy_data(name: str) -> dict:
    """One of AWS's managed policies from moto's copy, without parsing the whole 4.7 MB of it."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    key = f'\n "{name}":'  # a top-level key of the JSON object, as moto writes it
    data, _ = json.JSONDecoder().raw_decode(aws_managed_policies_data, aws_managed_policies_data.index(key) + len(key))
    return data


def _load_aws_managed_policy(arn: str) -> None:
    """Make an AWS managed policy attachable: moto loads them only when configured to, all of them,
    which costs seconds on every start; the emulator loads the ones the node role names."""
    from moto.iam.models import AWSManagedPolicy, iam_backends

    backend = iam_backends[ACCOUNT]["aws"]
    if arn not in backend.managed_policies:
        name = arn.rsplit("/", 1)[-1]
        backend.managed_policies[arn] = AWSManagedPolicy.from_data(
            name, ACCOUNT, REGION, _aws_managed_policy_data(name)
        )


def _from_template(backend, reservation, kwargs: dict):
    """What EC2 takes from a launch template and moto leaves out: its MetadataOptions and its
    instance profile, for each instance launched from one (the request's own, if any, win)."""
    if not kwargs.get("launch_template"):
        return reservation
    from moto.ec2.models.instances import MetadataOptions

    data = backend._get_template_from_args(kwargs["launch_template"]).data
    profile = data.get("IamInstanceProfile") or {}
    asked = kwargs.get("iam_instance_profile_name") or kwargs.get("iam_instance_profile_arn")
    for instance in reservation.instances:
        if data.get("MetadataOptions") and not kwargs.get("metadata_options"):
            instance.metadata_options = MetadataOptions(data["MetadataOptions"])
        if profile and not asked and instance.id not in backend.iam_instance_profile_associations:
            backend.associate_iam_instance_profile(
                instance_id=instance.id,
                iam_instance_profile_name=profile.get("Name"),
                iam_instance_profile_arn=profile.get("Arn"),
            )
    return reservation


@dataclass
class TargetHealth:
    """What the emulated NLB knows of its targets beyond moto's registrations: health checks since
    registration ((target group, instance) -> count), deregistrations still draining (-> until,
    time.monotonic()), deleted load balancers' interfaces not yet released (description -> how many
    more DescribeNetworkInterfaces answers still list them),
    and the instances a test makes fail their health checks (`failing`, or the predicate `fail`)."""

    initial_checks: int = 1  # DescribeTargetHealth answers `initial` this many times after a registration
    # AWS releases a deleted NLB's interfaces "a while" later. Counted in looks, not seconds, so the
    # teardown's wait loop sees them held for a few checks however fast the machine runs it.
    eni_release_looks: int = 3
    checks: dict[tuple[str, str], int] = field(default_factory=dict)
    draining: dict[tuple[str, str], float] = field(default_factory=dict)
    releasing: dict[str, int] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    fail: Callable[[str], bool] | None = None  # or: which instances fail, decided when asked
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalLoadBalancer:
    """Real nodes: the environment's NLB as a real TCP load balancer on this machine
    (slipway/forwarder.py), kept in step with moto's: a listener for each target group's port, its
    targets the registered instances at their node's address, their health as it checks it."""

    def __init__(self, emulator: Emulator, settings, *, log) -> None:
        from slipway import forwarder

        health = forwarder.HealthCheck(
            protocol=settings.health_check_protocol.lower(),
            path=settings.health_check_path or "/",
            interval=0.5,
            healthy_threshold=2,
            unhealthy_threshold=2,
        )
        self.emulator = emulator
        self.balancer = forwarder.LoadBalancer(
            health=health, deregistration_delay=settings.deregistration_delay_seconds, log=log
        )
        self._lock = threading.Lock()

    def sync(self, group) -> None:
        """The target group's registrations, now, as the local load balancer's targets."""
        from moto.ec2.models import ec2_backends

        ec2 = ec2_backends[ACCOUNT][REGION]
        targets = {}
        for instance_id in list(group.targets):
            instance = ec2.get_instance_by_id(instance_id)
            if instance is not None and self.emulator.nodes.container(instance_id):
                targets[instance_id] = (instance.private_ip, int(group.port))
        with self._lock:
            self.balancer.listen(int(group.port))
            self.balancer.set_targets(int(group.port), targets)

    def sync_listeners(self, backend) -> None:
        """A deleted load balancer's ports stop listening (its target groups' ports)."""
        ports = {int(li.port) for lb in backend.load_balancers.values() for li in lb.listeners.values()}
        with self._lock:
            for port in list(self.balancer.ports()):
                if port not in ports:
                    self.balancer.unlisten(port)

    def target_state(self, port: int, instance_id: str) -> tuple[str, str | None, str | None]:
        with self._lock:
            found = self.balancer.health(int(port)).get(instance_id) if int(port) in self.balancer.ports() else None
        if found is None:
            return ("initial", "Elb.RegistrationInProgress", "Target registration is in progress")
        return (found["state"], found.get("reason"), found.get("description"))

    def address(self, port: int) -> tuple[str, int]:
        """Where this machine's clients reach the load balancer's `port`."""
        return self.balancer.address(int(port))

    def stats(self, port: int) -> dict:
        return self.balancer.stats(int(port))

    def close(self) -> None:
        self.balancer.close()


class RealNodesUnavailable(RuntimeError):
    """`--real-nodes` was asked for where Docker (or the bake's tools) cannot run."""


class Emulator:
    """Start with `with Emulator() as emu:`; `emu.client(service)` gives boto3 clients on it.

    mode "inprocess" intercepts boto3 in this process (mock_aws); mode "server" also serves the
    same backends over HTTP on `aws_port` (moto's threaded server), for curl, the AWS CLI and
    boto3 in other processes.
    """

    def __init__(
        self,
        *,
        environment: str | None = None,
        webhook_secret: str | None = None,
        mode: str = "inprocess",
        aws_port: int = 5000,
        poll_seconds: int = 1,
        bake_outcome: str = "SUCCEEDED",
        bake_polls: int = 2,
        node_count: int = 1,
        extra_environment: dict[str, str] | None = None,
        real_nodes: bool = False,
        quick_retries: bool = False,
        wait_scale: float = 1.0,
        log=None,
    ) -> None:
        self.environment = environment or stage_environment()["SLIPWAY_ENVIRONMENT"]
        self.webhook_secret = webhook_secret or uuid.uuid4().hex
        self.mode = mode
        self.aws_port = aws_port
        self.poll_seconds = poll_seconds
        self.bake_outcome = bake_outcome
        self.bake_polls = bake_polls
        self.quick_retries = quick_retries
        # Real seconds per second of a Wait state or a Retry interval: ASL counts waits in whole
        # seconds, and a test of the queue, whose runs must wait their turn, need not wait them out.
        if not 0 < wait_scale <= 1:
            raise ValueError(f"wait_scale must be in (0, 1], not {wait_scale}")
        self.wait_scale = wait_scale
        self.node_count = node_count
        self.extra_environment = extra_environment or {}
        # With real_nodes, each instance is a container running its own dockerd and the bake
        # converges the swarm_node role for real (slipway/realnodes.py); else emulated nodes.
        self.real_nodes = real_nodes
        self.registry: Any = None  # real nodes: the local registry they pull the stack's images from
        self.log = log or (lambda message: None)
        self.nodes: Any = EmulatedNodes(self._machines, fetch=self._node_fetch, parameter=self._node_parameter)
        for reference in EXAMPLE_IMAGES:  # what example/stack.yml runs (make demo)
            self.nodes.push(reference)
        self.images: dict[str, str] = {}  # AMI id -> local Docker image (real nodes)
        self.github = FakeGitHub()
        self.bakes: dict[str, dict[str, Any]] = {}  # build id -> {"variables", "polls", "ami_id"}
        self.arns: dict[str, str] = {}
        self.functions: dict[str, Any] = {}  # deployed function name -> Chalice handler
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._session: Any = None
        self._start_lock = threading.Lock()
        self._last_image_date = None
        self._events: queue.Queue = queue.Queue()
        self._closing = False
        self.delivered_events: list[dict] = []
        self.results: list[tuple[str, Any]] = []  # (function, what it returned or raised)
        self.targets = TargetHealth()  # the emulated NLB's view of its targets (see _patch_elb)
        self.load_balancer: Any = None  # real nodes: the local TCP load balancer in front of them
        self.app = None

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Emulator:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        _importable()
        if self.real_nodes:
            from slipway import realnodes

            reason = realnodes.bake_available()
            if reason:
                raise RealNodesUnavailable(f"--real-nodes needs Docker and the bake's tools: {reason}")
            cidr = self.extra_environment.get("SLIPWAY_VPC_CIDR") or stage_environment().get(
                "SLIPWAY_VPC_CIDR", "10.42.0.0/16"
            )
            from slipway import registry

            reason = registry.registry_available()
            if reason:
                raise RealNodesUnavailable(f"--real-nodes needs a local registry for the stack's images: {reason}")
            self.nodes = realnodes.DockerNodes(
                cidr, log=self.log, aws_region=REGION, published_ports=REAL_NODE_PORTS, mesh=REAL_NODE_MESH
            )
            self._stack.callback(self.nodes.close)
            self.registry = registry.LocalRegistry().start()
            self._stack.callback(self.registry.close)
            # The nodes pull from it over HTTP, through the node network's gateway.
            self.nodes.insecure_registries = (self.registry.address(self.nodes.gateway),)
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
        env.update(stage_environment())
        env.update(
            {
                "SLIPWAY_ENVIRONMENT": self.environment,
                "SLIPWAY_POLL_SECONDS": str(self.poll_seconds),
                # Old nodes' connections drain for a second, not AWS's default half-minute.
                "SLIPWAY_DEREGISTRATION_DELAY_SECONDS": "1",
                "SLIPWAY_NODE_COUNT": str(self.node_count),
                "SLIPWAY_BAKE_PROJECT": f"slipway-{self.environment}-bake",
                "SLIPWAY_BAKE_BUCKET": f"slipway-{self.environment}-bake-{ACCOUNT}-{REGION}",
                "SLIPWAY_LEASE_TABLE": f"slipway-{self.environment}-leases",
                "SLIPWAY_WEBHOOK_SECRET_PARAMETER": f"/slipway/{self.environment}/github-webhook-secret",
                # Commit statuses go to the local GitHub, with a token kept in SSM as on AWS.
                "SLIPWAY_GITHUB_TOKEN_PARAMETER": f"/slipway/{self.environment}/github-token",
                "POWERTOOLS_METRICS_NAMESPACE": "Slipway",
                "POWERTOOLS_DEV": "false",
                # moto loads AWS's catalogue of public AMIs (with a volume and a snapshot each) into
                # every EC2 backend it makes; Slipway only runs images its bake registered.
                "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
            }
        )
        self.github.start()
        self._stack.callback(self.github.stop)
        env["SLIPWAY_GITHUB_API"] = self.github.url
        if self.mode == "server":
            env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{self.aws_port}"
            env["MOTO_PORT"] = str(self.aws_port)
        env.update(self.extra_environment)
        self._stack.enter_context(mock.patch.dict(os.environ, env))
        self._patch_moto()
        if self.mode == "server":
            self._start_server()
        else:
            from moto import mock_aws

            self._stack.enter_context(mock_aws(config=MOTO_CONFIG))
        if self.real_nodes:  # what a node reaches with its instance role: this process's moto
            self.nodes.start_aws_endpoint()
        self._reset_caches()
        self._stack.callback(self._reset_caches)
        self.app = load_app()
        self._stack.enter_context(_observability_per_invocation())
        self._create_resources()
        os.environ["SLIPWAY_DEPLOY_STATE_MACHINE_ARN"] = self.arns["deploy"]
        self._reset_caches()
        from chalicelib.settings import get_settings

        settings = get_settings()  # fail now, not in the first Lambda, if the configuration is wrong
        if self.real_nodes:
            self.load_balancer = LocalLoadBalancer(self, settings, log=self.log)
            self._stack.callback(self.load_balancer.close)

    def stop(self) -> None:
        """Stop executions still running (their threads would outlive the backends), then close."""
        self._closing = True  # no "stopped" event for these: nothing is left to receive it
        with contextlib.suppress(Exception):
            sfn = self.client("stepfunctions")
            for arn in self.arns.values():
                for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn, statusFilter="RUNNING"):
                    for execution in page["executions"]:
                        sfn.stop_execution(
                            executionArn=execution["executionArn"],
                            error="EmulatorStopped",
                            cause="the emulator shut down",
                        )
        self._stack.close()

    def _start_server(self) -> None:
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        self._stack.enter_context(mock.patch.dict(default_user_config, MOTO_CONFIG))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.aws_port, verbose=False)
        server.start()
        self._stack.callback(server.stop)
        # The server's backends live as long as this process: start from an empty account.
        import urllib.request

        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{self.aws_port}/moto-api/reset", method="POST"), timeout=10
        ).close()

    @staticmethod
    def _reset_caches() -> None:
        from chalicelib import aws, secrets, settings

        aws.reset()
        secrets.reset()
        settings.reset()

    def client(self, service: str):
        """A client of this emulator's AWS, one per service (made once: tests and `follow` ask often)."""
        with self._clients_lock:
            if service not in self._clients:
                kwargs = {}
                if self.mode == "server":
                    kwargs["endpoint_url"] = f"http://127.0.0.1:{self.aws_port}"
                if self._session is None:  # made once the emulator's credentials are in the environment
                    self._session = _session()
                self._clients[service] = self._session.client(service, region_name=REGION, **kwargs)
            return self._clients[service]

    # --- entry points, as AWS would call them -------------------------------------------------

    def gateway(self):
        """The Chalice app's API as API Gateway would call it (Chalice's own local gateway)."""
        from chalice.config import Config
        from chalice.local import LocalGateway

        config = Config.create(
            chalice_stage=STAGE, app_name=self.app.app.app_name, lambda_timeout=60, lambda_memory_size=256
        )
        return LocalGateway(self.app.app, config)

    def deliver(self, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        """POST a delivery to the webhook route; (status, JSON answer)."""
        response = self.gateway().handle_request("POST", "/github/webhook", headers, body)
        raw = response["body"]
        raw = raw.decode() if isinstance(raw, bytes) else raw
        return response["statusCode"], json.loads(raw) if raw else {}

    def invoke(self, name: str, payload: dict) -> dict:
        """`aws lambda invoke` on one of the app's functions (dispatched in-process)."""
        response = self.client("lambda").invoke(
            FunctionName=self.function_name(name), Payload=json.dumps(payload).encode()
        )
        result = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise RuntimeError(f"{name} failed: {result}")
        return result

    # --- resources a real deployment has ----------------------------------------------------

    def function_name(self, name: str) -> str:
        return f"{self.app.app.app_name}-{STAGE}-{name}"

    def _create_resources(self) -> None:
        from chalicelib import naming

        iam = self.client("iam")
        trust = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "sts:AssumeRole",
                        "Principal": {
                            "Service": ["lambda.amazonaws.com", "states.amazonaws.com", "codebuild.amazonaws.com"]
                        },
                    }
                ],
            }
        )
        role_arn = iam.create_role(RoleName="slipway-emulated", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        self._create_node_role(iam)

        lam = self.client("lambda")
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("app.py", "# the emulator dispatches to the Chalice app in-process\n")
        substitutions = {}
        sources = self.app.app.event_sources
        names = [f.name for f in self.app.app.pure_lambda_functions] + [e.name for e in sources]
        for name in names:
            deployed = self.function_name(name)
            arn = lam.create_function(
                FunctionName=deployed,
                Runtime="python3.12",
                Role=role_arn,
                Handler=f"app.{name}",
                Code={"ZipFile": archive.getvalue()},
                Environment={"Variables": {k: v for k, v in stage_environment().items()}},
            )["FunctionArn"]
            self.functions[deployed] = getattr(self.app, name)
            substitutions[statemachines.function_placeholder(name)] = arn

        # The EventBridge rules `chalice deploy` creates for @app.schedule and @app.on_cw_event.
        events = self.client("events")
        for source in sources:
            rule = {"Name": self.function_name(source.name)}
            if hasattr(source, "event_pattern"):
                rule["EventPattern"] = json.dumps(source.event_pattern)
            else:
                rule["ScheduleExpression"] = str(source.schedule_expression)
            events.put_rule(**rule)
            events.put_targets(
                Rule=rule["Name"],
                Targets=[
                    {
                        "Id": "1",
                        "Arn": lam.get_function(FunctionName=self.function_name(source.name))["Configuration"][
                            "FunctionArn"
                        ],
                    }
                ],
            )

        self.client("s3").create_bucket(Bucket=os.environ["SLIPWAY_BAKE_BUCKET"])
        # The leases table as .chalice/resources.yaml makes it (LeaseTable).
        self.client("dynamodb").create_table(
            TableName=os.environ["SLIPWAY_LEASE_TABLE"],
            AttributeDefinitions=[{"AttributeName": "environment", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "environment", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.client("codebuild").create_project(
            name=os.environ["SLIPWAY_BAKE_PROJECT"],
            source={
                "type": "S3",
                "location": f"{os.environ['SLIPWAY_BAKE_BUCKET']}/source.zip",
                "buildspec": "packer/buildspec.yml",
            },
            artifacts={"type": "NO_ARTIFACTS"},
            environment={
                "type": "LINUX_CONTAINER",
                "image": "aws/codebuild/standard:7.0",
                "computeType": "BUILD_GENERAL1_SMALL",
            },
            serviceRole=role_arn,
        )
        self.client("ssm").put_parameter(
            Name=os.environ["SLIPWAY_WEBHOOK_SECRET_PARAMETER"],
            Value=self.webhook_secret,
            Type="SecureString",
        )
        if os.environ.get("SLIPWAY_GITHUB_TOKEN_PARAMETER"):
            self.github.token = "ghp_emulated" + uuid.uuid4().hex
            self.client("ssm").put_parameter(
                Name=os.environ["SLIPWAY_GITHUB_TOKEN_PARAMETER"], Value=self.github.token, Type="SecureString"
            )
        sfn = self.client("stepfunctions")
        for machine in statemachines.MACHINES:
            definition = statemachines.render(statemachines.path(machine).read_text(), substitutions)
            if self.quick_retries:
                definition = statemachines.quick_retries(definition)
            self.arns[machine] = sfn.create_state_machine(
                name=naming.state_machine_name(self.environment, machine),
                definition=definition,
                roleArn=role_arn,
            )["stateMachineArn"]

    def _scale_waits(self, patch) -> None:
        """Wait states and Retry intervals last `wait_scale` of their seconds, and so does the
        emulated load balancer's deregistration delay (what the pipeline waits out). The steps and
        their answers are unchanged: a queued run checks as often per run ahead of it as the waits
        it went through allow, each wait only shorter."""
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
        from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

        scale = self.wait_scale

        def wait_interval(function, env, wait_seconds) -> None:
            # As moto's own: wait on the execution's event, so that stopping the execution ends
            # the wait, and wait again after a wake-up while the execution still runs.
            deadline = time.monotonic() + wait_seconds * scale
            while env.is_running() and (left := deadline - time.monotonic()) > 0:
                env.program_state_event.wait(left)

        class ScaledTime:
            """The `time` module as the Retry interpreter sees it: its sleeps scaled."""

            def __getattr__(self, name: str) -> Any:
                return getattr(time, name)

            @staticmethod
            def sleep(seconds: float) -> None:
                time.sleep(seconds * scale)

        patch(mock.patch.object(WaitFunction, "_wait_interval", wait_interval))
        patch(mock.patch.object(retrier_decl, "time", ScaledTime()))

    def _create_node_role(self, iam) -> None:
        """The nodes' role and instance profile as `slipway bootstrap` creates them (NodeRole and
        NodeInstanceProfile of .chalice/resources.yaml, resolved for this account and stage), and
        SLIPWAY_NODE_INSTANCE_PROFILE naming the profile unless the environment names one."""
        from slipway import bootstrap

        template = bootstrap.load_template(PROJECT_DIR)
        parameters = {"Stage": STAGE, "Environment": self.environment}
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
            _load_aws_managed_policy(arn)
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        profile_properties = template["Resources"]["NodeInstanceProfile"]["Properties"]
        profile = bootstrap.resolve(profile_properties["InstanceProfileName"], {}, parameters, ACCOUNT, REGION)
        iam.create_instance_profile(InstanceProfileName=profile)
        iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=name)
        os.environ.setdefault("SLIPWAY_NODE_INSTANCE_PROFILE", profile)

    # --- moto patches -------------------------------------------------------------------------

    def _patch_moto(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend
        from moto.codebuild.models import CodeBuildBackend
        from moto.codebuild.responses import CodeBuildResponse
        from moto.core.responses import ActionResult
        from moto.ec2.models.instances import InstanceBackend
        from moto.ssm.models import Command
        from moto.ssm.responses import SimpleSystemManagerResponse
        from moto.stepfunctions.parser.models import StepFunctionsParserBackend

        emulator = self
        patch = self._stack.enter_context

        # moto parses a definition with its ASL grammar on every CreateStateMachine (half a second
        # each); the emulator creates the same two on every start. A definition that parsed once
        # parses again: skip the repeat, and still refuse (and never remember) one that does not.
        original_validate = StepFunctionsParserBackend._validate_definition

        def validate_once(definition: str) -> None:
            if definition not in _VALID_DEFINITIONS:
                original_validate(definition)
                _VALID_DEFINITIONS.add(definition)

        patch(mock.patch.object(StepFunctionsParserBackend, "_validate_definition", staticmethod(validate_once)))

        if self.wait_scale != 1:
            self._scale_waits(patch)

        # moto lists a response class's methods (inspect.getmembers) on every request it answers;
        # the names never change while the emulator runs (its patches replace methods, not names).
        from moto.core import responses as moto_responses

        patch(
            mock.patch.object(
                moto_responses, "method_names_from_class", functools.cache(moto_responses.method_names_from_class)
            )
        )

        # moto's interpreter parses the definition again for every execution (most of a second for
        # deploy.asl.json); a copy of the first parse's program is the same program, and a copy
        # per execution keeps executions from sharing a component's state.
        from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
        from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

        def evaluation_entrypoint(worker):
            definition = worker._evaluation_details.state_machine_details.definition
            with _PROGRAMS_LOCK:
                if definition not in _PROGRAMS:
                    _PROGRAMS[definition] = AmazonStateLanguageParser.parse(definition)[0]
                return copy.deepcopy(_PROGRAMS[definition])

        patch(mock.patch.object(ExecutionWorker, "_get_evaluation_entrypoint", evaluation_entrypoint))

        # moto's interpreter makes a new boto3 client for every Task state it runs (a fifth of a
        # test's CPU went to building them); a client is thread-safe and these differ only by
        # region and service, so each is made once per process.
        from moto.stepfunctions.parser.asl.utils import boto_client

        make_client = boto_client.boto_client_for
        shared_client = functools.partial(_shared_interpreter_client, make_client)
        for module in [m for name, m in list(sys.modules.items()) if name.startswith("moto.stepfunctions.parser")]:
            if getattr(module, "boto_client_for", None) is make_client:
                patch(mock.patch.object(module, "boto_client_for", shared_client))

        original_start_execution = StepFunctionsParserBackend.start_execution

        def start_execution(backend, state_machine_arn, name=None, execution_input=None, *args, **kwargs):
            # Step Functions names an unnamed execution with a UUID (the console does not ask), and
            # a name is taken atomically: moto checks and adds without a lock, so concurrent
            # starts of one name could both succeed here where AWS lets only one through.
            with emulator._start_lock:
                return original_start_execution(
                    backend, state_machine_arn, name or str(uuid.uuid4()), execution_input, *args, **kwargs
                )

        patch(mock.patch.object(StepFunctionsParserBackend, "start_execution", start_execution))

        original_stop_execution = StepFunctionsParserBackend.stop_execution

        def stop_execution(backend, execution_arn, *args, **kwargs):
            # Step Functions tells EventBridge when an execution ends; a stopped one is what
            # Slipway listens for (moto sends no such event).
            was_running = backend.describe_execution(execution_arn).status == "RUNNING"
            execution = original_stop_execution(backend, execution_arn, *args, **kwargs)
            if was_running:  # stopping a run that has ended changes nothing and tells no one
                emulator._execution_stopped(execution, backend.region_name, "ABORTED")
            return execution

        patch(mock.patch.object(StepFunctionsParserBackend, "stop_execution", stop_execution))

        # A stopped execution is ABORTED, whatever its task in flight does next; moto lets a task
        # that errors after the stop (the stop itself can make it error) turn that into FAILED.
        from moto.stepfunctions.parser.asl.eval.environment import Environment
        from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

        original_set_error = Environment.set_error

        def set_error(environment, error):
            with environment._state_mutex:  # re-entrant: the original takes it again
                if not isinstance(environment._program_state, ProgramStopped):
                    original_set_error(environment, error)

        patch(mock.patch.object(Environment, "set_error", set_error))

        original_run_instances = InstanceBackend.run_instances

        def run_instances(backend, image_id, count, user_data, security_group_names, **kwargs):
            # EC2 answers a repeated ClientToken with the first call's reservation (moto ignores
            # it and would launch again: a retried RunInstances must not double the fleet).
            token = kwargs.get("client_token")
            if token and token != "ABCDE":  # moto's placeholder when no token is sent
                with emulator._lock:
                    for reservation in backend.reservations.values():
                        if reservation.instances and reservation.instances[0].client_token == token:
                            return reservation
                    return _from_template(
                        backend,
                        original_run_instances(backend, image_id, count, user_data, security_group_names, **kwargs),
                        kwargs,
                    )
            return _from_template(
                backend,
                original_run_instances(backend, image_id, count, user_data, security_group_names, **kwargs),
                kwargs,
            )

        patch(mock.patch.object(InstanceBackend, "run_instances", run_instances))

        if self.real_nodes:
            real_run = InstanceBackend.run_instances  # the ClientToken-aware one above

            def run_real_instances(backend, image_id, count, user_data, security_group_names, **kwargs):
                reservation = real_run(backend, image_id, count, user_data, security_group_names, **kwargs)
                emulator._launch_containers(reservation.instances)
                return reservation

            patch(mock.patch.object(InstanceBackend, "run_instances", run_real_instances))
            original_terminate = InstanceBackend.terminate_instances

            def terminate_instances(backend, instance_ids):
                result = original_terminate(backend, instance_ids)
                for instance_id in instance_ids:
                    emulator.nodes.terminate(instance_id)
                return result

            patch(mock.patch.object(InstanceBackend, "terminate_instances", terminate_instances))

        # EC2 tells EventBridge of each state change ("EC2 Instance State-change Notification");
        # moto sends none. Stopping and terminating are what the heal listens for.
        stateful_terminate, original_stop = InstanceBackend.terminate_instances, InstanceBackend.stop_instances

        def terminate_and_tell(backend, instance_ids):
            result = stateful_terminate(backend, instance_ids)
            emulator._instances_changed(backend.region_name, instance_ids, ("shutting-down", "terminated"))
            return result

        def stop_and_tell(backend, instance_ids):
            result = original_stop(backend, instance_ids)
            emulator._instances_changed(backend.region_name, instance_ids, ("stopping", "stopped"))
            return result

        patch(mock.patch.object(InstanceBackend, "terminate_instances", terminate_and_tell))
        patch(mock.patch.object(InstanceBackend, "stop_instances", stop_and_tell))

        def invoke(backend, function_name, qualifier, body, headers, response_headers):
            return emulator._invoke(function_name, body, response_headers)

        patch(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))

        original_start = CodeBuildResponse.start_build

        def start_build(response):
            result = original_start(response)
            build_id = result.result["build"]["id"]
            variables = {v["name"]: v["value"] for v in response._get_param("environmentVariablesOverride", [])}
            with emulator._lock:
                emulator.bakes[build_id] = {
                    "variables": variables,
                    "polls": 0,
                    "ami_id": None,
                    "source": response._get_param("sourceLocationOverride"),
                }
            return result

        patch(mock.patch.object(CodeBuildResponse, "start_build", start_build))

        original_batch = CodeBuildBackend.batch_get_builds

        def batch_get_builds(backend, ids):
            builds = original_batch(backend, ids)
            for build in builds:
                emulator._advance_bake(backend, build)
            return builds

        patch(mock.patch.object(CodeBuildBackend, "batch_get_builds", batch_get_builds))

        def describe_instance_information(response):
            wanted = set()
            for f in response._get_param("Filters", []) or []:
                if f.get("Key") == "InstanceIds":
                    wanted.update(f.get("Values", []))
            infos = [
                {
                    "InstanceId": inst.id,
                    "PingStatus": "Online",
                    "PlatformType": "Linux",
                    "PlatformName": "Ubuntu",
                    "ResourceType": "EC2Instance",
                    "AgentVersion": "3.3.0.0",
                    "IsLatestVersion": True,
                    "ComputerName": inst.private_dns_name,
                    "IPAddress": inst.private_ip,
                }
                for inst in emulator._running_instances(response.region)
                if not wanted or inst.id in wanted
            ]
            return ActionResult({"InstanceInformationList": infos})

        def list_command_invocations(response):
            command = response.ssm_backend.get_command_by_id(response._get_param("CommandId"))
            wanted = response._get_param("InstanceId")
            items = []
            for inv in command.invocations:
                if wanted and inv["InstanceId"] != wanted:
                    continue
                items.append(
                    {
                        "CommandId": command.command_id,
                        "InstanceId": inv["InstanceId"],
                        "DocumentName": command.document_name,
                        "Status": inv["Status"],
                        "StatusDetails": inv["StatusDetails"],
                        "CommandPlugins": [
                            {
                                "Name": inv["PluginName"],
                                "Status": inv["Status"],
                                "ResponseCode": inv["ResponseCode"],
                                "Output": (inv["StandardOutputContent"] + inv["StandardErrorContent"])[:2500],
                            }
                        ],
                    }
                )
            # Paged as SSM pages it: at most 50 with details, a NextToken for the rest.
            size = min(int(response._get_param("MaxResults") or 50), 50)
            start = int(response._get_param("NextToken") or 0)
            page = {"CommandInvocations": items[start : start + size]}
            if start + size < len(items):
                page["NextToken"] = str(start + size)
            return ActionResult(page)

        patch(
            mock.patch.object(
                SimpleSystemManagerResponse, "describe_instance_information", describe_instance_information, create=True
            )
        )
        patch(
            mock.patch.object(
                SimpleSystemManagerResponse, "list_command_invocations", list_command_invocations, create=True
            )
        )

        def targets(command):
            # SSM only reaches managed instances that are online: running ones, not terminated.
            if not command.targets:
                return []  # addressed by InstanceIds only
            filters = {t["Key"]: t["Values"] for t in command.targets}
            return [inst.id for inst in emulator._running_instances(command.backend_region, filters)]

        patch(mock.patch.object(Command, "_get_instance_ids_from_targets", targets))

        original_invocation = Command.invocation_response

        def invocation_response(command, instance_id, plugin_name):
            result = original_invocation(command, instance_id, plugin_name)
            outcome = emulator.nodes.run(instance_id, list(command.parameters.get("commands", [])))
            status = "Success" if outcome.code == 0 else "Failed"
            result.update(
                {
                    "Status": status,
                    "StatusDetails": status,
                    "ResponseCode": outcome.code,
                    "StandardOutputContent": outcome.stdout,
                    "StandardErrorContent": outcome.stderr,
                }
            )
            return result

        patch(mock.patch.object(Command, "invocation_response", invocation_response))

        original_send = SimpleSystemManagerResponse.send_command

        def send_command(response):
            result = original_send(response)
            command = response.ssm_backend.get_command_by_id(result.result["Command"]["CommandId"])
            # The emulated nodes answer at once, so every command has finished by now.
            emulator._command_finished(command, response.region)
            return result

        patch(mock.patch.object(SimpleSystemManagerResponse, "send_command", send_command))
        self._patch_elb()
        self._patch_dynamodb()
        worker = threading.Thread(target=self._deliver_events, daemon=True)
        worker.start()
        self._stack.callback(lambda: (self._events.put(None), worker.join(timeout=10)))

    def _patch_dynamodb(self) -> None:
        """DynamoDB applies a conditional write atomically: of two PutItems that both require the
        item to be absent, one fails (ConditionalCheckFailedException). moto checks the condition,
        then writes, with no lock between, and the emulator runs Lambdas on threads: two runs could
        both take the lease. Writes are serialized here, as the service does per item."""
        from moto.dynamodb.models import DynamoDBBackend

        lock = threading.RLock()  # re-entrant: TransactWriteItems writes through put_item

        def serialized(original):
            @functools.wraps(original)
            def write(*args, **kwargs):
                with lock:
                    return original(*args, **kwargs)

            return write

        for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
            self._stack.enter_context(
                mock.patch.object(DynamoDBBackend, name, serialized(getattr(DynamoDBBackend, name)))
            )

    def _patch_elb(self) -> None:
        """moto's elbv2 holds the load balancers, listeners, target groups and registrations; what
        it lacks, filled in here: a target's health as an NLB reports it (`initial` until its first
        checks pass, `healthy` while its node runs, `draining` for the deregistration delay after
        it leaves, which DescribeTargetHealth lists too), and the network interfaces an NLB holds in
        each subnet until a while after it is deleted, which keep AWS from deleting the subnets and
        security groups (DependencyViolation) until they are released."""
        from moto.ec2.exceptions import DependencyViolationError
        from moto.ec2.models import ec2_backends
        from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
        from moto.ec2.models.security_groups import SecurityGroupBackend
        from moto.ec2.models.subnets import SubnetBackend
        from moto.elbv2.exceptions import TargetGroupNotFoundError
        from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup

        emulator = self
        patch = self._stack.enter_context
        targets = self.targets
        original_register, original_deregister = FakeTargetGroup.register, FakeTargetGroup.deregister

        def register(group, registered):
            before = set(group.targets)
            original_register(group, registered)
            with targets.lock:
                for target in registered:
                    if target["Id"] not in before:  # registering a registered target changes nothing
                        targets.checks[(group.arn, target["Id"])] = 0
                    targets.draining.pop((group.arn, target["Id"]), None)
            emulator._targets_changed(group)

        def deregister(group, leaving):
            original_deregister(group, leaving)
            # The delay the pipeline waits out in a Wait state: on the emulator's clock (wait_scale).
            delay = float(group.attributes.get("deregistration_delay.timeout_seconds", 300)) * emulator.wait_scale
            with targets.lock:
                for target in leaving:
                    targets.checks.pop((group.arn, target["Id"]), None)
                    targets.draining[(group.arn, target["Id"])] = time.monotonic() + delay
            emulator._targets_changed(group)

        def describe_target_health(backend, target_group_arn, asked):
            group = backend.target_groups.get(target_group_arn)
            if group is None:
                raise TargetGroupNotFoundError()
            with targets.lock:
                now = time.monotonic()
                draining = [i for (arn, i), until in targets.draining.items() if arn == group.arn and until > now]
            ids = (
                [t["Id"] for t in asked]
                if asked
                else list(group.targets) + [i for i in draining if i not in group.targets]
            )
            return [emulator._target_health(backend, group, i, i in draining, FakeHealthStatus) for i in ids]

        patch(mock.patch.object(FakeTargetGroup, "register", register))
        patch(mock.patch.object(FakeTargetGroup, "deregister", deregister))
        patch(mock.patch.object(ELBv2Backend, "describe_target_health", describe_target_health))

        original_create, original_delete = ELBv2Backend.create_load_balancer, ELBv2Backend.delete_load_balancer

        # CreateLoadBalancer, CreateTargetGroup and CreateListener are idempotent on AWS ("if you
        # attempt to create multiple ... with the same settings, each call succeeds"); moto refuses
        # the repeat (DuplicateLoadBalancerName, DuplicateTargetGroupName) or makes a second listener.
        def create_load_balancer(backend, *args, **kwargs):
            name = kwargs.get("name", args[0] if args else None)
            existing = next((lb for lb in backend.load_balancers.values() if lb.name == name), None)
            if existing is not None:
                return existing
            balancer = original_create(backend, *args, **kwargs)
            ec2 = ec2_backends[ACCOUNT][backend.region_name]
            lb_id = balancer.arn.rsplit("/", 1)[-1]
            for subnet in balancer.subnets:
                ec2.create_network_interface(
                    subnet,
                    None,
                    group_ids=list(balancer.security_groups or []),
                    description=f"ELB net/{balancer.name}/{lb_id}",
                )
            return balancer

        def delete_load_balancer(backend, arn):
            balancer = backend.load_balancers.get(arn)
            original_delete(backend, arn)
            if balancer is not None:
                lb_id = arn.rsplit("/", 1)[-1]
                with targets.lock:
                    targets.releasing[f"ELB net/{balancer.name}/{lb_id}"] = targets.eni_release_looks
            emulator._listeners_changed(backend)

        original_group, original_listener = ELBv2Backend.create_target_group, ELBv2Backend.create_listener

        def create_target_group(backend, name, **kwargs):
            existing = next((g for g in backend.target_groups.values() if g.name == name), None)
            if existing is not None and (existing.port, existing.vpc_id) == (
                int(kwargs.get("port") or 0),
                kwargs.get("vpc_id"),
            ):
                return existing
            return original_group(backend, name, **kwargs)

        def create_listener(backend, load_balancer_arn, protocol, port, *args, **kwargs):
            balancer = backend.load_balancers.get(load_balancer_arn)
            for listener in balancer.listeners.values() if balancer else []:
                if str(listener.port) == str(port) and listener.protocol == protocol:
                    return listener
            return original_listener(backend, load_balancer_arn, protocol, port, *args, **kwargs)

        patch(mock.patch.object(ELBv2Backend, "create_load_balancer", create_load_balancer))
        patch(mock.patch.object(ELBv2Backend, "create_target_group", create_target_group))
        patch(mock.patch.object(ELBv2Backend, "create_listener", create_listener))
        patch(mock.patch.object(ELBv2Backend, "delete_load_balancer", delete_load_balancer))

        def release(ec2, *, look: bool = False) -> None:
            with targets.lock:
                if look:  # a DescribeNetworkInterfaces answer: one look fewer until the release
                    targets.releasing.update((d, n - 1) for d, n in targets.releasing.items())
                done = {d for d, n in targets.releasing.items() if n < 0}
                for description in done:
                    del targets.releasing[description]
            for eni in list(ec2.enis.values()):
                if eni.description in done:
                    ec2.enis.pop(eni.id, None)

        original_all = NetworkInterfaceBackend.get_all_network_interfaces

        def get_all_network_interfaces(ec2, *args, **kwargs):
            release(ec2, look=True)
            return original_all(ec2, *args, **kwargs)

        original_delete_subnet = SubnetBackend.delete_subnet

        def delete_subnet(ec2, subnet_id):
            release(ec2)
            held = [e.id for e in ec2.enis.values() if e.subnet.id == subnet_id and not e.instance]
            if held:
                raise DependencyViolationError(f"The subnet '{subnet_id}' has dependencies and cannot be deleted.")
            return original_delete_subnet(ec2, subnet_id)

        original_delete_group = SecurityGroupBackend.delete_security_group

        def delete_security_group(ec2, name=None, group_id=None):
            release(ec2)
            if group_id and any(group_id in [g.id for g in e.groups] for e in ec2.enis.values() if not e.instance):
                raise DependencyViolationError(f"resource {group_id} has a dependent object")
            return original_delete_group(ec2, name=name, group_id=group_id)

        patch(mock.patch.object(NetworkInterfaceBackend, "get_all_network_interfaces", get_all_network_interfaces))
        patch(mock.patch.object(SubnetBackend, "delete_subnet", delete_subnet))
        patch(mock.patch.object(SecurityGroupBackend, "delete_security_group", delete_security_group))

    def _target_health(self, backend, group, instance_id: str, draining: bool, status):
        """One target's health, as an NLB would report it (see `_patch_elb`)."""
        port = str(group.port)
        if instance_id not in group.targets:
            if draining:
                return status(
                    instance_id,
                    port,
                    port,
                    "draining",
                    "Target.DeregistrationInProgress",
                    "Target deregistration is in progress",
                )
            return status(
                instance_id,
                port,
                port,
                "unused",
                "Target.NotRegistered",
                "Target is not registered to the target group",
            )
        from moto.ec2.models import ec2_backends

        instance = ec2_backends[ACCOUNT][backend.region_name].get_instance_by_id(instance_id)
        if instance is None or instance.state != "running":
            return status(
                instance_id,
                port,
                port,
                "unused",
                "Target.InvalidState",
                f"Target is in the {instance.state if instance else 'terminated'} state",
            )
        if self.real_nodes and self.load_balancer is not None:
            state = self.load_balancer.target_state(group.port, instance_id)
            return status(instance_id, port, port, *state)
        with self.targets.lock:
            key = (group.arn, instance_id)
            self.targets.checks[key] = checks = self.targets.checks.get(key, 0) + 1
            failing = instance_id in self.targets.failing or bool(self.targets.fail and self.targets.fail(instance_id))
        if checks <= self.targets.initial_checks:
            return status(
                instance_id, port, port, "initial", "Elb.InitialHealthChecking", "Initial health checks in progress"
            )
        if failing:
            return status(instance_id, port, port, "unhealthy", "Target.FailedHealthChecks", "Health checks failed")
        return status(instance_id, port, port, "healthy")

    def _targets_changed(self, group) -> None:
        """Real nodes: the local load balancer sends connections to the targets registered now."""
        if self.real_nodes and self.load_balancer is not None:
            self.load_balancer.sync(group)

    def _listeners_changed(self, backend) -> None:
        if self.real_nodes and self.load_balancer is not None:
            self.load_balancer.sync_listeners(backend)

    def _instances_changed(self, region: str, instance_ids, states: tuple[str, ...]) -> None:
        """What EC2 sends EventBridge as instances change state, one event per instance and state."""
        for state in states:
            for instance_id in instance_ids:
                self._send_event(
                    region,
                    "EC2 Instance State-change Notification",
                    "aws.ec2",
                    [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance_id}"],
                    {"instance-id": instance_id, "state": state},
                )

    def _command_finished(self, command, region: str) -> None:
        """What SSM sends EventBridge when a command ends ("EC2 Command Status-change Notification")."""
        statuses = {inv["Status"] for inv in command.invocations}
        status = "Success" if statuses <= {"Success"} else "Failed"
        self._send_event(
            region,
            "EC2 Command Status-change Notification",
            "aws.ssm",
            [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{inv['InstanceId']}" for inv in command.invocations],
            {
                "command-id": command.command_id,
                "document-name": command.document_name,
                "expire-after": str(command.expires_after),
                "parameters": command.parameters,
                "requested-date-time": str(command.requested_date_time),
                "status": status,
            },
        )

    def _execution_stopped(self, execution, region: str, status: str) -> None:
        """What Step Functions sends EventBridge when an execution ends ("Step Functions Execution
        Status Change"), for a stopped one."""
        if self._closing:
            return

        def millis(moment) -> int | None:
            return int(moment.timestamp() * 1000) if moment else None

        arn = execution.execution_arn
        self._send_event(
            region,
            "Step Functions Execution Status Change",
            "aws.states",
            [arn],
            {
                "executionArn": arn,
                "stateMachineArn": execution.state_machine_arn,
                "name": execution.name,
                "status": status,
                "startDate": millis(execution.start_date),
                "stopDate": millis(execution.stop_date) or int(time.time() * 1000),
                "input": execution.execution_input,
                "inputDetails": {"included": True},
                "output": None,
                "outputDetails": None,
            },
        )

    def _send_event(self, region: str, detail_type: str, source: str, resources: list[str], detail: dict) -> None:
        """Put an event on the default bus as an AWS service would (the envelope EventBridge
        gives every event); _deliver_events hands it to the matching rules' targets."""
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": ACCOUNT,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": region,
            "resources": resources,
            "detail": detail,
        }
        self._events.put((region, event))

    def _deliver_events(self) -> None:
        """EventBridge's part: match each event against the rules and invoke Lambda targets,
        asynchronously, as AWS does (moto's EventBridge has no Lambda targets)."""
        from moto.events.models import events_backends

        while True:
            item = self._events.get()
            try:
                if item is None:
                    return
                region, event = item
                bus = events_backends[ACCOUNT][region].event_buses["default"]
                for rule in list(bus.rules.values()):
                    if rule.scheduled_expression or not rule.event_pattern.matches_event(event):
                        continue
                    for target in rule.targets:
                        headers: dict = {}
                        self._invoke(target["Arn"], json.dumps(event).encode(), headers)
                self.delivered_events.append(event)
            finally:
                self._events.task_done()

    def wait_for_events(self) -> None:
        """Block until every event emitted so far has been delivered to its targets."""
        self._events.join()

    def example_stack(self) -> bytes:
        """example/stack.yml as this emulator's nodes can run it. Emulated nodes: as it is (their
        registry has its images). Real nodes: its web service with the images built from
        example/web/ and pushed to the local registry, one replica per node at most (the ingress
        stand-in publishes its tasks' port in host mode), and no worker (no image of it is built here)."""
        data = (PROJECT_DIR / "example" / "stack.yml").read_bytes()
        if not self.real_nodes:
            return data
        import yaml

        from slipway import registry

        registry.example_images(self.registry, log=self.log)  # built once per content, pushed
        # Its port stays as written, `80:8080` in ingress mode: the nodes' ingress stand-in
        # (slipway/ingress_shim.py, slipway/mesh.py) serves it on every node's port 80.
        document = yaml.safe_load(data)
        web = document["services"]["web"]
        web["image"] = f"{self.registry.address(self.nodes.gateway)}/{registry.EXAMPLE_REPOSITORY}:1"
        web["deploy"]["replicas"] = min(int(web["deploy"].get("replicas", 1)), self.node_count)
        document["services"] = {"web": web}
        return yaml.safe_dump(document, sort_keys=False).encode()

    # What a node reads with its instance role (the stack file, the stack's secrets), straight from
    # the backends: a node's call is made while moto answers the SendCommand that runs it.
    @staticmethod
    def _node_fetch(bucket: str, key: str) -> bytes:
        from moto.s3.models import s3_backends

        found = s3_backends[ACCOUNT]["aws"].get_object(bucket, key)
        if found is None:
            raise KeyError(f"NoSuchKey: s3://{bucket}/{key}")
        return bytes(found.value)

    @staticmethod
    def _node_parameter(name: str) -> str | None:
        from moto.ssm.models import ssm_backends

        found = ssm_backends[ACCOUNT][REGION].get_parameter(name)
        return None if found is None else str(found.value)

    def _machines(self) -> dict[str, Machine]:
        """Every instance EC2 knows, as the emulated nodes see one another."""
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[ACCOUNT][REGION]
        return {
            inst.id: Machine(
                (inst.private_dns_name or "").split(".")[0], inst.private_ip or "", inst.state == "running"
            )
            for reservation in list(backend.reservations.values())
            for inst in reservation.instances
        }

    def _running_instances(self, region: str, filters: dict | None = None):
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[ACCOUNT][region]
        for reservation in backend.all_reservations(filters=filters or {}):
            for inst in reservation.instances:
                if inst.state == "running":
                    yield inst

    def _advance_bake(self, backend, build: dict) -> None:
        """Play the part of Packer: in progress on the first check, done on the later ones."""
        with self._lock:
            bake = self.bakes.get(build["id"])
            if bake is None:
                return
            bake["polls"] += 1
            if bake["polls"] < self.bake_polls:
                build.update({"buildStatus": "IN_PROGRESS", "currentPhase": "BUILD", "buildComplete": False})
                return
            outcome = self.bake_outcome if self._bake_source(bake) else "FAILED"
            if outcome == "SUCCEEDED" and self.real_nodes:
                if "thread" not in bake:
                    self._start_real_bake(bake)
                if bake["thread"].is_alive():
                    build.update({"buildStatus": "IN_PROGRESS", "currentPhase": "BUILD", "buildComplete": False})
                    return
                outcome = "FAILED" if "error" in bake else outcome
            if outcome != "SUCCEEDED":
                build.update(
                    {
                        "buildStatus": outcome,
                        "currentPhase": "COMPLETED",
                        "buildComplete": True,
                        "exportedEnvironmentVariables": [],
                    }
                )
                return
            if bake["ami_id"] is None:
                bake["ami_id"] = self._register_image(backend.region_name, bake["variables"])
                if self.real_nodes:
                    self.images[bake["ami_id"]] = bake["image"]
            build.update(
                {
                    "buildStatus": "SUCCEEDED",
                    "currentPhase": "COMPLETED",
                    "buildComplete": True,
                    "exportedEnvironmentVariables": [{"name": "AMI_ID", "value": bake["ami_id"]}],
                }
            )

    def _launch_containers(self, instances) -> None:
        """Real nodes: one container per new instance, from the image baked for its AMI, with the
        instance's host name and private address, all started at once."""
        from concurrent.futures import ThreadPoolExecutor

        new = [i for i in instances if self.nodes.container(i.id) is None]
        if not new:
            return
        missing = [i.image_id for i in new if i.image_id not in self.images]
        if missing:
            raise RuntimeError(
                f"no local node image for {sorted(set(missing))}: only images "
                "baked by this run can be launched with --real-nodes"
            )
        with ThreadPoolExecutor(max_workers=min(8, len(new))) as pool:
            list(
                pool.map(
                    lambda i: self.nodes.launch(
                        i.id, image=self.images[i.image_id], hostname=i.private_dns_name.split(".")[0], ip=i.private_ip
                    ),
                    new,
                )
            )

    def _start_real_bake(self, bake: dict) -> None:
        """Real nodes: bake the local image in the background, as CodeBuild would, while the
        state machine polls; the build stays IN_PROGRESS until it is done."""

        def work() -> None:
            import hashlib
            import tempfile

            try:
                tag = bake["variables"].get("PKR_VAR_image_key", "")
                # Converge the role exactly as the build's source has it (the pushed commit's
                # ansible/), cached by that content.
                with (
                    tempfile.TemporaryDirectory(prefix="slipway-bake-") as workdir,
                    zipfile.ZipFile(io.BytesIO(bake["archive"])) as source,
                ):
                    source.extractall(workdir)
                    digest = hashlib.sha256()
                    for name in sorted(n for n in source.namelist() if n.startswith("ansible/")):
                        digest.update(name.encode() + b"\0" + source.read(name) + b"\0")
                    bake["image"] = self.nodes.bake(
                        tag,
                        playbook=Path(workdir) / "ansible" / "swarm_node.yml",
                        root_tag="role-" + digest.hexdigest()[:16],
                    )
            except Exception as exc:  # noqa: BLE001 - the build fails with it, as on CodeBuild
                bake["error"] = f"{type(exc).__name__}: {exc}"
                self.log(f"bake failed: {bake['error']}")

        bake["thread"] = threading.Thread(target=work, name="real-bake", daemon=True)
        bake["thread"].start()

    def _bake_source(self, bake: dict) -> bytes | None:
        """The zip CodeBuild would download for this build, if it has what the buildspec runs
        (packer/buildspec.yml and ansible/swarm_node.yml at its root); None makes the build fail."""
        import io
        import zipfile

        from moto.s3.models import s3_backends

        if "archive" in bake:
            return bake["archive"]
        bucket, _, key = (bake.get("source") or "").partition("/")
        try:
            data = s3_backends[ACCOUNT]["aws"].get_object(bucket, key).value
            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except Exception:  # noqa: BLE001 - any missing piece is CodeBuild's DOWNLOAD_SOURCE failure
            return None
        bake["archive"] = data if {"packer/buildspec.yml", "ansible/swarm_node.yml"} <= names else None
        return bake["archive"]

    def _register_image(self, region: str, variables: dict[str, str]) -> str:
        from moto.ec2.models import ec2_backends

        ec2 = ec2_backends[ACCOUNT][region]
        # What Packer would do with these PKR_VAR_ variables: name the image, tag it.
        values = {k.removeprefix("PKR_VAR_"): v for k, v in variables.items() if k.startswith("PKR_VAR_")}
        image = ec2.register_image(name=values["ami_name"], description="Slipway swarm node (emulated bake)")
        # EC2 reports CreationDate to the second and real bakes are minutes apart: keep emulated
        # bakes in distinct seconds so "newest" means what it means on AWS.
        import datetime

        if self._last_image_date and image.creation_date <= self._last_image_date + datetime.timedelta(seconds=1):
            image.creation_date = self._last_image_date + datetime.timedelta(seconds=1)
        self._last_image_date = image.creation_date
        tags = {tag: values[var] for tag, var in IMAGE_TAGS.items() if var in values}
        ec2.create_tags([image.id], tags | CONSTANT_IMAGE_TAGS)
        return image.id

    def _invoke(self, function_name: str, body, response_headers) -> bytes:
        name = function_name.split(":")[6] if function_name.startswith("arn:") else function_name
        handler = self.functions.get(name)
        if handler is None:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(
                {"errorType": "ResourceNotFoundException", "errorMessage": f"no function {name}"}
            ).encode()
        event = json.loads(body) if body else {}
        context = LambdaContext(function_name=name, invoked_function_arn=function_name)
        try:
            result = handler(event, context)
            self.results.append((name, result))
        except Exception as exc:  # noqa: BLE001 - this is Lambda's own boundary
            self.results.append((name, exc))
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        return json.dumps(result).encode()
