"""1,000+ random mutations of a delivery's body and headers: the route answers every one with a
deliberate status (never a 5xx other than the fail-closed 503, never an unhandled exception)."""

import json
import random

from slipway import github
from tests.conftest import commit_id

ALLOWED = {200, 202, 400, 401, 403, 413, 415}


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
            del data[pos:pos + rng.randint(1, 32)]
        else:
            data[pos:pos] = rng.choice([b"null", b"[]", b"{}", b'"', b"\\u0000", b"1e999", b"\xff"])
    return bytes(data)


def mutate_payload(rng: random.Random, payload: dict) -> dict:
    """Structural mutations that keep JSON valid, so they pass the signature and reach the parser."""
    payload = json.loads(json.dumps(payload))
    key = rng.choice(["ref", "after", "before", "repository", "pusher", "deleted", "commits", "head_commit"])
    payload[key] = rng.choice([None, 0, -1, 1.5, True, "", "x" * 300, [], {}, ["a"], {"full_name": 3},
                               "refs/heads/main", "0" * 40, "g" * 40, {"name": None}])
    if rng.random() < 0.2:
        payload = rng.choice([[], "string", 7, None, [payload]])
    return payload


HEADER_CHOICES = {
    "X-GitHub-Event": [None, "", "push", "ping", "issues", "push\x00", "😀", "x" * 1000],
    "X-GitHub-Delivery": [None, "", "a", "///", "x" * 500, "😀", "\t"],
    "Content-Type": [None, "", "application/json", "application/json; charset=utf-8", "text/plain",
                     "application/x-www-form-urlencoded", "APPLICATION/JSON"],
    "X-Hub-Signature-256": [None, "", "sha256=", "sha1=abc", "sha256=" + "z" * 64, "😀" * 10],
}


def test_random_deliveries_never_crash_the_route(emulator):
    rng = random.Random(20261128)
    base = github.push_payload(after=commit_id())
    outcomes = {}
    for i in range(1200):
        kind = i % 3
        if kind == 0:  # signed but mutated structure
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
        assert code in ALLOWED, (code, answer, headers, body[:200])
        assert isinstance(answer, dict)
        outcomes[code] = outcomes.get(code, 0) + 1
    # The mutations reached every layer: refusals of each kind, and deployments.
    assert {202, 400, 401, 415} <= outcomes.keys(), outcomes
