"""`slipway package`: write the complete CloudFormation that the documented deploy path creates,
per stage, into dist/<stage>/ (`make package` then lints and scans it):

- resources.json: .chalice/resources.yaml rendered exactly as `slipway bootstrap` sends it, and
  resources.parameters.json, the parameters bootstrap gives it for that stage;
- chalice/sam.json (+ deployment.zip): `chalice package` for the stage, the same functions, roles
  (from .chalice/policy-*.json), API, rules and log groups that `chalice deploy` creates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from slipway.deploy import bootstrap


def write_resources(project_dir: Path, stage: str, out: Path) -> Path:
    config = bootstrap.load_config(project_dir)
    template = bootstrap.render(project_dir, config.get("app_name", "slipway"))
    bootstrap.template_body(template)  # the same size check bootstrap makes
    out.mkdir(parents=True, exist_ok=True)
    path = out / "resources.json"
    path.write_text(json.dumps(template, indent=2) + "\n")
    parameters = bootstrap.stage_parameters(config, stage)
    (out / "resources.parameters.json").write_text(
        json.dumps([{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()], indent=2) + "\n"
    )
    return path


def write_chalice(project_dir: Path, stage: str, out: Path) -> Path:
    target = out / "chalice"
    shutil.rmtree(target, ignore_errors=True)
    chalice = Path(sys.executable).with_name("chalice")
    # Chalice insists on a region even to write a template that names none (SAM uses pseudo
    # parameters); any region gives the same output.
    env = dict(os.environ)
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    subprocess.run(
        [str(chalice), "--project-dir", str(project_dir), "package", "--stage", stage, str(target)], check=True, env=env
    )
    path = target / "sam.json"
    app = bootstrap.load_config(project_dir).get("app_name", "slipway")
    sam = fix_api_log_group(json.loads(path.read_text()), app, stage)
    path.write_text(json.dumps(sam, indent=2) + "\n")
    return path


def fix_api_log_group(sam: dict, app: str, stage: str) -> dict:
    """Chalice 1.34.0's `package` names the API handler's log group `/aws/lambda/${ApiHandler}`,
    a reference to nothing (the function's logical id is `APIHandler`; cfn-lint E1019), where
    `chalice deploy` creates `/aws/lambda/<app>-<stage>-api_handler`. Write what deploy creates,
    so this template shows the deploy path; the group the function really writes to,
    /aws/lambda/<app>-<stage>, is in .chalice/resources.yaml. Only that exact mistake is changed."""
    resources = sam.get("Resources", {})
    group = resources.get("ApiHandlerLogGroup", {}).get("Properties", {})
    if (
        "APIHandler" in resources
        and "ApiHandler" not in resources
        and group.get("LogGroupName") == {"Fn::Sub": "/aws/lambda/${ApiHandler}"}
    ):
        group["LogGroupName"] = f"/aws/lambda/{app}-{stage}-api_handler"
    return sam


def run(project_dir: Path, stages: list[str], out: Path, with_chalice: bool = True) -> list[Path]:
    config = bootstrap.load_config(project_dir)
    written = []
    for stage in stages or list(config["stages"]):
        written.append(write_resources(project_dir, stage, out / stage))
        if with_chalice:
            written.append(write_chalice(project_dir, stage, out / stage))
    for path in written:
        print(f"wrote {path}")
    return written
