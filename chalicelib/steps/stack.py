"""The application: the pushed commit's stack file read and validated before anything changes,
then rolled out on the swarm through a manager, only the services that changed, until every one
has converged (or Swarm rolled one back: the run fails naming it). chalicelib/rollout.py decides."""

from __future__ import annotations

from typing import Any

from chalicelib import aws, builds, github, naming, plans, rollout, stack
from chalicelib.aws import ec2, s3, ssm
from chalicelib.errors import StackFailed, StackInvalid
from chalicelib.observability import logger
from chalicelib.settings import Settings, get_settings
from chalicelib.steps.common import bake_bucket, deployment_of, finished, github_token
from chalicelib.steps.registry import task
from chalicelib.steps.state import Deployment, DeployRun, Rollout, ServiceReport, StackFile


def secret_name(key: str, version: int) -> str:
    """The swarm secret for a parameter's version: Swarm secrets cannot change, so each value
    gets a name of its own and a changed value updates the services that use it."""
    return f"{key}-v{version}"


@task("Read the stack file")
def read_stack(event: DeployRun) -> StackFile:
    """'Read the stack file': fetch it at the commit (SLIPWAY_STACK_FILE, or the first of
    plans.STACK_FILE_NAMES there), put in the environment's variables and what it reads from the
    commit, refuse it (StackInvalid, every problem at once) before anything changes, check its
    secrets exist, and store it and its configs in the bake bucket."""
    deployment = deployment_of(event)
    settings = get_settings()
    api, repository, commit = settings.github_api, deployment["repository"], deployment["commit"]
    token = github_token(settings)
    path, data = _stack_file(settings, repository, commit, token)
    if data is None:
        logger.info("no stack file: nodes only", extra={"path": path})
        return StackFile(present=False, path=path, key=None, services=[], secrets={}, ports=[], warnings=[])
    environment = deployment["environment"]
    home = naming.variables_path(environment)
    variables = ssm.values_under(aws.client("ssm"), home)
    reading = stack.read(
        data,
        path=path,
        local_volumes=settings.local_volumes,
        variables=variables,
        files=github.CommitFiles(api, repository, commit, token),
        variables_home=home,
    )
    problems = list(reading.problems)
    parsed = reading.stack
    every = sorted(set(parsed.secrets) | set(parsed.build_secrets)) if parsed else []
    parameters = {key: naming.secret_parameter(environment, key) for key in every}
    versions = ssm.versions(aws.client("ssm"), sorted(parameters.values())) if parameters else {}
    missing = sorted(key for key, name in parameters.items() if name not in versions)
    if missing:
        problems.append(
            f"no value for secret{'s' if len(missing) > 1 else ''} {', '.join(missing)}: put each as a SecureString, "
            f"e.g. aws ssm put-parameter --type SecureString --name {parameters[missing[0]]} --value ..."
        )
    if problems or parsed is None:
        raise StackInvalid(stack.describe_problems(path, problems))
    ports = stack.published_ports(parsed.document)
    warnings = list(parsed.warnings) + _port_warnings(ports, settings.service_ports, settings.ingress)
    for warning in warnings:
        logger.warning("stack file", extra={"path": path, "warning": warning})
    bucket = bake_bucket(settings)
    client = aws.client("s3")
    for digest, content in parsed.config_data.items():
        s3.put_once(client, bucket, stack.config_key(digest), content, "application/octet-stream")
    resolved = stack.stored(parsed)
    key = stack.content_key(resolved)
    s3.put_once(client, bucket, key, resolved, "application/yaml")
    logger.info(
        "stack file read",
        extra={"path": path, "key": key, "services": list(parsed.services), "variables": list(parsed.variables)},
    )
    return StackFile(
        present=True,
        path=path,
        key=key,
        services=list(parsed.services),
        secrets={k: versions[parameters[k]] for k in parsed.secrets},
        ports=ports,
        warnings=warnings,
        builds=list(parsed.builds),
        configs=dict(parsed.configs),
        variables=list(parsed.variables),
    )


def _stack_file(settings: Settings, repository: str, commit: str, token: str | None) -> tuple[str, bytes | None]:
    """The stack file's path and bytes at the commit: SLIPWAY_STACK_FILE, or the first name of
    plans.STACK_FILE_NAMES the commit has (none: the first name, and None)."""
    api = settings.github_api
    for name in (settings.stack_file,) if settings.stack_file else plans.STACK_FILE_NAMES:
        data = github.file_at(api, repository, commit, name, token)
        if data is not None:
            return name, data
    return settings.stack_file or plans.STACK_FILE_NAMES[0], None


def _port_warnings(published: list[int], service_ports: tuple[int, ...], ingress: str) -> list[str]:
    """A published port outside SLIPWAY_SERVICE_PORTS is closed to clients (the nodes' security group
    does not open it); a service port no service publishes has nothing behind it."""
    where = (
        "the load balancer does not forward it" if ingress == "nlb" else "the nodes' security group does not open it"
    )
    warnings = [
        f"port {port} is published but not in SLIPWAY_SERVICE_PORTS ({','.join(map(str, service_ports))}): {where}"
        for port in published
        if port not in service_ports
    ]
    warnings += [
        f"SLIPWAY_SERVICE_PORTS has {port}, which no service publishes: nothing answers there"
        for port in service_ports
        if port not in published
    ]
    return warnings


@task("Inspect the stack")
def inspect_stack(event: DeployRun) -> Rollout:
    """'Inspect the stack': through a manager that stays, label the nodes with their image, list
    the services as they run and ask the registry for each image's digest now."""
    deployment = deployment_of(event)
    settings = get_settings()
    nodes = event["nodes"]
    current = list(nodes["current"])
    found = ec2.list_nodes(
        aws.client("ec2"), deployment["environment"], states=["running"], instance_ids=current + list(nodes["old"])
    )
    by_id = {n.instance_id: n for n in found}
    through = [i for i in current + list(nodes["old"]) if i in by_id and by_id[i].swarm_role == "manager"]
    if not through:
        raise StackFailed("no running manager to deploy the stack through")
    document = _document(event, settings)
    images = sorted({str(s["image"]) for s in (document.get("services") or {}).values()})
    labels = {by_id[i].hostname: deployment["image_key"] for i in current if i in by_id}
    command_id = _send(
        deployment, "inspect", rollout.inspect_script(deployment["environment"], images, labels), through[0]
    )
    return _rollout(phase="inspect", command_id=command_id, manager=through[0], checks=0, waited=0)


@task("Update the stack")
def update_stack(event: DeployRun) -> Rollout:
    """'Update the stack': from the inspection, pin each image to its digest, and deploy the
    services that changed (none: done, nothing touched)."""
    deployment = deployment_of(event)
    settings = get_settings()
    state = event["rollout"]
    output = _output(state)
    if output is None:
        return _waiting(state, settings)
    environment = deployment["environment"]
    inspection = rollout.parse_inspection(output, environment)
    if inspection.pull_errors:
        raise StackFailed(
            "; ".join(
                f"{image} could not be pulled on the manager: {why}" for image, why in inspection.pull_errors.items()
            )
            + " (nothing was changed)"
        )
    stack_file = event["stack"]
    pinned = rollout.pin(_document(event, settings), inspection.digests, deployment["image_key"])
    plan = rollout.changes(pinned, inspection.services)
    reports = _reports(pinned, inspection.services, set())
    if not plan.any:
        logger.info("stack unchanged: no service updated", extra={"services": sorted(inspection.services)})
        return _rollout(phase="done", done=True, manager=state["manager"], services=reports)
    deployed = rollout.subset(pinned, plan.changed)
    data = stack.dump(deployed)
    key = stack.content_key(data)
    s3.put_once(aws.client("s3"), bake_bucket(settings), key, data, "application/yaml")
    used = {key for name in plan.changed for key in rollout.references(pinned["services"][name], "secrets")}
    secrets = {
        secret_name(k, v): naming.secret_parameter(environment, k)
        for k, v in stack_file["secrets"].items()
        if k in used
    }
    manager = state["manager"] or ""
    command_id = _send(
        deployment,
        "deploy",
        rollout.deploy_script(
            environment, bake_bucket(settings), key, secrets, plan.removed, rollout.config_files(deployed)
        ),
        manager,
    )
    logger.info("stack update sent", extra={"changed": list(plan.changed), "removed": list(plan.removed)})
    return _rollout(
        phase="deploy",
        command_id=command_id,
        manager=manager,
        changed=list(plan.changed),
        removed=list(plan.removed),
        services=reports,
        key=key,
    )


@task("Check the services")
def check_services(event: DeployRun) -> Rollout:
    """'Check the services': once the deploy command has run, ask for the services' state until
    each one is converged on its new definition; a rolled-back or stuck one fails the run."""
    deployment = deployment_of(event)
    settings = get_settings()
    state = event["rollout"]
    output = _output(state)
    if output is None:
        return _waiting(state, settings)
    manager = state["manager"] or ""
    environment = deployment["environment"]
    if state["phase"] == "status":
        services = rollout.parse_services(output, environment)
        expected = list(event["stack"]["services"])
        verdicts = rollout.verdict(services, expected)
        failed = [v for v in verdicts if v.state == "failed"]
        if failed:
            raise StackFailed(
                "; ".join(f"service {v.name} was rolled back: {v.why}" for v in failed)
                + " (the previous version keeps serving)"
            )
        reports = [
            _report(v.name, v.image, v.running, v.desired, updated=v.name in state["changed"], state=v.state)
            for v in verdicts
        ]
        if all(v.state == "converged" for v in verdicts):
            logger.info("stack converged", extra={"updated": state["changed"]})
            return {**state, "phase": "done", "done": True, "services": reports, "command_id": None}
        if state["waited"] >= settings.stack_timeout_seconds:
            pending = [v for v in verdicts if v.state != "converged"]
            raise StackFailed(
                f"services not converged after {state['waited']} s (SLIPWAY_STACK_TIMEOUT_SECONDS): "
                + "; ".join(f"{v.name} {v.running}/{v.desired}: {v.why}" for v in pending)
            )
        state = {**state, "services": reports}
    command_id = _send(deployment, "status", rollout.status_script(environment), manager)
    wait = plans.next_wait(state["checks"], settings.poll_first_seconds, settings.poll_seconds)
    return {
        **state,
        "phase": "status",
        "command_id": command_id,
        "checks": state["checks"] + 1,
        "waited": state["waited"] + wait,
        "wait_seconds": wait,
    }


# --- helpers ------------------------------------------------------------------------------------


def _document(event: DeployRun, settings: Settings) -> dict[str, Any]:
    """The stored stack file with Slipway's defaults, the secrets' swarm names and the images the
    run built (stack.rendered)."""
    stack_file = event["stack"]
    if not stack_file["key"]:
        raise StackFailed("the run has no stored stack file to deploy")
    parsed = stack.parse(
        s3.get(aws.client("s3"), bake_bucket(settings), stack_file["key"]),
        path=stack_file["path"],
        local_volumes=settings.local_volumes,
    )
    names = {k: secret_name(k, v) for k, v in stack_file["secrets"].items()}
    built = event["builds"]["services"] if "builds" in event else []
    return stack.rendered(parsed, names, builds.images(built), stack_file.get("configs") or {})


def _send(deployment: Deployment, what: str, commands: list[str], manager: str) -> str:
    settings = get_settings()
    return ssm.run_shell(
        aws.client("ssm"),
        commands=commands,
        comment=f"slipway stack {what} {deployment['id']}",
        timeout_seconds=settings.command_timeout_seconds,
        instance_ids=[manager],
    )


def _output(state: Rollout) -> str | None:
    """The finished command's output (StackFailed if it failed), or None while it runs."""
    command_id, manager = state["command_id"], state["manager"]
    if not (command_id and manager):
        raise StackFailed(f"no stack command to check: {state!r}")
    results = finished(command_id, [manager])
    if results is None:
        return None
    result = results[0]
    full = ssm.output(aws.client("ssm"), command_id, manager)
    if result.status != "Success":
        raise StackFailed(
            f"stack {state['phase']} failed on {manager}: {result.status} (exit {result.response_code}) "
            f"{result.output.strip()[-600:]}"
        )
    return full


def _waiting(state: Rollout, settings: Settings) -> Rollout:
    wait = plans.next_wait(state["checks"], settings.poll_first_seconds, settings.poll_seconds)
    return {**state, "checks": state["checks"] + 1, "waited": state["waited"] + wait, "wait_seconds": wait}


def _reports(
    pinned: dict[str, Any], running: dict[str, rollout.RunningService], updated: set[str]
) -> list[ServiceReport]:
    reports = []
    for name, service in sorted((pinned.get("services") or {}).items()):
        image = str(service["image"])
        live = running.get(name)
        verdict = rollout.judge(live) if live and live.tasks else None
        reports.append(
            _report(
                name,
                image,
                verdict.running if verdict else 0,
                verdict.desired if verdict else 0,
                updated=name in updated,
                state="converged" if live and name not in updated else "updating",
            )
        )
    return reports


def _report(name: str, image: str, running: int, desired: int, *, updated: bool, state: str) -> ServiceReport:
    """One service's line of `$.rollout.services`: `image` as deployed (`name:tag@sha256:...`) split in two."""
    named, _, digest = image.partition("@")
    return ServiceReport(
        name=name, image=named, digest=digest, running=running, desired=desired, updated=updated, state=state
    )


def _rollout(
    *,
    phase: str,
    done: bool = False,
    command_id: str | None = None,
    manager: str | None = None,
    changed: list[str] | None = None,
    removed: list[str] | None = None,
    services: list[ServiceReport] | None = None,
    checks: int = 0,
    waited: int = 0,
    key: str | None = None,
) -> Rollout:
    """`$.rollout`, the one way to build it."""
    settings = get_settings()
    return Rollout(
        phase=phase,
        done=done,
        command_id=command_id,
        manager=manager,
        changed=changed or [],
        removed=removed or [],
        services=services or [],
        checks=checks,
        waited=waited,
        wait_seconds=0 if done else plans.next_wait(checks, settings.poll_first_seconds, settings.poll_seconds),
        key=key,
    )
