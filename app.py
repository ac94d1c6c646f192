"""Slipway's Chalice app: wiring only. Each handler parses, lets chalicelib decide, and answers.

Every Lambda loads this file, so it imports no phase: each handler imports its own when first
invoked, and a cold start pays for its own work only (bench/webhook.py measures it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import Chalice, CloudWatchEvent, ConvertToMiddleware, Response

from chalicelib.aws import transient_errors
from chalicelib.observability import logger, metrics
from chalicelib.settings import drift_schedule, prune_schedule
from chalicelib.steps.index import TASK_MODULES
from chalicelib.steps.registry import load

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
    from chalicelib import intake  # the webhook's own: the task Lambdas never import it

    raw = request.raw_body if isinstance(request.raw_body, bytes) else b""
    answer = intake.receive(request.headers, raw, request.headers.get("content-type"))
    return Response(body=answer.body, status_code=answer.status)


@app.schedule(PRUNE_SCHEDULE, name="prune")
def prune(event: CloudWatchEvent) -> dict[str, str | None]:
    from chalicelib.steps import prune as phase  # each handler imports its own phase only

    return phase.prune()


# The same prune on demand: `aws lambda invoke --function-name slipway-<stage>-prune_now
# --payload '{}' out.json` (the scheduled function expects EventBridge's event shape).
@app.lambda_function(name="prune_now")
def prune_now(event: dict[str, Any], context: object) -> dict[str, str | None]:
    from chalicelib.steps import prune as phase

    return phase.prune()


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
    from chalicelib.steps import prune as phase

    return phase.record_prune(event.to_dict())


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
    from chalicelib.steps import report as phase

    return phase.report_stopped_run(event.to_dict())


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
    from chalicelib.steps import heal as phase

    return phase.heal_on_instance_event(event.to_dict())


# So that a lost event is not a lost node: fewer running, swarm-Ready nodes than wanted heals too.
@app.schedule(DRIFT_SCHEDULE, name="drift_check")
def drift_check(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.steps import heal as phase

    return phase.drift_check(event.to_dict())


# One Lambda per state-machine Task, named as its step (the ASL's ${<CamelName>FunctionArn}). A
# step is found by the console name of its state (@task in chalicelib/steps/); index.py, generated
# from those, says which phase holds it, imported on the Lambda's first invocation only.
def _register(name: str, module: str) -> Any:
    step: Callable[[Any], Any] | None = None

    def handler(event: Any, context: object) -> Any:
        nonlocal step
        if step is None:
            step = transient_errors(load(module, name))
        return step(event)

    handler.__name__ = name
    return app.lambda_function(name=name)(handler)


for _name, _module in TASK_MODULES.items():
    globals()[_name] = _register(_name, _module)
