"""What a client of the application sees during a push that replaces every node, on real nodes
(node containers, the example web service at 2 replicas): requests sent at a steady rate to the
environment's address throughout the push, those that failed, and the longest gap between two
answers.

- SLIPWAY_INGRESS=nlb: the address is the load balancer's (here its stand-in, slipway/realnodes/load_balancer.py,
  a real TCP load balancer on this machine that sends connections only to registered, healthy
  targets and drains deregistered ones).
- SLIPWAY_INGRESS=none: the address is the first node's own (its port 80, which Swarm's routing
  mesh serves on every node; here slipway/realnodes/mesh.py stands in for the mesh): what a client of a
  node's public IP gets today.

Needs what `--real-nodes` needs (root, Docker, the bake's tools, docker-registry); without them it
says so and measures nothing.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

from slipway import realnodes
from slipway.emulator import Emulator
from slipway.harness import commit_id, deploy, new_content
from slipway.realnodes import registry

QUIET = {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}
RATE = 20  # requests per second
TIMEOUT = 2.0  # a request not answered within this failed
RUN_SECONDS = 900


class Client:
    """Sends GET / to `address()` RATE times a second, each in a thread of a pool, so one slow
    answer does not hold the next request back; records (sent, answered or failed, when, what)."""

    def __init__(self, address) -> None:
        self.address = address
        self.results: list[tuple[float, bool, float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, sent: float) -> None:
        try:
            host, port = self.address()
            with urllib.request.urlopen(f"http://{host}:{port}/", timeout=TIMEOUT) as answer:
                ok, what = answer.status == 200, answer.read(200).decode(errors="replace")
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
            ok, what = False, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.results.append((sent, ok, time.monotonic(), what))

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            start = time.monotonic()
            tick = 0
            while not self._stop.is_set():
                pool.submit(self._one, time.monotonic())
                tick += 1
                self._stop.wait(max(0.0, start + tick / RATE - time.monotonic()))

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict:
        results = sorted(self.results)
        answered = sorted(done for _, ok, done, _ in results if ok)
        failures = [what for _, ok, _, what in results if not ok]
        gaps = [b - a for a, b in zip(answered, answered[1:], strict=False)]
        return {
            "sent": len(results),
            "failed": len(failures),
            "longest_gap_s": round(max(gaps), 2) if gaps else None,
            "first_failures": sorted(set(f[:80] for f in failures))[:3],
        }


def scenario(ingress: str) -> dict:
    environment = {"SLIPWAY_INGRESS": ingress, "SLIPWAY_VPC_CIDR": "10.187.0.0/16"}
    with (
        mock.patch.dict(os.environ, QUIET),
        Emulator(real_nodes=True, node_count=2, poll_seconds=1, extra_environment=environment) as emu,
    ):
        emu.client("ssm").put_parameter(
            Name=f"/slipway/{emu.environment}/secrets/app_token", Value="bench", Type="SecureString"
        )
        stack = emu.example_stack()
        commit = commit_id()
        emu.github.files[commit] = {"stack.yml": stack}
        first = deploy(emu, commit, timeout=RUN_SECONDS)
        if first.status != "SUCCEEDED":
            return {"ingress": ingress, "error": f"first deploy {first.status}: {first.error} {first.cause}"}
        if ingress == "nlb":
            address = lambda: emu.load_balancer.address(80)  # noqa: E731 (one address callable per branch)
            where = "the load balancer's port 80"
        else:
            node = first.output["nodes"]["current"][0]
            ip = emu.client("ec2").describe_instances(InstanceIds=[node])["Reservations"][0]["Instances"][0][
                "PrivateIpAddress"
            ]
            address = lambda: (ip, 80)  # noqa: E731 (one address callable per branch)
            where = f"node {node}'s port 80"
        commit = new_content(emu, commit_id())
        emu.github.files[commit] = {"stack.yml": stack}
        started = time.monotonic()
        with Client(address) as client:
            second = deploy(emu, commit, timeout=RUN_SECONDS)
            time.sleep(2)  # and a moment after it ended
        return {
            "ingress": ingress,
            "address": where,
            "push": second.status,
            "replaced": len((second.output.get("nodes") or {}).get("new") or []),
            "push_s": round(time.monotonic() - started, 1),
            **client.figures(),
        }


def main() -> list[dict]:
    reason = realnodes.bake_available() or registry.registry_available()
    if reason:
        return [{"skipped": f"real nodes unavailable here: {reason}"}]
    return [scenario("nlb"), scenario("none")]


def report(rows: list[dict]) -> None:
    print(
        "Requests during a push that replaces every node "
        f"(real nodes, web at 2 replicas, {RATE}/s, {TIMEOUT:.0f} s timeout)"
    )
    for row in rows:
        if "skipped" in row or "error" in row:
            print(f"  {row.get('skipped') or row.get('error')}")
            continue
        print(
            f"  SLIPWAY_INGRESS={row['ingress']:<5} {row['address']}: {row['sent']} sent, {row['failed']} failed, "
            f"longest gap between answers {row['longest_gap_s']} s; "
            f"push {row['push']} in {row['push_s']} s, {row['replaced']} new nodes"
        )
        for failure in row["first_failures"]:
            print(f"      e.g. {failure}")


if __name__ == "__main__":
    report(main())
