"""One function per state-machine Task: a small dict in, a small dict out (ids, never logs).

Each step gathers facts through the adapters, asks plans.py what to do, and does it. Waiting is
the state machine's job: a step that finds work unfinished says so and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import aws, naming, plans
from chalicelib.aws import codebuild, ec2, github, s3, ssm, stepfunctions
from chalicelib.errors import (BakeFailed, CommandFailed, ConfigurationError, GitHubRefused, InvalidInput,
                               NodesNotReady, NodesUnhealthy, QueueTimeout, SwarmFailed, TeardownIncomplete,
                               TransientError)
from chalicelib.observability import logger, metrics
from chalicelib.settings import get_settings


def _token_leaf(role: str) -> str:
    return f"{role}-token"


def _deployment(event: dict) -> dict:
    deployment = event.get("deployment")
    if not isinstance(deployment, dict) or "id" not in deployment:
        raise InvalidInput("the state has no deployment; start from 'Prepare deployment'")
    logger.append_keys(deployment_id=deployment["id"])
    return deployment


def _tags(deployment: dict, role: str) -> dict[str, str]:
    return naming.tags(deployment["environment"], deployment["id"], deployment["commit"], role)


def _token(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def _github_token(settings) -> str | None:
    return (ssm.get_secure(aws.client("ssm"), settings.github_token_parameter)
            if settings.github_token_parameter else None)


def _report(repository: str, commit: str, outcome: str, state: dict, execution_arn: str) -> dict:
    """Set the commit's status on GitHub (only with a token: reading a public repository needs
    none, writing a status does). Returns what the console shows as `github`."""
    settings = get_settings()
    token = _github_token(settings)
    if not token:
        return {"reported": False, "why": "no SLIPWAY_GITHUB_TOKEN_PARAMETER: commit statuses are off"}
    description = plans.status_description(outcome, settings.environment, state)
    github_state = plans.status_state(outcome)
    github.set_status(settings.github_api, repository, commit, token, state=github_state,
                      description=description, target_url=naming.execution_console_url(execution_arn),
                      context=naming.status_context(settings.environment))
    logger.info("commit status set", extra={"state": github_state, "description": description})
    return {"reported": True, "state": github_state, "description": description}


# --- deploy -------------------------------------------------------------------------------

def prepare(event: dict) -> dict:
    """Validate the execution input and fix the names this deployment will use."""
    settings = get_settings()
    raw = event.get("input")
    if not isinstance(raw, dict):
        raise InvalidInput("execution input must be a JSON object with at least 'commit'")
    commit = plans.validate_commit(str(raw.get("commit", "")).lower())
    repository = str(raw.get("repository", ""))
    if not repository:
        raise InvalidInput("execution input needs 'repository' (owner/name) to find the image content")
    deployment_id = event.get("execution") or ""
    logger.append_keys(deployment_id=deployment_id)
    trees = github.top_level_trees(settings.github_api, repository, commit, _github_token(settings))
    key = plans.image_key(trees)
    deployment = {
        "id": deployment_id,
        "environment": settings.environment,
        "repository": repository,
        "ref": str(raw.get("ref", "")),
        "commit": commit,
        "pusher": str(raw.get("pusher", "")),
        "image_key": key,
        "image_name": naming.image_name(settings.environment, key),
    }
    logger.info("deployment prepared", extra={"commit": commit, "image": deployment["image_name"],
                                              "trees": {f: trees[f] for f in plans.IMAGE_FOLDERS}})
    try:
        report = _report(repository, commit, "pending", {}, event.get("execution_arn") or "")
    except Exception as exc:  # noqa: BLE001 - the status is news, never a reason to stop (sent once)
        logger.warning("commit status not set", extra={"why": str(exc)})
        report = {"reported": False, "why": str(exc)}
    return {"deployment": deployment, "poll_seconds": settings.poll_seconds, "github": report}


def report_outcome(event: dict) -> dict:
    """The run's last word on GitHub: `success`, `failure` (nothing changed: the previous nodes
    serve), `error` (deployed, but removing what it replaced failed), or `superseded` (skipped in
    the queue for a newer push; GitHub shows it as `error`, "not deployed"). A status GitHub refuses
    is logged and the run ends as it would have; a transient failure is retried by the state machine."""
    state, outcome = event["run"], event["outcome"]
    # A run that failed in 'Prepare deployment' has no deployment yet: its input names the commit.
    source = state.get("deployment") if isinstance(state.get("deployment"), dict) else state
    repository, commit = str(source.get("repository") or ""), str(source.get("commit") or "").lower()
    try:
        plans.validate_commit(commit)
    except InvalidInput:
        return {"reported": False, "why": "the run has no commit to report on"}
    if not repository:
        return {"reported": False, "why": "the run has no repository to report on"}
    newer = (state.get("queue") or {}).get("superseded_by") or {}
    if outcome == "superseded" and str(newer.get("commit") or "").lower() == commit:
        return {"reported": False, "why": "the run this one was skipped for deploys the same commit"}
    try:
        return _report(repository, commit, outcome, state, event["execution_arn"])
    except GitHubRefused as exc:
        logger.warning("commit status refused", extra={"why": str(exc)})
        return {"reported": False, "why": str(exc)}


def report_stopped_run(event: dict) -> dict:
    """On Step Functions' "Execution Status Change" for a deploy stopped from the console or timed
    out: no state of the run itself ran to tell GitHub, so the commit would stay `pending` for
    ever. Events of other state machines (another stage's, or anything else in the account) are
    ignored. EventBridge invokes it asynchronously: an error (GitHub down) is retried by Lambda,
    twice."""
    settings = get_settings()
    detail = event.get("detail") or {}
    status, machine = str(detail.get("status") or ""), str(detail.get("stateMachineArn") or "")
    if status not in ("ABORTED", "TIMED_OUT"):
        return {"ignored": f"status {status or 'missing'}"}
    if not machine.endswith(":stateMachine:" + naming.state_machine_name(settings.environment, "deploy")):
        return {"ignored": "not this environment's deploy state machine"}
    try:
        run = json.loads(detail.get("input") or "{}")
    except ValueError:
        run = None
    if not isinstance(run, dict):
        return {"ignored": "the execution's input is not a JSON object"}
    answer = report_outcome({"run": {**run, "status": status}, "outcome": "stopped",
                             "execution_arn": str(detail.get("executionArn") or "")})
    logger.info("stopped run reported", extra={"status": status, "github": answer})
    return answer


def find_image(event: dict) -> dict:
    deployment = _deployment(event)
    ami_id = ec2.find_image(aws.client("ec2"), deployment["image_name"])
    logger.info("image lookup", extra={"image": deployment["image_name"], "ami_id": ami_id})
    return {"ami_id": ami_id}


def start_bake(event: dict) -> dict:
    """Put the pushed commit's ansible/ and packer/ in the bake bucket (once per image content)
    and start CodeBuild on exactly that source."""
    deployment = _deployment(event)
    settings = get_settings()
    if not settings.bake_bucket:
        raise ConfigurationError("SLIPWAY_BAKE_BUCKET is not set; `slipway bootstrap` writes it")
    key = plans.source_key(deployment["image_key"])
    client = aws.client("s3")
    if not s3.exists(client, settings.bake_bucket, key):
        with tempfile.TemporaryFile() as archive:
            size = github.download_archive(settings.github_api, deployment["repository"],
                                           deployment["commit"], archive, _github_token(settings))
            archive.seek(0)
            try:
                source = plans.image_source(archive)
            except zipfile.BadZipFile as exc:  # cut short on the way: fetch it again
                raise TransientError(f"GitHub's archive of {deployment['commit']} is not a whole zip") from exc
        s3.put(client, settings.bake_bucket, key, source)
        logger.info("bake source stored", extra={"key": key, "archive_bytes": size,
                                                 "source_bytes": len(source)})
    # Packer reads PKR_VAR_<name> as the value of variable <name> (packer/variables.pkr.hcl).
    variables = {
        "PKR_VAR_ami_name": deployment["image_name"],
        "PKR_VAR_environment": deployment["environment"],
        "PKR_VAR_deployment": deployment["id"],
        "PKR_VAR_commit": deployment["commit"],
        "PKR_VAR_image_key": deployment["image_key"],
    }
    build_id = codebuild.start(aws.client("codebuild"), settings.bake_project, variables,
                               _token(deployment["id"], "bake"), f"{settings.bake_bucket}/{key}")
    logger.info("bake started", extra={"build_id": build_id})
    return {"build_id": build_id, "status": "IN_PROGRESS"}


def check_bake(event: dict) -> dict:
    _deployment(event)
    build_id = event["bake"]["build_id"]
    build = codebuild.describe(aws.client("codebuild"), build_id)
    if build.status == "NOT_FOUND":
        # Just started and not visible yet; the state machine retries (then gives up).
        raise TransientError(f"build {build_id} is not visible yet")
    verdict = plans.bake_status(build.status, build.ami_id)
    if verdict not in ("IN_PROGRESS", "SUCCEEDED"):
        raise BakeFailed(f"bake {build_id}: {verdict}")
    return {"build_id": build_id, "status": verdict, "ami_id": build.ami_id}


def ensure_network(event: dict) -> dict:
    deployment = _deployment(event)
    settings = get_settings()
    return ec2.ensure_network(
        aws.client("ec2"), aws.client("ec2", retries=False),
        environment=deployment["environment"],
        tags_for=lambda role: _tags(deployment, role),
        vpc_cidr=settings.vpc_cidr,
        subnet_cidrs=settings.subnet_cidrs,
        service_ports=settings.service_ports,
    )


def launch_nodes(event: dict) -> dict:
    deployment = _deployment(event)
    settings = get_settings()
    client = aws.client("ec2")
    ami_id = event["image"]["ami_id"]
    existing = ec2.list_nodes(client, deployment["environment"])
    plan = plans.plan_nodes(existing, ami_id, settings.node_count, deployment["id"])
    # A retried step finds the nodes its first attempt launched among the existing ones: they are
    # still this deployment's new nodes (they must join the swarm), not nodes kept from before.
    new = [n.instance_id for n in existing if n.instance_id in plan.current
           and n.deployment == deployment["id"]]
    if plan.launch:
        template = ec2.ensure_launch_template(
            client, aws.client("ec2", retries=False), environment=deployment["environment"],
            tags=_tags(deployment, "launch-template"), image_id=ami_id,
            instance_type=settings.instance_type,
            security_group_id=event["network"]["security_group_id"],
            instance_profile=settings.node_instance_profile,
            client_token=_token(deployment["id"], "template", ami_id),
        )
        current = [n for n in existing if n.instance_id in plan.current]
        per_subnet = {subnet: sum(1 for n in current if n.subnet_id == subnet)
                      for subnet in event["network"]["subnet_ids"]}
        new += ec2.launch_nodes(
            client, template=template, placement=plans.spread(plan.launch, per_subnet),
            tags=_tags(deployment, "node") | {naming.TAG_IMAGE: ami_id},
            client_token=_token(deployment["id"], "launch", ami_id),
        )
    kept = [i for i in plan.current if i not in new]
    logger.info("nodes planned", extra={"new": new, "kept": kept, "old": plan.old})
    return {"new": new, "current": kept + new, "old": list(plan.old)}


def check_nodes(event: dict) -> dict:
    deployment = _deployment(event)
    settings = get_settings()
    wanted = event["nodes"]["current"]
    attempts = int((event.get("readiness") or {}).get("attempts", 0)) + 1
    nodes = ec2.list_nodes(aws.client("ec2"), deployment["environment"], instance_ids=wanted,
                           states=["pending", "running"])
    running = [n.instance_id for n in nodes if n.state == "running"]
    online = ssm.online_instances(aws.client("ssm"), running)
    ready = len(online) == len(wanted)
    if not ready and attempts >= settings.node_ready_attempts:
        missing = sorted(set(wanted) - online)
        raise NodesNotReady(f"not running and online with SSM after {attempts} checks: {missing}")
    return {"ready": ready, "attempts": attempts, "online": len(online), "wanted": len(wanted)}


def form_swarm(event: dict) -> dict:
    deployment = _deployment(event)
    settings = get_settings()
    swarm = event.get("swarm") or {}
    joined, new_managers = list(swarm.get("joined", [])), list(swarm.get("managers", []))
    environment = deployment["environment"]
    nodes = event["nodes"]
    initialised = bool(swarm.get("initialised"))
    # Members from before this deployment (the previous image's nodes and those kept), unless this
    # deployment initialised a swarm of its own (its stored tokens are for that one).
    earlier = [] if initialised else (
        [i for i in nodes["current"] if i not in nodes["new"]] + list(nodes["old"]))
    member_ids = earlier + joined
    managers = {n.instance_id: n for n in ec2.list_nodes(
        aws.client("ec2"), environment, states=["running"], instance_ids=member_ids,
        swarm_role="manager")} if member_ids else {}
    addresses = [managers[i].private_ip for i in member_ids if i in managers]
    tokens = {role: ssm.get_secure(aws.client("ssm"), naming.swarm_parameter(environment, _token_leaf(role)))
              for role in ("manager", "worker")} if addresses else {}
    step = plans.plan_swarm(nodes["new"], joined, new_managers, addresses,
                            bool(tokens) and all(tokens.values()), settings.node_count,
                            established=any(i in managers for i in earlier))
    if step.action == "none":
        return {"action": "none", "joined": joined, "managers": new_managers, "command_id": None,
                "targets": [], "role": None, "initialised": initialised}
    commands = (plans.init_script() if step.action == "init"
                else plans.join_script(tokens[step.role], *step.managers))
    command_id = ssm.run_shell(aws.client("ssm"), commands=commands,
                               comment=f"slipway swarm {step.action} {deployment['id']}",
                               timeout_seconds=settings.command_timeout_seconds,
                               instance_ids=list(step.targets))
    logger.info("swarm command sent", extra={"action": step.action, "role": step.role,
                                             "targets": step.targets})
    return {"action": step.action, "joined": joined, "managers": new_managers,
            "command_id": command_id, "targets": list(step.targets), "role": step.role,
            "initialised": initialised or step.action == "init"}


def check_swarm(event: dict) -> dict:
    deployment = _deployment(event)
    swarm = dict(event["swarm"])
    results = ssm.invocations(aws.client("ssm"), swarm["command_id"])
    if len(results) < len(swarm["targets"]) or any(r.status not in ssm.FINAL_STATUSES for r in results):
        return swarm | {"done": False}
    failed = [r for r in results if r.status != "Success"]
    if failed:
        raise SwarmFailed("; ".join(f"{r.instance_id}: swarm {swarm['action']} {r.status}"
                                    f" (exit {r.response_code})" for r in failed))
    if swarm["action"] == "init":
        tokens = plans.parse_tokens(results[0].output)
        if set(tokens) != {"manager", "worker"}:
            raise SwarmFailed(f"{results[0].instance_id}: swarm init printed no join tokens")
        for role, token in tokens.items():
            ssm.put_secure(aws.client("ssm"),
                           naming.swarm_parameter(deployment["environment"], _token_leaf(role)),
                           token, _tags(deployment, "swarm-token"))
    # The role on the instance tells later deployments which nodes can take joins.
    ec2.tag_swarm_role(aws.client("ec2"), swarm["targets"], swarm["role"])
    joined = swarm["joined"] + swarm["targets"]
    managers = swarm["managers"] + (swarm["targets"] if swarm["role"] == "manager" else [])
    return {"action": swarm["action"], "joined": joined, "managers": managers,
            "command_id": swarm["command_id"], "targets": swarm["targets"], "role": swarm["role"],
            "initialised": swarm.get("initialised", False),
            "done": True, "complete": set(joined) >= set(event["nodes"]["new"])}


def start_health_check(event: dict) -> dict:
    """Ask every node that stays for its own swarm state, and a manager for the swarm's view of
    them (each must be listed Ready and Active)."""
    deployment = _deployment(event)
    nodes = event["nodes"]
    targets = nodes["current"]
    found = ec2.list_nodes(aws.client("ec2"), deployment["environment"], states=["running"],
                           instance_ids=list(targets) + list(nodes["old"]))
    # Managers of the swarm the nodes that stay are in: theirs if any of them is one (a swarm of
    # their own, or kept nodes), else the previous image's (they joined its swarm as workers).
    # All are asked, so one manager that is down cannot block the deployment that replaces it.
    managers = [n.instance_id for n in found if n.swarm_role == "manager" and n.instance_id in targets] \
        or [n.instance_id for n in found if n.swarm_role == "manager"]
    if not managers:
        raise SwarmFailed("no running manager to ask for the swarm's view of its nodes")
    command_id = ssm.run_shell(aws.client("ssm"), commands=plans.HEALTH_SCRIPT,
                               comment=f"slipway health {deployment['id']}",
                               timeout_seconds=60, instance_ids=targets)
    view = ssm.run_shell(aws.client("ssm"), commands=plans.NODE_LIST_SCRIPT,
                         comment=f"slipway node list {deployment['id']}",
                         timeout_seconds=60, instance_ids=managers)
    hostnames = {n.instance_id: n.hostname for n in found if n.instance_id in targets}
    return {"command_id": command_id, "targets": targets, "status": "PENDING",
            "view": {"command_id": view, "targets": managers, "hostnames": hostnames}}


def evaluate_health(event: dict) -> dict:
    _deployment(event)
    health = event["health"]
    client = aws.client("ssm")
    results = ssm.invocations(client, health["command_id"])
    view = ssm.invocations(client, health["view"]["command_id"])
    if any(len(got) < len(wanted) or any(r.status not in ssm.FINAL_STATUSES for r in got)
           for got, wanted in ((results, health["targets"]), (view, health["view"]["targets"]))):
        return health | {"status": "PENDING"}
    # The first manager that answered speaks for the swarm; if none did, the first failure says why.
    answer = next((r for r in view if r.status == "Success"), view[0])
    problems = plans.swarm_view_verdict(answer, health["view"]["hostnames"]) | plans.health_verdict(results)
    if problems:
        raise NodesUnhealthy("; ".join(f"{node}: {why}" for node, why in sorted(problems.items())))
    # A manager that just answered: the promotion goes through it.
    return health | {"status": "HEALTHY", "manager": answer.instance_id}


def _send(deployment: dict, what: str, commands: list[str], target: str) -> dict:
    command_id = ssm.run_shell(aws.client("ssm"), commands=commands,
                               comment=f"slipway {what} {deployment['id']}",
                               timeout_seconds=get_settings().command_timeout_seconds,
                               instance_ids=[target])
    logger.info("swarm command sent", extra={"what": what, "through": target, "command_id": command_id})
    return {"command_id": command_id, "targets": [target], "what": what}


def promote_managers(event: dict) -> dict:
    """Health gate passed: promote enough of the nodes that stay to make up the managers, through
    a manager of the swarm (one that stays, else one of the previous image's)."""
    deployment = _deployment(event)
    nodes = event["nodes"]
    current = list(nodes["new"]) + [i for i in nodes["current"] if i not in nodes["new"]]
    found = {n.instance_id: n for n in ec2.list_nodes(
        aws.client("ec2"), deployment["environment"], states=["running"],
        instance_ids=current + list(nodes["old"]))}
    promote = plans.plan_promotion(current, {i: n.swarm_role for i, n in found.items()},
                                   get_settings().node_count)
    if not promote:
        return {"command_id": None, "promoted": []}
    answered = (event.get("health") or {}).get("manager")
    through = [i for i in [answered] + current + list(nodes["old"])
               if i in found and found[i].swarm_role == "manager"]
    if not through:
        raise SwarmFailed("no running manager to promote the new nodes through")
    sent = _send(deployment, "promote", plans.promote_script([found[i].hostname for i in promote]),
                 through[0])
    return sent | {"promoted": list(promote)}


def _results(command: dict) -> list | None:
    """A command's per-target results once it has finished everywhere, else None."""
    results = ssm.invocations(aws.client("ssm"), command["command_id"])
    if len(results) < len(command["targets"]) or any(r.status not in ssm.FINAL_STATUSES for r in results):
        return None
    return results


def _failure(command: dict, results: list) -> CommandFailed | None:
    failed = [r for r in results if r.status != "Success"]
    if not failed:
        return None
    return CommandFailed("; ".join(f"swarm {command['what']} failed on {r.instance_id}: {r.status}"
                                   f" (exit {r.response_code}) {r.output.strip()[-300:]}" for r in failed))


def _finished(command: dict) -> bool:
    """Whether a command `_send` sent has finished on its target; CommandFailed if it failed."""
    results = _results(command)
    if results is None:
        return False
    failure = _failure(command, results)
    if failure:
        raise failure
    return True


def check_command(event: dict) -> dict:
    """Whether the swarm command in `command` has finished: the state passes
    {"deployment": ..., "command": <what promote_managers or leave_swarm returned>}."""
    _deployment(event)
    return event["command"] | {"done": _finished(event["command"])}


def retire_old_nodes(event: dict) -> dict:
    """Take the previous image's nodes out of the swarm, through a manager that stays."""
    deployment = _deployment(event)
    nodes = event["nodes"]
    client = aws.client("ec2")
    promoted = (event.get("promote") or {}).get("promoted") or []
    ec2.tag_swarm_role(client, promoted, "manager")  # the promotion succeeded
    if not nodes["old"]:
        return {"old": [], "command_id": None}
    found = ec2.list_nodes(client, deployment["environment"],
                           instance_ids=list(nodes["old"]) + list(nodes["current"]))
    hostnames = {n.instance_id: n.hostname for n in found if n.instance_id in nodes["old"] and n.hostname}
    # The promoted nodes are managers now, whether or not the tag just written reads back yet.
    managers = list(promoted) + [n.instance_id for n in found if n.instance_id in nodes["current"]
                                 and n.state == "running" and n.swarm_role == "manager"
                                 and n.instance_id not in promoted]
    if not managers:
        raise SwarmFailed("no manager among the nodes that stay to remove the old ones through")
    staying = {n.instance_id: n.hostname for n in found if n.instance_id in nodes["current"]}
    demote = {i: staying[i] for i in plans.surplus_managers(managers, get_settings().node_count, managers[0])
              if staying.get(i)}
    return {"old": list(nodes["old"]), "hostnames": hostnames, "demote": demote} | _send(
        deployment, "retire", plans.retire_script(list(hostnames.values()), list(demote.values())),
        managers[0])


def terminate_old_nodes(event: dict) -> dict:
    """Once they left the swarm, terminate the previous image's nodes."""
    deployment = _deployment(event)
    retire = event["retire"]
    results = _results(retire)
    if results is None:
        return retire | {"done": False}
    failure = _failure(retire, results)
    output = "\n".join(r.output for r in results)
    # Surplus managers the command made workers: the tag tells later deployments who can take joins.
    became_workers = plans.demoted(output)
    ec2.tag_swarm_role(aws.client("ec2"), [i for i, host in (retire.get("demote") or {}).items()
                                           if host in became_workers], "worker")
    if failure:
        # Nodes already out of the swarm go all the same: left running with their manager tag,
        # a later deployment could try to join or promote through them.
        left = plans.left_swarm(output)
        gone = [i for i, host in retire["hostnames"].items() if host in left]
        ec2.terminate(aws.client("ec2"), gone)
        logger.error("retire failed half-way", extra={"terminated": gone})
        raise failure
    ec2.terminate(aws.client("ec2"), retire["old"])
    logger.info("old nodes terminated", extra={"instance_ids": retire["old"],
                                               "deployment": deployment["id"]})
    return retire | {"done": True}


def remove_old_images(event: dict) -> dict:
    """Keep the newest SLIPWAY_KEEP_IMAGES images and any a live node runs; deregister the rest."""
    deployment = _deployment(event)
    settings = get_settings()
    client = aws.client("ec2")
    in_use = {n.image_id for n in ec2.list_nodes(client, deployment["environment"])}
    images = ec2.list_images(client, deployment["environment"])
    old = set(plans.images_to_remove(images, in_use, settings.keep_images))
    removed = ec2.delete_images(client, [i for i in images if i["ImageId"] in old])
    logger.info("old images removed", extra={"image_ids": sorted(old)})
    return {"removed": sorted(old), "count": removed}


# --- teardown and compensation -----------------------------------------------------------

def _scope(event: dict) -> tuple[str, str | None]:
    """(environment, deployment or None): a deployment scope when compensating a failed run,
    the whole environment when tearing down."""
    settings = get_settings()
    if "deployment" in event:
        return settings.environment, _deployment(event)["id"]
    environment = event.get("environment")
    if environment != settings.environment:
        raise InvalidInput(f"this Slipway manages environment {settings.environment!r}; "
                           f"start teardown with {{\"environment\": \"{settings.environment}\"}}")
    return environment, None


def wait_turn(event: dict) -> dict:
    """One run at a time per environment: a deploy or teardown goes on only when no run of either
    state machine that started before it is still running. Waiting is the state machine's; this
    looks once and says who is ahead (shown in the console as `queue.ahead`). A deploy still
    queued when a newer deploy has started is skipped (`queue.skip`): the newer one would replace
    it the moment it ended (SLIPWAY_SKIP_SUPERSEDED=false deploys every push in turn)."""
    state = event["run"]  # the execution's state: a deployment's, or teardown's input
    environment, _ = _scope(state)
    me, machine = event["execution"], event["state_machine"]
    settings = get_settings()
    sfn = aws.client("stepfunctions")
    running = {kind: stepfunctions.running(sfn, naming.sibling_state_machine(machine, environment, kind))
               for kind in naming.STATE_MACHINES}
    everyone = [run for runs in running.values() for run in runs]
    mine = next((run for run in everyone if run[1] == me), None) or (stepfunctions.started_at(sfn, me), me)
    ahead = [_execution_name(arn) for arn in plans.runs_ahead(mine, everyone)]
    checks = int((state.get("queue") or {}).get("checks", 0)) + 1
    answer = {"clear": not ahead, "skip": False, "ahead": ahead, "checks": checks,
              "poll_seconds": settings.poll_seconds}
    if not ahead:
        return answer
    is_deploy = machine == naming.sibling_state_machine(machine, environment, "deploy")
    candidates = plans.newer_deploys(mine, running["deploy"]) if is_deploy and settings.skip_superseded else []
    # Only for a newer run that got past "Prepare deployment": one with bad input, or that cannot
    # reach GitHub, must not cost this run its turn. Until one has, this run keeps waiting.
    for newer in candidates:
        started_with = stepfunctions.input_if_entered(sfn, newer, naming.QUEUE_STATE)
        if started_with is None:
            continue
        commit = str(started_with.get("commit") or "")
        logger.info("skipped for a newer deploy", extra={"newer": _execution_name(newer), "commit": commit})
        return {**answer, "skip": True,
                "superseded_by": {"execution": _execution_name(newer), "commit": commit}}
    logger.info("waiting for earlier runs", extra={"ahead": ahead, "checks": checks})
    # Bounded, so a run stuck ahead cannot keep this one waiting until its history is full:
    # it ends through its Catch (GitHub told, nothing to undo: it has changed nothing yet).
    if checks >= settings.queue_max_checks:
        raise QueueTimeout(f"still behind {', '.join(ahead)} after {checks} checks "
                           "(SLIPWAY_QUEUE_MAX_CHECKS); start it again once they have ended")
    return answer


def _execution_name(execution_arn: str) -> str:
    return execution_arn.split(":execution:", 1)[-1]


def leave_swarm(event: dict) -> dict:
    """Compensation, first: take this deployment's nodes out of a swarm that was there before it
    (through one of that swarm's managers), so terminating them leaves no dead member behind.
    Nothing to do when they formed a swarm of their own, or never joined one."""
    deployment = _deployment(event)
    client = aws.client("ec2")
    mine = ec2.list_nodes(client, deployment["environment"], deployment=deployment["id"])
    if not mine:
        return {"command_id": None}
    managers = [n for n in ec2.list_nodes(client, deployment["environment"], states=["running"],
                                          swarm_role="manager")
                if n.deployment != deployment["id"]]
    if not managers:
        return {"command_id": None}
    return _send(deployment, "leave", plans.retire_script([n.hostname for n in mine if n.hostname]),
                 managers[0].instance_id)


def terminate_nodes(event: dict) -> dict:
    environment, deployment = _scope(event)
    nodes = ec2.list_nodes(aws.client("ec2"), environment, deployment=deployment)
    ids = [n.instance_id for n in nodes]
    ec2.terminate(aws.client("ec2"), ids)
    logger.info("terminating nodes", extra={"instance_ids": ids, "scope": deployment or environment})
    return {"instance_ids": ids, "poll_seconds": get_settings().poll_seconds}


def check_nodes_gone(event: dict) -> dict:
    """Are the nodes being removed terminated? Counts its checks in `removal` (where both state
    machines keep its answer) and gives up after SLIPWAY_NODE_READY_ATTEMPTS of them, so an
    instance stuck shutting down fails the run, naming it, instead of holding it forever."""
    environment, deployment = _scope(event)
    remaining = ec2.list_nodes(aws.client("ec2"), environment, deployment=deployment,
                               states=ec2.LIVE_STATES + ["shutting-down"])
    checks = int((event.get("removal") or {}).get("checks", 0)) + 1
    if remaining and checks >= get_settings().node_ready_attempts:
        raise TeardownIncomplete(f"nodes not terminated after {checks} checks: "
                                 f"{sorted(n.instance_id for n in remaining)}")
    return {"done": not remaining, "remaining": len(remaining), "checks": checks}


def delete_network(event: dict) -> dict:
    environment, deployment = _scope(event)
    removed = ec2.delete_network(aws.client("ec2"), environment, deployment)
    removed["launch-template"] = ec2.delete_launch_templates(aws.client("ec2"), environment, deployment)
    swarm_left = ec2.list_nodes(aws.client("ec2"), environment)
    # A failed deployment that initialised a swarm of its own stored that swarm's tokens: its nodes
    # are gone, so the tokens must go too, or the next deployment would join the previous swarm
    # with them (and fail). Likewise when no node is left at all.
    own_swarm = bool(deployment and (event.get("swarm") or {}).get("initialised"))
    parameters = 0
    if not swarm_left or own_swarm:
        parameters = ssm.delete_tree(aws.client("ssm"), naming.swarm_path(environment))
    logger.info("network removed", extra={"removed": removed, "parameters": parameters})
    return {"removed": removed, "parameters": parameters}


def delete_images(event: dict) -> dict:
    environment, _ = _scope(event)
    client = aws.client("ec2")
    return {"images": ec2.delete_images(client, ec2.list_images(client, environment))}


def confirm_teardown(event: dict) -> dict:
    environment, _ = _scope(event)
    left = {k: v for k, v in ec2.count_tagged(aws.client("ec2"), environment).items() if v}
    if left:
        raise TeardownIncomplete(f"still tagged for {environment}: {left}")
    return {"environment": environment, "leftover": {}}


# --- schedule -----------------------------------------------------------------------------

def prune_comment(environment: str) -> str:
    return f"slipway prune {environment}"


def prune() -> dict:
    """`docker system prune` on every node of the environment, selected by tag (no id list)."""
    settings = get_settings()
    if not ec2.any_node(aws.client("ec2"), settings.environment):
        logger.info("prune: no node is tagged for the environment; nothing sent")
        return {"command_id": None}
    command_id = ssm.run_shell(
        aws.client("ssm"),
        commands=plans.prune_script(settings.prune_filter, settings.prune_volumes),
        comment=prune_comment(settings.environment),
        timeout_seconds=settings.command_timeout_seconds,
        targets=[{"Key": f"tag:{naming.TAG_ENVIRONMENT}", "Values": [settings.environment]},
                 {"Key": f"tag:{naming.TAG_ROLE}", "Values": ["node"]}],
        max_concurrency=settings.prune_max_concurrency,
        max_errors=settings.prune_max_errors,
        log_group=f"/slipway/{settings.environment}/prune",
    )
    logger.info("prune sent", extra={"command_id": command_id})
    return {"command_id": command_id}


def record_prune(event: dict) -> dict:
    """On SSM's "Command Status-change Notification": log and measure what a prune did per node.

    Runs once per finished command (not per node, not sleeping); other commands are ignored.
    """
    settings = get_settings()
    detail = event.get("detail") or {}
    command_id = detail.get("command-id")
    if not command_id:
        return {"ignored": "no command-id"}
    comment = ssm.command_comment(aws.client("ssm"), command_id)
    if comment != prune_comment(settings.environment):
        return {"ignored": "not a prune of this environment"}
    results = plans.prune_results(ssm.invocations(aws.client("ssm"), command_id))
    for result in results:
        if result.error:
            logger.error("prune failed on a node", extra={"command_id": command_id,
                                                          "instance_id": result.instance_id,
                                                          "error": result.error})
        else:
            logger.info("prune done on a node", extra={"command_id": command_id,
                                                       "instance_id": result.instance_id,
                                                       "reclaimed_bytes": result.reclaimed_bytes})
    reclaimed = sum(r.reclaimed_bytes or 0 for r in results)
    failed = [r.instance_id for r in results if r.error]
    metrics.add_metric(name="PruneReclaimedBytes", unit=MetricUnit.Bytes, value=reclaimed)
    metrics.add_metric(name="PruneNodesSucceeded", unit=MetricUnit.Count, value=len(results) - len(failed))
    metrics.add_metric(name="PruneNodesFailed", unit=MetricUnit.Count, value=len(failed))
    logger.info("prune recorded", extra={"command_id": command_id, "status": detail.get("status"),
                                         "nodes": len(results), "reclaimed_bytes": reclaimed,
                                         "failed": failed})
    return {"command_id": command_id, "status": detail.get("status"), "nodes": len(results),
            "reclaimed_bytes": reclaimed, "failed": failed,
            "per_node": {r.instance_id: r.reclaimed_bytes for r in results}}
