"""The webhook route as API Gateway calls it, on the emulator: every refusal, ping, push."""

import json
import threading

import pytest

from slipway import github
from slipway.harness import FOLLOW_POLL, commit_id, deliver_push


def post(emu, body: bytes, **header_overrides):
    headers = github.delivery_headers(emu.webhook_secret, body)
    for key, value in header_overrides.items():
        name = key.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return emu.deliver(headers, body)


def executions(emu):
    sfn = emu.client("stepfunctions")
    return sfn.list_executions(stateMachineArn=emu.arns["deploy"])["executions"]


PUSH = github.encode(github.push_payload(after="d6fde92930d4715a2b49857d24b940956b26d2d3"))


@pytest.mark.parametrize(
    "overrides,status",
    [
        ({"X-Hub-Signature-256": None}, 401),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401),
        ({"X-Hub-Signature-256": "sha1=" + "0" * 40}, 401),
        ({"X-Hub-Signature-256": "sha256=zz"}, 401),
        ({"X-GitHub-Event": None}, 400),
        ({"X-GitHub-Delivery": None}, 400),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "text/plain"}, 415),
    ],
)
def test_refusals_start_nothing(emulator, overrides, status):
    code, answer = post(emulator, PUSH, **overrides)
    assert code == status and answer["error"]
    assert executions(emulator) == []


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_other_content_types_are_told_to_use_json(emulator, content_type):
    code, answer = post(emulator, PUSH, **{"Content-Type": content_type})
    assert code == 415 and "application/json" in answer["error"]


def test_oversized_body_is_refused_before_hashing(emulator):
    body = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    code, _ = post(emulator, body)
    assert code == 413


def test_ping_answers_200_with_the_hook_id(emulator):
    body = json.dumps({"zen": "Design for failure.", "hook_id": 42}).encode()
    code, answer = post(emulator, body, **{"X-GitHub-Event": "ping"})
    assert (code, answer) == (200, {"pong": True, "hook_id": 42})


def test_push_to_another_branch_is_ignored(emulator):
    code, answer = deliver_push(emulator, commit_id(), ref="refs/heads/feature")
    assert code == 202 and "is not deployed" in answer["ignored"]
    assert executions(emulator) == []


def test_signed_push_to_main_starts_one_execution_with_a_small_input(emulator):
    commit = commit_id()
    code, answer = deliver_push(emulator, commit, delivery="delivery-abc")
    assert code == 202
    assert answer["execution_arn"].split(":")[-1].startswith(commit[:12])
    sfn = emulator.client("stepfunctions")
    described = sfn.describe_execution(executionArn=answer["execution_arn"])
    assert json.loads(described["input"]) == {
        "repository": "example/app",
        "ref": "refs/heads/main",
        "commit": commit,
        "pusher": "octocat",
        "delivery_id": "delivery-abc",
    }


def test_redelivery_answers_with_the_same_execution_and_starts_nothing(emulator):
    commit = commit_id()
    _, first = deliver_push(emulator, commit, delivery="delivery-same")
    code, again = deliver_push(emulator, commit, delivery="delivery-same")
    assert code == 202 and again["execution_arn"] == first["execution_arn"]
    assert len(executions(emulator)) == 1


def test_redelivery_after_the_execution_finished_still_starts_nothing(emulator):
    from slipway.follow import follow

    body = github.encode(github.push_payload(after=commit_id()))
    headers = github.delivery_headers(emulator.webhook_secret, body, delivery="delivery-late")
    _, first = emulator.deliver(dict(headers), body)
    follow(emulator.client("stepfunctions"), first["execution_arn"], say=None, poll=FOLLOW_POLL)
    code, again = emulator.deliver(dict(headers), body)
    assert code == 202 and again["execution_arn"] == first["execution_arn"]
    assert len(executions(emulator)) == 1


def test_githubs_documented_signature_vector_passes_the_route(make_emulator):
    # GitHub's example: secret "It's a Secret to Everybody", payload "Hello, World!".
    emu = make_emulator(webhook_secret="It's a Secret to Everybody")
    headers = github.delivery_headers("unused", b"Hello, World!", event="ping")
    headers["X-Hub-Signature-256"] = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    code, answer = emu.deliver(headers, b"Hello, World!")
    assert code == 400 and answer["error"] == "body is not JSON"  # verified, then parsed


def test_two_hooks_delivering_one_push_start_one_deployment(emulator):
    body = github.encode(github.push_payload(after=commit_id()))
    first = emulator.deliver(github.delivery_headers(emulator.webhook_secret, body), body)
    second = emulator.deliver(github.delivery_headers(emulator.webhook_secret, body), body)
    assert first[0] == second[0] == 202
    assert first[1]["execution_arn"] == second[1]["execution_arn"]
    assert len(executions(emulator)) == 1


def test_five_simultaneous_deliveries_start_one_execution(emulator):
    import threading

    body = github.encode(github.push_payload(after=commit_id()))
    headers = github.delivery_headers(emulator.webhook_secret, body)
    barrier = threading.Barrier(5)
    answers = []

    def send():
        barrier.wait()
        answers.append(emulator.deliver(dict(headers), body))

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [code for code, _ in answers] == [202] * 5
    assert len({a["execution_arn"] for _, a in answers}) == 1
    assert len(executions(emulator)) == 1


def test_repository_outside_the_allow_list_gets_403(make_emulator):
    emu = make_emulator(extra_environment={"SLIPWAY_REPOSITORIES": "acme/site"})
    code, answer = deliver_push(emu, commit_id())
    assert code == 403 and "example/app" in answer["error"]
    assert executions(emu) == []


def test_no_secret_configured_fails_closed_with_503(emulator):
    emulator.client("ssm").delete_parameter(Name=f"/slipway/{emulator.environment}/github-webhook-secret")
    from chalicelib import secrets

    secrets.reset()
    code, answer = deliver_push(emulator, commit_id())
    assert code == 503
    assert executions(emulator) == []


def test_previous_secret_still_verifies_during_rotation(emulator):
    ssm = emulator.client("ssm")
    name = f"/slipway/{emulator.environment}/github-webhook-secret"
    ssm.put_parameter(Name=name + "-previous", Value=emulator.webhook_secret, Type="SecureString")
    ssm.put_parameter(Name=name, Value="rotated", Type="SecureString", Overwrite=True)
    from chalicelib import secrets

    secrets.reset()
    assert deliver_push(emulator, commit_id())[0] == 202
    assert deliver_push(emulator, commit_id(), secret="rotated")[0] == 202
    assert deliver_push(emulator, commit_id(), secret="never")[0] == 401


def test_a_warm_delivery_reads_no_parameter_and_makes_one_aws_call(emulator):
    from chalicelib import aws
    from slipway.harness import CallRecorder

    assert deliver_push(emulator, commit_id())[0] == 202  # warm: the secrets are cached now
    recorder = CallRecorder(threading.current_thread())  # not the started execution's first steps
    for service in ("ssm", "stepfunctions"):
        aws.client(service).meta.events.register(f"provide-client-params.{service}.*", recorder)
    assert deliver_push(emulator, commit_id())[0] == 202
    assert recorder.calls == ["StartExecution"]


def emitted_metrics(text: str) -> list[dict]:
    """The CloudWatch EMF documents the route printed: {metric: value, dimension: value, ...}."""
    docs = []
    for line in text.splitlines():
        if line.startswith('{"_aws"'):
            doc = json.loads(line)
            names = [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
            dims = [k for d in doc["_aws"]["CloudWatchMetrics"] for group in d["Dimensions"] for k in group]
            docs.append({k: doc[k] for k in names + dims})
    return docs


def test_metrics_count_accepted_ignored_by_reason_and_refused_by_status(emulator, capsys):
    capsys.readouterr()
    deliver_push(emulator, commit_id())
    deliver_push(emulator, commit_id(), ref="refs/heads/feature")
    deliver_push(emulator, commit_id(), secret="wrong")
    docs = emitted_metrics(capsys.readouterr().out)
    assert [{k: v for k, v in d.items() if k != "service"} for d in docs] == [
        {"Accepted": [1.0]},
        {"Ignored": [1.0], "reason": "ref"},
        {"Refused": [1.0], "status": "401"},
    ]


def test_logs_carry_the_delivery_id_and_never_the_body(emulator):
    import io
    import logging

    from chalicelib.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_handler.formatter)  # Powertools' JSON formatter
    logger.addHandler(handler)
    logger.setLevel("INFO")
    try:
        secret_marker = "a-value-only-in-the-body"
        body = github.encode(github.push_payload(after=commit_id(), pusher=secret_marker))
        emulator.deliver(github.delivery_headers(emulator.webhook_secret, body, delivery="d-logs"), body)
    finally:
        logger.setLevel("WARNING")
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    accepted = [line for line in lines if line["message"] == "deployment accepted"]
    assert accepted and accepted[0]["delivery_id"] == "d-logs" and accepted[0]["execution"]
    assert not any(secret_marker in json.dumps(line) for line in lines)


def test_a_lambda_running_meanwhile_leaves_the_webhook_its_log_keys_and_metrics(emulator):
    # On AWS each invocation has its own process; in the emulator the Lambdas the interpreter runs
    # on moto's threads share the Logger and Metrics with the webhook, and one's clear_state once
    # dropped the webhook's delivery_id from "deployment accepted" (1 run in CI).
    import threading

    from chalicelib.observability import logger, metrics

    logger.append_keys(delivery_id="d-main")
    metrics.add_metric(name="Accepted", unit="Count", value=1)

    def step() -> None:
        logger.clear_state()
        logger.append_keys(execution="other")
        metrics.add_metric(name="HealsStarted", unit="Count", value=1)
        metrics.clear_metrics()

    thread = threading.Thread(target=step)
    thread.start()
    thread.join()
    keys = logger.get_current_keys()
    assert keys["delivery_id"] == "d-main" and keys.get("execution") is None
    assert list(metrics.provider.metric_set) == ["Accepted"]
    metrics.clear_metrics()


# --- hostile but correctly signed deliveries (issue 16) -------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 1_000 + b"]" * 1_000,
    ],
)
def test_a_deeply_nested_body_is_a_400_and_starts_nothing(emulator, body):
    # Given a correctly signed body of JSON nested far deeper than any GitHub event
    # When it is delivered
    code, answer = post(emulator, body)
    # Then it is refused as malformed (never a 500), and nothing starts
    assert code == 400 and answer["error"] in (
        "body is nested too deeply to be a GitHub event",
        "body is not a JSON object",
        "push payload lacks ref, after or repository",
    )
    assert executions(emulator) == []


def test_a_push_naming_a_repository_github_never_allows_is_a_400_naming_the_field(emulator):
    payload = github.push_payload(after=commit_id())
    payload["repository"]["full_name"] = "a-b/c;rm -rf ~"
    code, answer = post(emulator, github.encode(payload))
    assert code == 400 and answer["error"].startswith("repository.full_name name must be")
    assert executions(emulator) == []


def test_a_push_with_a_100000_character_pusher_starts_a_run_with_the_name_cut(emulator):
    # Given a signed push whose pusher.name is 100,000 characters
    body = github.encode(github.push_payload(after=commit_id(), pusher="p" * 100_000))
    # When it is delivered
    code, answer = post(emulator, body)
    # Then the run starts, with a small input whose pusher is cut to GitHub's longest name
    assert code == 202
    described = emulator.client("stepfunctions").describe_execution(executionArn=answer["execution_arn"])
    assert len(described["input"]) < 1024
    assert json.loads(described["input"])["pusher"] == "p" * 255


@pytest.mark.parametrize("delivery", ["x" * 500, "///", "a b"])
def test_a_malformed_delivery_id_is_a_400_and_starts_nothing(emulator, delivery):
    code, answer = post(emulator, PUSH, **{"X-GitHub-Delivery": delivery})
    assert code == 400 and answer["error"].startswith("X-GitHub-Delivery must be a GUID")
    assert executions(emulator) == []
