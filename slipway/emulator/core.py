"""The Emulator: moto in this process with the state machines, the functions, the rules, the
bake project and the secrets a real deployment has, and what moto lacks filled in service by
service (the modules beside this one)."""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import json
import os
import queue
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any
from unittest import mock

from slipway import PROJECT_DIR, statemachines
from slipway.deploy import bootstrap
from slipway.emulator import awslambda, codebuild, dynamodb, ec2, elb, events, ssm, stepfunctions
from slipway.emulator import iam as iam_roles
from slipway.emulator.account import (
    ACCOUNT,
    MOTO_CONFIG,
    REGION,
    STAGE,
    stage_environment,
)
from slipway.emulator.awslambda import _observability_per_invocation, load_app
from slipway.emulator.elb import LocalLoadBalancer, TargetHealth
from slipway.emulator.github import FakeGitHub
from slipway.emulator.hosts import EmulatedHost, NodeHost, RealHost

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
        repo: Path | None = None,
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
        self.log = log or (lambda message: None)
        # With real_nodes, each instance is a container running its own dockerd and the bake
        # converges the swarm_node role for real (slipway/realnodes/); else emulated nodes.
        self.host: NodeHost = RealHost(self) if real_nodes else EmulatedHost(self)
        # The repository the local GitHub serves: an application's (`--repo`), or this checkout.
        self.github = FakeGitHub(repo or PROJECT_DIR)
        self.bakes: dict[str, dict[str, Any]] = {}  # build id -> {"variables", "polls", "ami_id"}
        self.builds: dict[str, dict[str, Any]] = {}  # build id -> one service's build (codebuild.py)
        self.build_outcomes: dict[str, str] = {}  # service -> how its builds end (FAILED: a test's failing build)
        self.arns: dict[str, str] = {}
        self.functions: dict[str, Any] = {}  # deployed function name -> Chalice handler
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._session: Any = None
        self._start_lock = threading.Lock()
        self._last_image_date: datetime.datetime | None = None  # codebuild.register_image's last
        self._events: queue.Queue = queue.Queue()
        self._closing = False
        self.delivered_events: list[dict] = []
        self.results: list[tuple[str, Any]] = []  # (function, what it returned or raised)
        self.targets = TargetHealth()  # the emulated NLB's view of its targets (elb.py)
        self.app: Any = None  # app.py, once loaded

    @property
    def nodes(self) -> Any:
        """What the instances' Run Commands reach (hosts.Nodes)."""
        return self.host.nodes

    @property
    def load_balancer(self) -> LocalLoadBalancer | None:
        """Real nodes: the local TCP load balancer in front of them."""
        return self.host.load_balancer

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything; a start that fails undoes what it did (moto's mock, the patched
        environment, node containers), so that no later emulator in the process inherits them."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.host.start()
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
                "SLIPWAY_BUILD_PROJECT": f"slipway-{self.environment}-build",
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
        # What `slipway bootstrap` uploads and writes: this installation's node image source.
        self._installation = bootstrap.installation_image(PROJECT_DIR)
        env["SLIPWAY_NODE_IMAGE_KEY"] = self._installation[0]
        env.update(self.extra_environment)
        self._stack.enter_context(mock.patch.dict(os.environ, env))
        self._patch_moto()
        if self.mode == "server":
            self._start_server()
        else:
            from moto import mock_aws

            self._stack.enter_context(mock_aws(config=MOTO_CONFIG))  # type: ignore[call-overload]  # a DefaultConfig's keys
        self._reset_caches()
        self._stack.callback(self._reset_caches)
        self.app = load_app()
        self._stack.enter_context(_observability_per_invocation())
        self._create_resources()
        os.environ["SLIPWAY_DEPLOY_STATE_MACHINE_ARN"] = self.arns["deploy"]
        self._reset_caches()
        from chalicelib.settings import get_settings

        settings = get_settings()  # fail now, not in the first Lambda, if the configuration is wrong
        self.host.serve(settings)

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
        iam_roles.create_node_role(self.environment, iam)

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
        key, image = self._installation
        self.client("s3").put_object(Bucket=os.environ["SLIPWAY_BAKE_BUCKET"], Key=f"sources/{key}.zip", Body=image)
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
        # The build project as .chalice/resources.yaml makes it (BuildProject): the buildspec
        # comes with each build (chalicelib/builds.py), the source from the run.
        self.client("codebuild").create_project(
            name=os.environ["SLIPWAY_BUILD_PROJECT"],
            source={"type": "S3", "location": f"{os.environ['SLIPWAY_BAKE_BUCKET']}/builds/none.zip"},
            artifacts={"type": "NO_ARTIFACTS"},
            environment={
                "type": "LINUX_CONTAINER",
                "image": "aws/codebuild/standard:7.0",
                "computeType": "BUILD_GENERAL1_MEDIUM",
                "privilegedMode": True,
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

    # --- what moto lacks, service by service ----------------------------------------------------

    def _patch_moto(self) -> None:
        """Fill moto's gaps for as long as the emulator runs: each service's module says which."""
        patch = self._stack.enter_context
        # moto lists a response class's methods (inspect.getmembers) on every request it answers;
        # the names never change while the emulator runs (its patches replace methods, not names).
        from moto.core import responses as moto_responses

        patch(
            mock.patch.object(
                moto_responses,
                "method_names_from_class",
                functools.cache(moto_responses.method_names_from_class),  # type: ignore[attr-defined]  # moto's own helper
            )
        )
        for service in (stepfunctions, ec2, awslambda, codebuild, ssm, elb, dynamodb, events):
            service.install(self, patch)

    # What the services tell EventBridge, sent through these so that a test can lose an event by
    # replacing one (`mock.patch.object(emu, "execution_stopped")`).

    def instances_changed(self, region: str, instance_ids: list[str], states: tuple[str, ...]) -> None:
        events.instances_changed(self, region, instance_ids, states)

    def execution_stopped(self, execution: Any, region: str, status: str) -> None:
        events.execution_stopped(self, execution, region, status)

    def command_finished(self, command: Any, region: str) -> None:
        events.command_finished(self, command, region)

    def wait_for_events(self) -> None:
        """Block until every event emitted so far has been delivered to its targets."""
        self._events.join()

    def example_stack(self) -> bytes:
        """example/stack.yml as this emulator's nodes can run it (hosts.py)."""
        return self.host.example_stack((PROJECT_DIR / "example" / "stack.yml").read_bytes())

    # What a node reads with its instance role (the stack file, the stack's secrets), straight from
    # the backends: a node's call is made while moto answers the SendCommand that runs it.
    @staticmethod
    def node_fetch(bucket: str, key: str) -> bytes:
        from moto.s3.models import s3_backends

        found = s3_backends[ACCOUNT]["aws"].get_object(bucket, key)
        if found is None:
            raise KeyError(f"NoSuchKey: s3://{bucket}/{key}")
        return bytes(found.value)

    @staticmethod
    def node_parameter(name: str) -> str | None:
        from moto.ssm.models import ssm_backends

        found = ssm_backends[ACCOUNT][REGION].get_parameter(name)
        return None if found is None else str(found.value)
