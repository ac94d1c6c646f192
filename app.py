"""Slipway's Chalice app: wiring only. Each handler parses, lets chalicelib decide, and answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import Chalice, CloudWatchEvent, ConvertToMiddleware, Response

from chalicelib import intake, steps
from chalicelib.aws import transient_errors
from chalicelib.observability import logger, metrics
from chalicelib.settings import drift_schedule, prune_schedule

app = Chalice(app_name="slipway")
app.register_middleware(ConvertToMiddleware(logger.inject_lambda_context(clear_state=True)))
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "http")
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "cloudwatch")

# Every content type reaches the handler, so that GitHub's default (form encoding) and anything
# else is refused with a 415 that says what to change, instead of Chalice's generic one.
WEBHOOK_CONTENT_TYPES = ["*/*"]
# Read when Chalice loads the app to deploy it; see settings.prune_schedule.
PRUNE_SCHEDULE = prune_schedule()
DRIFT_SCHEDULE = drift_schedule()


@app.route("/github/webhook", methods=["POST"], content_types=WEBHOOK_CONTENT_TYPES)
def github_webhook() -> Response:
    request = app.current_request
    if request is None:  # Chalice sets it for every HTTP invocation
        raise RuntimeError("no current request")
    raw = request.raw_body if isinstance(request.raw_body, bytes) else b""
    answer = intake.receive(request.headers, raw, request.headers.get("content-type"))
    return Response(body=answer.body, status_code=answer.status)


@app.schedule(PRUNE_SCHEDULE, name="prune")
def prune(event: CloudWatchEvent) -> dict[str, str | None]:
    return steps.prune()


# The same prune on demand: `aws lambda invoke --function-name slipway-<stage>-prune_now
# --payload '{}' out.json` (the scheduled function expects EventBridge's event shape).
@app.lambda_function(name="prune_now")
def prune_now(event: dict[str, Any], context: object) -> dict[str, str | None]:
    return steps.prune()


# SSM emits one event when a command finishes; the prune's results are recorded from it, so no
# Lambda waits for the nodes. The pattern lets only prune commands through.
@app.on_cw_event(
    {
        "source": ["aws.ssm"],
        "detail-type": ["EC2 Command Status-change Notification"],
        "detail": {
            "document-name": ["AWS-RunShellScript"],
            "parameters": {"commands": [{"prefix": "docker system prune"}]},
        },
    },
    name="record_prune",
)
def record_prune(event: CloudWatchEvent) -> dict[str, Any]:
    return steps.record_prune(event.to_dict())


# A deploy stopped from the console, or timed out, ran none of its own states that tell GitHub:
# Step Functions' status-change event does, so the commit does not stay "pending".
@app.on_cw_event(
    {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": ["ABORTED", "TIMED_OUT"]},
    },
    name="report_stopped_run",
)
def report_stopped_run(event: CloudWatchEvent) -> Mapping[str, object]:
    return steps.report_stopped_run(event.to_dict())


# A node that stops serving between pushes is replaced without one: EC2's state change of any
# instance reaches `heal`, which starts the deploy machine for the last deployed commit when the
# instance is one of this environment's nodes and fewer than SLIPWAY_NODE_COUNT run.
@app.on_cw_event(
    {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["stopping", "stopped", "shutting-down", "terminated"]},
    },
    name="heal",
)
def heal(event: CloudWatchEvent) -> dict[str, Any]:
    return steps.heal_on_instance_event(event.to_dict())


# So that a lost event is not a lost node: fewer running, swarm-Ready nodes than wanted heals too.
@app.schedule(DRIFT_SCHEDULE, name="drift_check")
def drift_check(event: CloudWatchEvent) -> dict[str, Any]:
    return steps.drift_check(event.to_dict())


# One Lambda per state-machine Task. The ASL refers to each as ${<CamelName>FunctionArn}.
TASKS: dict[str, Callable[[Any], Any]] = {
    "prepare": steps.prepare,
    "wait_turn": steps.wait_turn,
    "find_image": steps.find_image,
    "start_bake": steps.start_bake,
    "check_bake": steps.check_bake,
    "ensure_network": steps.ensure_network,
    "ensure_ingress": steps.ensure_ingress,
    "launch_nodes": steps.launch_nodes,
    "check_nodes": steps.check_nodes,
    "form_swarm": steps.form_swarm,
    "check_swarm": steps.check_swarm,
    "start_health_check": steps.start_health_check,
    "evaluate_health": steps.evaluate_health,
    "promote_managers": steps.promote_managers,
    "check_command": steps.check_command,
    "read_stack": steps.read_stack,
    "inspect_stack": steps.inspect_stack,
    "update_stack": steps.update_stack,
    "check_services": steps.check_services,
    "register_targets": steps.register_targets,
    "check_targets": steps.check_targets,
    "deregister_old_targets": steps.deregister_old_targets,
    "retire_old_nodes": steps.retire_old_nodes,
    "terminate_old_nodes": steps.terminate_old_nodes,
    "remove_old_images": steps.remove_old_images,
    "leave_swarm": steps.leave_swarm,
    "terminate_nodes": steps.terminate_nodes,
    "check_nodes_gone": steps.check_nodes_gone,
    "delete_load_balancer": steps.delete_load_balancer,
    "delete_network": steps.delete_network,
    "delete_images": steps.delete_images,
    "confirm_teardown": steps.confirm_teardown,
    "release_lease": steps.release_lease,
    "report_outcome": steps.report_outcome,
}


def _register(name: str, step: Callable[[Any], Any]) -> Any:
    step = transient_errors(step)

    def handler(event: Any, context: object) -> Any:
        return step(event)

    handler.__name__ = name
    handler.__doc__ = step.__doc__
    return app.lambda_function(name=name)(handler)


for _name, _step in TASKS.items():
    globals()[_name] = _register(_name, _step)
