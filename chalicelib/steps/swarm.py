"""'Form swarm' and the promotion: the new nodes join the swarm (or initialise one) one SSM command
at a time; once the health gate passed, enough of them are promoted to make up the managers."""

from __future__ import annotations

from chalicelib import aws, naming, plans, scripts
from chalicelib.aws import ec2, ssm
from chalicelib.errors import SwarmFailed
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.steps.common import deployment_of, failure, finished, send, tags_for
from chalicelib.steps.registry import task
from chalicelib.steps.state import CheckCommandInput, Command, DeployRun, Swarm


def join_token_parameter(environment: str, role: str) -> str:
    """The SSM parameter holding the swarm's join token for `role` (manager or worker)."""
    return naming.swarm_parameter(environment, f"{role}-token")


def swarm_state(
    *,
    action: str,
    joined: list[str],
    managers: list[str],
    command_id: str | None,
    targets: list[str],
    role: str | None,
    initialised: bool,
    done: bool | None = None,
    complete: bool | None = None,
) -> Swarm:
    """`$.swarm`, the one way to build it: what is joined, and the command under way."""
    swarm = Swarm(
        action=action,
        joined=joined,
        managers=managers,
        command_id=command_id,
        targets=targets,
        role=role,
        initialised=initialised,
    )
    if done is not None:
        swarm["done"] = done
    if complete is not None:
        swarm["complete"] = complete
    return swarm


@task("Form swarm")
def form_swarm(event: DeployRun) -> Swarm:
    deployment = deployment_of(event)
    settings = get_settings()
    swarm = event.get("swarm")
    joined = list(swarm.get("joined", [])) if swarm else []
    new_managers = list(swarm.get("managers", [])) if swarm else []
    initialised = bool(swarm and swarm.get("initialised"))
    environment = deployment["environment"]
    nodes = event["nodes"]
    # Members from before this deployment (the previous image's nodes and those kept), unless this
    # deployment initialised a swarm of its own (its stored tokens are for that one).
    earlier = [] if initialised else ([i for i in nodes["current"] if i not in nodes["new"]] + list(nodes["old"]))
    member_ids = earlier + joined
    managers = (
        {
            n.instance_id: n
            for n in ec2.list_nodes(
                aws.client("ec2"), environment, states=["running"], instance_ids=member_ids, swarm_role="manager"
            )
        }
        if member_ids
        else {}
    )
    addresses = [managers[i].private_ip for i in member_ids if i in managers]
    # Tokens this run's own init just stored may not read back yet: that is worth a retry, not a new swarm.
    tokens = (
        {
            role: ssm.get_secure(aws.client("ssm"), join_token_parameter(environment, role), just_put=initialised)
            for role in ("manager", "worker")
        }
        if addresses
        else {}
    )
    step = plans.plan_swarm(
        nodes["new"],
        joined,
        new_managers,
        addresses,
        bool(tokens) and all(tokens.values()),
        settings.node_count,
        established=any(i in managers for i in earlier),
    )
    if step.action == "none":
        return swarm_state(
            action="none",
            joined=joined,
            managers=new_managers,
            command_id=None,
            targets=[],
            role=None,
            initialised=initialised,
        )
    if step.action == "init":
        commands = scripts.init_script()
    else:
        token = tokens[step.role]
        if not token:  # plan_swarm joins only when both tokens are known
            raise SwarmFailed(f"no {step.role} join token to join with")
        commands = scripts.join_script(token, *step.managers)
    command_id = ssm.run_shell(
        aws.client("ssm"),
        commands=commands,
        comment=f"slipway swarm {step.action} {deployment['id']}",
        timeout_seconds=settings.command_timeout_seconds,
        instance_ids=list(step.targets),
    )
    logger.info("swarm command sent", extra={"action": step.action, "role": step.role, "targets": step.targets})
    return swarm_state(
        action=step.action,
        joined=joined,
        managers=new_managers,
        command_id=command_id,
        targets=list(step.targets),
        role=step.role,
        initialised=initialised or step.action == "init",
    )


@task("Check swarm command")
def check_swarm(event: DeployRun) -> Swarm:
    deployment = deployment_of(event)
    swarm = event["swarm"]
    command_id = swarm["command_id"]
    if command_id is None:
        raise SwarmFailed("no swarm command to check: 'Swarm command sent?' lets only one through")
    results = finished(command_id, swarm["targets"])
    if results is None:
        pending: Swarm = {**swarm, "done": False}
        return pending
    failed = [r for r in results if r.status != "Success"]
    if failed:
        raise SwarmFailed(
            "; ".join(f"{r.instance_id}: swarm {swarm['action']} {r.status} (exit {r.response_code})" for r in failed)
        )
    if swarm["action"] == "init":
        tokens = scripts.parse_tokens(results[0].output)
        if set(tokens) != {"manager", "worker"}:
            raise SwarmFailed(f"{results[0].instance_id}: swarm init printed no join tokens")
        for role, token in tokens.items():
            ssm.put_secure(
                aws.client("ssm"),
                join_token_parameter(deployment["environment"], role),
                token,
                tags_for(deployment, "swarm-token"),
            )
    joined_as = swarm["role"]
    if joined_as is None:
        raise SwarmFailed("the swarm command names no role for its targets")
    # The role on the instance tells later deployments which nodes can take joins.
    ec2.tag_swarm_role(aws.client("ec2"), swarm["targets"], joined_as)
    joined = swarm["joined"] + swarm["targets"]
    managers = swarm["managers"] + (swarm["targets"] if joined_as == "manager" else [])
    return swarm_state(
        action=swarm["action"],
        joined=joined,
        managers=managers,
        command_id=command_id,
        targets=swarm["targets"],
        role=swarm["role"],
        initialised=swarm.get("initialised", False),
        done=True,
        complete=set(joined) >= set(event["nodes"]["new"]),
    )


@task("Promote new managers")
def promote_managers(event: DeployRun) -> Command:
    """Health gate passed: promote enough of the nodes that stay to make up the managers, through
    a manager of the swarm (one that stays, else one of the previous image's)."""
    deployment = deployment_of(event)
    nodes = event["nodes"]
    current = list(nodes["new"]) + [i for i in nodes["current"] if i not in nodes["new"]]
    found = {
        n.instance_id: n
        for n in ec2.list_nodes(
            aws.client("ec2"), deployment["environment"], states=["running"], instance_ids=current + list(nodes["old"])
        )
    }
    retiring = sum(1 for i in nodes["old"] if i in found and found[i].swarm_role == "manager")
    promote = plans.plan_promotion(
        current, {i: n.swarm_role for i, n in found.items()}, get_settings().node_count, retiring
    )
    if not promote:
        return Command(command_id=None, promoted=[])
    health = event.get("health")
    answered = health.get("manager") if health else None
    through = [i for i in [answered] + current + list(nodes["old"]) if i in found and found[i].swarm_role == "manager"]
    if not through:
        raise SwarmFailed("no running manager to promote the new nodes through")
    sent = send(deployment, "promote", scripts.promote_script([found[i].hostname for i in promote]), through[0])
    sent["promoted"] = list(promote)
    return sent


@task("Check promotion", "Check nodes left the swarm")
def check_command(event: CheckCommandInput) -> Command:
    """Whether the swarm command in `command` has finished (promote, or the undo's leave);
    CommandFailed if it failed anywhere."""
    deployment_of(event)
    command = event["command"]
    command_id, targets, what = command["command_id"], command.get("targets"), command.get("what")
    if not (command_id and targets and what):
        raise SwarmFailed(f"no command to check: {command!r}; the Choice before this lets only a sent one through")
    results = finished(command_id, targets)
    if results is not None:
        error = failure(what, results)
        if error:
            raise error
    answer: Command = {**command, "done": results is not None}
    return answer
