"""1,000+ random mutations of a delivery's body and headers: the route answers every one with a
deliberate status (never a 5xx other than the fail-closed 503, never an unhandled exception), and
every execution it starts has a small input that the pipeline's own rules accept."""

import json
import random

from chalicelib import deploy_input
from slipway import github
from slipway.harness import commit_id

ALLOWED = {200, 202, 400, 401, 403, 413, 415}
# Every field of a valid execution input at its longest is well under this; Step Functions' own
# limit is 256 KiB.
MAX_INPUT_BYTES = 4096
HUGE = 100_000


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 2:
            del data[pos : pos + rng.randint(1, 32)]
        else:
            data[pos:pos] = rng.choice([b"null", b"[]", b"{}", b'"', b"\\u0000", b"1e999", b"\xff"])
    return bytes(data)


def mutate_payload(rng: random.Random, payload: dict) -> dict:
    """Structural mutations that keep JSON valid, so they pass the signature and reach the parser."""
    payload = json.loads(json.dumps(payload))
    key = rng.choice(["ref", "after", "before", "repository", "pusher", "deleted", "commits", "head_commit"])
    payload[key] = rng.choice(
        [
            None,
            0,
            -1,
            1.5,
            True,
            "",
            "x" * 300,
            [],
            {},
            ["a"],
            {"full_name": 3},
            "refs/heads/main",
            "0" * 40,
            "g" * 40,
            {"name": None},
        ]
    )
    if rng.random() < 0.3:
        oversize(rng, payload)
    if rng.random() < 0.2:
        payload = rng.choice([[], "string", 7, None, [payload]])
    return payload


def oversize(rng: random.Random, payload: dict) -> str:
    """A field that GitHub bounds, made huge or hostile: a valid push otherwise. Returns its name."""
    field = rng.choice(["pusher", "full_name", "ref", "after", "before", "message"])
    value = rng.choice(
        [
            "x" * HUGE,
            "😀" * (HUGE // 4),
            "a-b/c;rm -rf ~",
            "\x00" * 300,
            "refs/heads/" + "m" * 300,
            "refs/heads/a..b",
            "refs/heads/main\n",
            "o" * 40 + "/app",
            "\ud800",
        ]
    )
    if field == "pusher" and isinstance(payload.get("pusher"), dict):
        payload["pusher"]["name"] = value
    elif field == "full_name" and isinstance(payload.get("repository"), dict):
        payload["repository"]["full_name"] = value
    elif field == "message" and isinstance(payload.get("head_commit"), dict):
        payload["head_commit"]["message"] = value
    else:
        payload[field] = value
    return field


def nested(rng: random.Random, payload: dict) -> bytes:
    """Arrays or objects nested 1,000 to 100,000 levels deep: the whole body, or one field of a push."""
    depth = rng.choice([900, 1_000, 1_001, 5_000, 100_000, rng.randint(500, 20_000)])
    deep = b"[" * depth + b"]" * depth if rng.random() < 0.5 else b'{"a":' * depth + b"0" + b"}" * depth
    if rng.random() < 0.5:
        return deep
    return b'{"deep":' + deep + b"," + github.encode(payload)[1:]


HEADER_CHOICES = {
    "X-GitHub-Event": [None, "", "push", "ping", "issues", "push\x00", "😀", "x" * 1000],
    "X-GitHub-Delivery": [None, "", "a", "///", "x" * 500, "😀", "\t"],
    "Content-Type": [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "APPLICATION/JSON",
    ],
    "X-Hub-Signature-256": [None, "", "sha256=", "sha1=abc", "sha256=" + "z" * 64, "😀" * 10],
}


def test_random_deliveries_never_crash_the_route(emulator):
    rng = random.Random(20261128)
    base = github.push_payload(after=commit_id())
    outcomes, hostile = {}, {}
    for i in range(1200):
        kind = i % 4
        if kind == 3:  # signed, and hostile: nested beyond the parser's depth, or a field made huge
            if rng.random() < 0.5:
                body = nested(rng, base)
            else:
                payload = json.loads(json.dumps(base))
                if oversize(rng, payload) == "pusher":  # deploys: a new commit starts its own execution
                    payload["after"] = commit_id()
                body = json.dumps(payload).encode()
            headers = github.delivery_headers(emulator.webhook_secret, body)
        elif kind == 0:  # signed but mutated structure
            body = json.dumps(mutate_payload(rng, base)).encode()
            headers = github.delivery_headers(emulator.webhook_secret, body)
        elif kind == 1:  # mutated bytes, signed after mutation (reaches the parser)
            body = mutate_bytes(rng, github.encode(base))
            headers = github.delivery_headers(emulator.webhook_secret, body)
        else:  # valid body, mutated headers
            body = github.encode(base)
            headers = github.delivery_headers(emulator.webhook_secret, body)
            for name, choices in HEADER_CHOICES.items():
                if rng.random() < 0.4:
                    value = rng.choice(choices)
                    if value is None:
                        headers.pop(name, None)
                    else:
                        headers[name] = value
        code, answer = emulator.deliver(headers, body)
        assert code < 500 and code in ALLOWED, (code, answer, headers, body[:200])
        assert isinstance(answer, dict)
        assert len(json.dumps(answer)) < 2048, (code, body[:200])  # no answer echoes a huge field
        outcomes[code] = outcomes.get(code, 0) + 1
        if kind == 3:
            hostile[code] = hostile.get(code, 0) + 1
    # The mutations reached every layer: refusals of each kind, and deployments.
    assert {202, 400, 401, 415} <= outcomes.keys(), outcomes
    assert {202, 400} <= hostile.keys(), hostile  # some hostile pushes deploy (cut pusher), most do not
    # No execution started with an input the pipeline would refuse, or one of any size.
    sfn = emulator.client("stepfunctions")
    started = [
        e
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=emulator.arns["deploy"])
        for e in page["executions"]
    ]
    inputs = [sfn.describe_execution(executionArn=e["executionArn"])["input"] for e in started]
    assert inputs
    for given in inputs:
        assert len(given.encode()) < MAX_INPUT_BYTES, given[:200]
        assert deploy_input.parse(json.loads(given)).as_execution_input() == json.loads(given)
    # Among them, pushes whose 100,000-character pusher was cut to GitHub's longest name.
    assert any(len(json.loads(given)["pusher"]) == deploy_input.MAX_PUSHER for given in inputs)
