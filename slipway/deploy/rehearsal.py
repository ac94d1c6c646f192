"""An empty emulated AWS account served over HTTP (moto's server in this process), for rehearsing
the documented deploy path: `slipway bootstrap` then `chalice deploy`, run unchanged as separate
processes with AWS_ENDPOINT_URL pointing here.

Unlike slipway.emulator, nothing is created up front: the deploy path creates everything. moto's
gaps on that path are filled here, in this server process, never on the user's path:
- API Gateway: moto imports only OpenAPI 3 (it refuses a document with a `swagger` key) and reads
  `info.description`, which Chalice's Swagger 2.0 does not write. The import is given the same
  document without those two obstacles (paths, methods and integrations are read alike).
- CloudFormation: moto has no AWS::CodeBuild::Project; here it is created through moto's own
  CodeBuild backend from the template's properties. moto's AWS::StepFunctions::StateMachine
  ignores DefinitionSubstitutions; here they are applied, as CloudFormation does. moto's
  AWS::IAM::Role ignores ManagedPolicyArns and stores inline policies so that GetRolePolicy
  answers them unreadably; here the policies are attached and stored as JSON.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any
from unittest import mock

MOTO_CONFIG = {
    "stepfunctions": {"execute_state_machine": False},
    "lambda": {"use_docker": False},
    "iam": {"load_aws_managed_policies": True},
}  # AmazonSSMManagedInstanceCore
_SUBSTITUTION = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _codebuild_model():
    """AWS::CodeBuild::Project for moto's CloudFormation (moto 5.2.5 has none)."""
    from moto.codebuild.models import codebuild_backends
    from moto.core.common_models import CloudFormationModel

    class CodeBuildProject(CloudFormationModel):
        def __init__(self, project: dict) -> None:
            self.project = project
            self.name = project["name"]
            self.arn = project["arn"]

        @property
        def physical_resource_id(self) -> str:
            return self.name

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Arn"

        def get_cfn_attribute(self, attribute_name: str) -> Any:
            return self.arn

        @staticmethod
        def cloudformation_name_type() -> str:
            return "Name"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::CodeBuild::Project"

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
            p = cloudformation_json["Properties"]

            def lower(d: dict) -> dict:  # CloudFormation's PascalCase -> the API's camelCase
                return {k[0].lower() + k[1:]: (lower(v) if isinstance(v, dict) else v) for k, v in d.items()}

            environment = dict(p["Environment"])
            variables = environment.pop("EnvironmentVariables", [])
            environment = lower(environment)
            environment["environmentVariables"] = [lower(v) for v in variables]
            source = lower(p["Source"])
            if "buildSpec" in source:
                source["buildspec"] = source.pop("buildSpec")
            backend = codebuild_backends[account_id][region_name]
            project = backend.create_project(
                project_name=p.get("Name", resource_name),
                description=p.get("Description"),
                project_source=source,
                artifacts=lower(p["Artifacts"]),
                environment=environment,
                service_role=p["ServiceRole"],
                tags=p.get("Tags"),
                cache=None,
                timeout=p.get("TimeoutInMinutes"),
                queued_timeout=p.get("QueuedTimeoutInMinutes"),
                source_version=None,
                logs_config=lower(p.get("LogsConfig", {})),
                vpc_config=None,
            )
            return cls(project)

    return CodeBuildProject


@contextlib.contextmanager
def patched_moto() -> Iterator[None]:
    from moto.apigateway.models import APIGatewayBackend
    from moto.cloudformation import parsing
    from moto.iam.models import Role, iam_backends
    from moto.stepfunctions.models import StateMachine
    from moto.utilities.utils import get_partition

    with contextlib.ExitStack() as stack:
        original_import = APIGatewayBackend.import_rest_api
        original_put = APIGatewayBackend.put_rest_api

        def as_openapi(doc: dict) -> dict:
            doc = dict(doc)
            doc.pop("swagger", None)
            doc["info"] = {"description": "", **doc.get("info", {})}
            return doc

        def import_rest_api(backend, api_doc, fail_on_warnings):
            return original_import(backend, as_openapi(api_doc), fail_on_warnings)

        def put_rest_api(backend, function_id, api_doc, fail_on_warnings, mode="merge"):
            return original_put(backend, function_id, as_openapi(api_doc), fail_on_warnings, mode)

        stack.enter_context(mock.patch.object(APIGatewayBackend, "import_rest_api", import_rest_api))
        stack.enter_context(mock.patch.object(APIGatewayBackend, "put_rest_api", put_rest_api))

        # moto's own, as the function a classmethod wraps (typed as the bound method, hence getattr)
        original_create = getattr(StateMachine.create_from_cloudformation_json, "__func__")  # noqa: B009

        def create_state_machine(cls, resource_name, cloudformation_json, account_id, region_name, **kw):
            properties = cloudformation_json["Properties"]
            substitutions = properties.get("DefinitionSubstitutions") or {}
            if substitutions:
                properties = dict(properties)
                properties["DefinitionString"] = _SUBSTITUTION.sub(
                    lambda m: str(substitutions.get(m.group(1), m.group(0))), properties["DefinitionString"]
                )
                cloudformation_json = {**cloudformation_json, "Properties": properties}
            return original_create(cls, resource_name, cloudformation_json, account_id, region_name, **kw)

        stack.enter_context(
            mock.patch.object(StateMachine, "create_from_cloudformation_json", classmethod(create_state_machine))  # type: ignore[arg-type]  # moto's signature, untyped here
        )

        original_role = getattr(Role.create_from_cloudformation_json, "__func__")  # noqa: B009

        def create_role(cls, resource_name, cloudformation_json, account_id, region_name, **kw):
            properties = dict(cloudformation_json["Properties"])
            properties["Policies"] = [
                {
                    **p,
                    "PolicyDocument": p["PolicyDocument"]
                    if isinstance(p["PolicyDocument"], str)
                    else json.dumps(p["PolicyDocument"]),
                }
                for p in properties.get("Policies", [])
            ]
            role = original_role(
                cls, resource_name, {**cloudformation_json, "Properties": properties}, account_id, region_name, **kw
            )
            backend = iam_backends[account_id][get_partition(region_name)]
            for arn in properties.get("ManagedPolicyArns", []):
                backend.attach_role_policy(arn, role.name)
            return role

        stack.enter_context(
            mock.patch.object(Role, "create_from_cloudformation_json", classmethod(create_role))  # type: ignore[arg-type]  # moto's signature, untyped here
        )

        model = _codebuild_model()
        model_map = dict(parsing.get_model_map())
        model_map[model.cloudformation_type()] = model
        name_types = dict(parsing.get_name_type_map())
        name_types[model.cloudformation_type()] = model.cloudformation_name_type()
        stack.enter_context(mock.patch.object(parsing, "get_model_map", lambda: model_map))
        stack.enter_context(mock.patch.object(parsing, "get_name_type_map", lambda: name_types))
        yield


@contextlib.contextmanager
def aws_server(port: int | None = None) -> Iterator[str]:
    """Serve an empty emulated account; yields the endpoint URL for AWS_ENDPOINT_URL."""
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    port = port or free_port()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(default_user_config, MOTO_CONFIG))
        stack.enter_context(patched_moto())
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        stack.callback(server.stop)
        endpoint = f"http://127.0.0.1:{port}"

        def reset() -> None:
            urllib.request.urlopen(
                urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
            ).close()

        # The backends live as long as this process: start from an empty account, leave one.
        reset()
        stack.callback(reset)
        yield endpoint
