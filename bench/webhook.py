"""Webhook route cost, in-process through the Chalice app against the embedded emulator.

Prints p50 and p99 for a 7 KB and a 1 MiB push, each divided by the bare cost of HMAC-SHA256 plus
json.loads on the same bytes, and the cold-start cost: importing `app` in a fresh interpreter,
divided by importing boto3 alone. Figures only; nothing here passes or fails on time.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from unittest import mock

from slipway import PROJECT_DIR, github
from slipway.emulator import Emulator


def push_of_size(target: int, commit: str) -> bytes:
    """A push whose `commits` list brings the body to about `target` bytes (GitHub sends up to 20
    commits with file lists; large bodies come from long file lists)."""
    payload = github.push_payload(after=commit)
    head = payload["head_commit"]
    files = []
    while len(github.encode(payload)) < target:
        files += [f"src/module_{len(files) + i:05d}/handler.py" for i in range(200)]
        payload["commits"] = [dict(head, modified=files)]
    body = github.encode(payload)
    return body


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bare_cost(secret: bytes, body: bytes, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        hmac.new(secret, body, hashlib.sha256).hexdigest()
        json.loads(body)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def route_cost(emu: Emulator, body: bytes, rounds: int) -> list[float]:
    headers = github.delivery_headers(emu.webhook_secret, body)
    samples = []
    sink = io.StringIO()
    for _ in range(rounds):
        start = time.perf_counter()
        with redirect_stdout(sink):  # the route's metrics lines
            status, _ = emu.deliver(dict(headers), body)
        samples.append(time.perf_counter() - start)
        assert status == 202, status
        sink.seek(0)
        sink.truncate()
    return samples


def import_time(statement: str, rounds: int = 7) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", statement],
            cwd=PROJECT_DIR,
            check=True,
            env=os.environ | {"AWS_DEFAULT_REGION": "us-east-1"},
        )
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> dict:
    results = {}
    with mock.patch.dict(os.environ, {"POWERTOOLS_LOG_LEVEL": "ERROR"}), Emulator(poll_seconds=3600) as emu:
        # A long poll keeps the one execution parked in its first Wait: every delivery after the
        # first is the same push, so the route does its full work (verify, decide, StartExecution)
        # without starting pipelines that would compete for the CPU.
        for label, size, rounds in (("7KB", 7 * 1024, 300), ("1MiB", 1024 * 1024, 200)):
            body = push_of_size(size, "a" * 39 + ("1" if label == "7KB" else "2"))
            route_cost(emu, body, 5)  # warm
            samples = route_cost(emu, body, rounds)
            bare = bare_cost(emu.webhook_secret.encode(), body, rounds)
            p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
            results[label] = {
                "bytes": len(body),
                "rounds": rounds,
                "p50_ms": p50 * 1e3,
                "p99_ms": p99 * 1e3,
                "bare_ms": bare * 1e3,
                "p50_over_bare": p50 / bare,
                "p99_over_bare": p99 / bare,
            }
    python = import_time("pass")
    boto3 = import_time("import boto3")
    app = import_time("import app")
    results["cold_start"] = {
        "python_s": python,
        "import_boto3_s": boto3,
        "import_app_s": app,
        "app_over_boto3": (app - python) / (boto3 - python),
    }
    return results


def report(results: dict) -> None:
    print("webhook route (in-process, Chalice local gateway, emulator; accepted push, StartExecution included)")
    for label in ("7KB", "1MiB"):
        r = results[label]
        print(
            f"  {label:>5} ({r['bytes']:>8} B, n={r['rounds']}): p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  | bare HMAC+json.loads {r['bare_ms']:6.3f} ms"
            f"  -> p50 x{r['p50_over_bare']:.1f}, p99 x{r['p99_over_bare']:.1f}"
        )
    c = results["cold_start"]
    print(
        f"  cold start: import app {c['import_app_s'] * 1e3:.0f} ms, import boto3 {c['import_boto3_s'] * 1e3:.0f} ms,"
        f" bare interpreter {c['python_s'] * 1e3:.0f} ms -> (app - bare)/(boto3 - bare) = x{c['app_over_boto3']:.2f}"
    )


if __name__ == "__main__":
    report(main())
