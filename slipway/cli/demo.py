"""`slipway demo`: one push through the whole pipeline on the embedded emulator, then the scheduled
prune and the teardown, with a short summary (or one JSON object with --json)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from unittest import mock

from slipway import PROJECT_DIR, harness
from slipway.emulator import Emulator
from slipway.follow import print_line
from slipway.harness import scheduled_event

EMULATED = [
    "CodeBuild/Packer bake: the emulator registers the AMI Packer would produce (no image is built)",
    "CodeBuild builds: emulated by content, one ECR digest per build key (no image is built)",
    "node commands: SSM Run Command is answered by emulated swarm nodes (no Docker engine runs)",
    "the stack: emulated managers keep its services, tasks and update state; the images are in an emulated registry",
    "the load balancer: moto's elbv2, target health as an NLB reports it (initial, healthy, draining); no traffic",
]
# The stack the demo deploys: the example kept in this repository (the tests deploy it too).
EXAMPLE_STACK = "example/stack.yml"
REAL_NODES = [
    "CodeBuild/Packer bake: the swarm_node role converged for real on a Debian 12 root, imported as "
    "a local Docker image (Packer and the AMI itself are emulated)",
    "CodeBuild builds: BuildKit on this machine's dockerd, pushed to the local registry (buildx bake and the "
    "registry cache run only in CodeBuild)",
    "node commands: SSM Run Command ran in each instance's node container, on its own dockerd",
    "the stack: docker stack deploy for real, its images from a local registry; no worker service "
    "(example_stack); Swarm's routing mesh (IPVS, which this kernel lacks) stood in for by slipway/realnodes/mesh.py",
    "the load balancer: a real TCP load balancer on this machine (slipway/realnodes/load_balancer.py) for moto's NLB, "
    "sending connections only to registered, healthy targets",
]


# A run in the demo may bake for real (--real-nodes): minutes, not seconds.
DEMO_SECONDS = 900.0


def _commit(emu: Emulator, source: Path | None) -> str:
    """The commit to push: the repository's HEAD; for this checkout, with the example's stack file as
    the emulator's nodes can run it (on real nodes: Emulator.example_stack)."""
    commit = local_commit(source or PROJECT_DIR)
    if source is None:
        emu.github.files[commit] = {EXAMPLE_STACK: emu.example_stack()}
    return commit


def local_commit(where: Path = PROJECT_DIR) -> str:
    """The repository's HEAD, so the demo deploys what you are looking at; random if not a repo."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if len(out) == 40:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def run(
    as_json: bool = False, verbose: bool = False, nodes: int = 1, real_nodes: bool = False, repo: str | None = None
) -> int:
    from slipway.cli import repository, shell_settings

    source = repository(repo)
    started = time.monotonic()
    say = (lambda *_a, **_k: None) if as_json else print
    live = say if as_json else print_line  # each state as it is entered and left
    if as_json:
        # One JSON document on stdout: the functions' own log lines (stdout on Lambda, where
        # CloudWatch reads it) go to stderr with the rest of the progress.
        from chalicelib.observability import logger as functions_logger

        handler = functions_logger.registered_handler
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    # Without --verbose, the functions' logs and CloudWatch metrics (EMF lines) stay out of the way.
    quiet = {} if verbose else {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
    if not verbose:
        logging.getLogger("moto").setLevel(logging.CRITICAL)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the nodes' requests to the AWS endpoint
    report: dict = {"emulated": REAL_NODES if real_nodes else EMULATED}
    log = (lambda m: print(m, file=sys.stderr)) if as_json else (lambda m: print(f"  [real nodes] {m}"))
    if real_nodes:
        from slipway import realnodes

        reason = realnodes.bake_available()
        if reason:
            print(f"slipway demo --real-nodes: {reason}", file=sys.stderr)
            return 2
    # The example's stack file in this checkout; an application repository's where the stage (or
    # the shell's SLIPWAY_STACK_FILE) says.
    stage = ({} if source else {"SLIPWAY_STACK_FILE": EXAMPLE_STACK}) | shell_settings()
    with (
        mock.patch.dict(os.environ, quiet),
        Emulator(node_count=nodes, real_nodes=real_nodes, log=log, extra_environment=stage, repo=source) as emu,
    ):
        # What the user does once per secret the stack names (example/stack.yml's app_token).
        emu.client("ssm").put_parameter(
            Name=f"/slipway/{emu.environment}/secrets/app_token",
            Value=uuid.uuid4().hex,
            Type="SecureString",
            Overwrite=True,
        )
        say(
            f"Embedded emulator up: state machines {', '.join(emu.arns)}; "
            f"{len(emu.functions)} Lambda functions; CodeBuild project; webhook secret in SSM."
        )
        commit = _commit(emu, source)
        status, answer = harness.deliver_push(emu, commit)
        say(f"\nPush of {commit[:12]} to main, signed, delivered to POST /github/webhook: {status}")
        if status != 202 or "execution_arn" not in answer:
            say(f"webhook refused the push: {answer}")
            report["webhook"] = {"status": status, "answer": answer}
            return _finish(report, started, as_json, ok=False)
        say(f"Deploy execution {answer['execution_arn']}")
        deploy = harness.follow_run(emu, answer["execution_arn"], say=live, poll=0.2, timeout=DEMO_SECONDS)
        out = deploy.output
        report["deploy"] = {
            "status": deploy.status,
            "execution_arn": deploy.execution_arn,
            "ami_id": (out.get("image") or {}).get("ami_id"),
            "vpc_id": (out.get("network") or {}).get("vpc_id"),
            "instance_ids": (out.get("nodes") or {}).get("current", []),
            "state_transitions": deploy.state_transitions,
            "stack_file": (out.get("stack") or {}).get("path"),
            "services": (out.get("rollout") or {}).get("services", []),
            "builds": [
                {"name": b["name"], "key": b["key"], "built": b["built"], "image": b["image"]}
                for b in (out.get("builds") or {}).get("services", [])
            ],
            "url": (out.get("ingress") or {}).get("url"),
            "error": deploy.error,
            "cause": deploy.cause,
        }
        say(f"Deploy {deploy.status}" + (f": {deploy.error}: {deploy.cause}" if deploy.error else ""))
        if report["deploy"]["url"]:
            say(f"  address {report['deploy']['url']} (the load balancer's)")
        for service in report["deploy"]["services"]:
            say(
                f"  service {service['name']}: {service['image']}@{service['digest'][:19]}, "
                f"{service['running']}/{service['desired']} running, {service['state']}"
                f"{', updated by this run' if service['updated'] else ''}"
            )
        statuses = [st for st in emu.github.statuses if st["sha"] == commit]
        report["deploy"]["github_statuses"] = [
            {k: st[k] for k in ("state", "description", "context")} for st in statuses
        ]
        for st in statuses:
            say(f"  GitHub commit status {st['context']}: {st['state']} - {st['description']}")

        if real_nodes and deploy.status == "SUCCEEDED":
            report["deploy"]["answer"] = _request_web(emu, report["deploy"]["instance_ids"], say)
            if emu.load_balancer is not None and report["deploy"]["url"]:
                report["deploy"]["answer_through_load_balancer"] = _request_load_balancer(emu, say)
        prune_ids = []
        if deploy.status == "SUCCEEDED":
            say("\nScheduled prune (the EventBridge rule's event, invoked as `aws lambda invoke` would):")
            result = emu.invoke("prune", scheduled_event())
            prune_ids.append(result["command_id"])
            ssm = emu.client("ssm")
            for inv in ssm.list_command_invocations(CommandId=result["command_id"], Details=True)["CommandInvocations"]:
                output = inv["CommandPlugins"][0].get("Output", "").strip()
                say(f"  {inv['InstanceId']}: {inv['Status']}: {output}")
            emu.wait_for_events()
            recorded = [
                r
                for name, r in emu.results
                if name.endswith("-record_prune")
                and isinstance(r, dict)
                and r.get("command_id") == result["command_id"]
            ]
            if recorded:
                say(
                    f"  recorded by the command's status-change event: {recorded[0]['nodes']} node(s), "
                    f"{recorded[0]['reclaimed_bytes']} bytes reclaimed, failed: {recorded[0]['failed'] or 'none'}"
                )
                report["prune"] = {"recorded": recorded[0]}
        report.setdefault("prune", {})["command_ids"] = prune_ids

        say(f'\nTeardown execution (input {{"environment": "{emu.environment}"}}):')
        teardown = harness.teardown(emu, say=live, timeout=DEMO_SECONDS)
        from chalicelib.aws import ec2, elb

        leftover = ec2.count_tagged(emu.client("ec2"), emu.environment)
        leftover |= elb.count_tagged(emu.client("elbv2"), emu.environment)
        leftover["swarm-parameter"] = len(
            emu.client("ssm").get_parameters_by_path(Path=f"/slipway/{emu.environment}/swarm", Recursive=True)[
                "Parameters"
            ]
        )
        report["teardown"] = {
            "status": teardown.status,
            "execution_arn": teardown.execution_arn,
            "state_transitions": teardown.state_transitions,
            "leftover": leftover,
            "error": teardown.error,
            "cause": teardown.cause,
        }
        ok = (
            deploy.status == "SUCCEEDED"
            and teardown.status == "SUCCEEDED"
            and not any(leftover.values())
            and bool(prune_ids)
            and bool(report["deploy"]["services"])
            and all(service["state"] == "converged" for service in report["deploy"]["services"])
            and (not real_nodes or bool(report["deploy"].get("answer")))
            and (
                not (real_nodes and report["deploy"]["url"])
                or bool(report["deploy"].get("answer_through_load_balancer"))
            )
        )
        say(f"Teardown {teardown.status}")
        return _finish(report, started, as_json, ok)


def _request_web(emu, instance_ids: list[str], say) -> str | None:
    """GET / of the example's web service through each node's published port 8080, as a client would."""
    import urllib.request

    for instance_id in instance_ids:
        url = f"http://127.0.0.1:{emu.nodes.host_port(instance_id, 8080)}/"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read(2000).decode(errors="replace").strip()
        except OSError as exc:
            say(f"  GET {url} (node {instance_id}'s port 8080): {exc}")
            continue
        say(f"  GET {url} (node {instance_id}'s port 8080): {answer.status} {text}")
        return text
    return None


def _request_load_balancer(emu, say) -> str | None:
    """GET / through the load balancer's port 80: the local one standing in for the NLB's address."""
    import urllib.request

    host, port = emu.load_balancer.address(80)
    url = f"http://{host}:{port}/"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read(2000).decode(errors="replace").strip()
    except OSError as exc:
        say(f"  GET {url} (the load balancer's port 80): {exc}")
        return None
    say(f"  GET {url} (the load balancer's port 80): {answer.status} {text}")
    return text


def _finish(report: dict, started: float, as_json: bool, ok: bool) -> int:
    report["elapsed_s"] = round(time.monotonic() - started, 2)
    report["ok"] = ok
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if ok else 1
    deploy = report.get("deploy", {})
    teardown = report.get("teardown", {})
    print("\nSummary")
    if deploy:
        print(
            f"  deploy     {deploy['status']} in {deploy['state_transitions']} state transitions: "
            f"image {deploy['ami_id']}, VPC {deploy['vpc_id']}, nodes {', '.join(deploy['instance_ids']) or '-'}"
        )
    if deploy.get("url"):
        print(f"  address    {deploy['url']}")
    if deploy.get("builds"):
        print(
            "  builds     "
            + ", ".join(
                f"{b['name']} {'built' if b['built'] else 'reused'} ({b['key'][:12]})" for b in deploy["builds"]
            )
        )
    for service in deploy.get("services", []):
        print(
            f"  service    {service['name']} {service['running']}/{service['desired']} running "
            f"{service['image']}@{service['digest'][:19]}{' (updated)' if service['updated'] else ''}"
        )
    if deploy.get("github_statuses"):
        print("  github     commit status " + " -> ".join(st["state"] for st in deploy["github_statuses"]))
    if report.get("prune", {}).get("command_ids"):
        print(f"  prune      SSM command {report['prune']['command_ids'][0]}")
    if teardown:
        left = {k: v for k, v in teardown["leftover"].items() if v}
        print(f"  teardown   {teardown['status']}; left tagged for the environment: {left or 'nothing'}")
    print("  emulated   " + "\n             ".join(report["emulated"]))
    print(f"  elapsed    {report['elapsed_s']}s -> {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1
