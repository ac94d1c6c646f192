"""Deploy cost on the emulator: mutating AWS calls and state transitions for a first deploy, a
push that changes nothing in the image, and a push with a new image; first deploys of 1, 3 and
10 nodes; and the fewest healthy nodes seen during a replacement (sampled every 5 ms)."""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib import aws  # noqa: E402
from slipway.emulator import ACCOUNT, REGION, Emulator  # noqa: E402
from tests.conftest import commit_id, deploy  # noqa: E402

READS = ("Describe", "Get", "List", "BatchGet")
QUIET = {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}


class Calls:
    def __init__(self) -> None:
        self.counter: Counter = Counter()

    def __call__(self, model, **kwargs) -> None:
        if not model.name.startswith(READS):
            self.counter[model.name] += 1

    def install(self) -> None:
        for service, retries in (("ec2", True), ("ec2", False), ("ssm", True), ("codebuild", True)):
            aws.client(service, retries).meta.events.register("provide-client-params", self)

    def take(self) -> Counter:
        taken, self.counter = self.counter, Counter()
        return taken


def measured(emu, calls, commit):
    calls.take()
    run = deploy(emu, commit)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    return run, calls.take()


def scenarios() -> list[tuple]:
    rows = []
    with mock.patch.dict(os.environ, QUIET), Emulator(poll_seconds=0) as emu:
        calls = Calls()
        calls.install()
        for label, commit in (("first deploy", commit_id()), ("push, image unchanged", commit_id())):
            run, counted = measured(emu, calls, commit)
            rows.append((label, 1, run.state_transitions, counted))
        commit = commit_id()
        emu.github.trees[commit] = {"ansible": commit, "packer": "f" * 40}
        run, counted = measured(emu, calls, commit)
        rows.append(("push, new image", 1, run.state_transitions, counted))
    for nodes in (1, 3, 10):
        with mock.patch.dict(os.environ, QUIET), Emulator(poll_seconds=0, node_count=nodes) as emu:
            calls = Calls()
            calls.install()
            run, counted = measured(emu, calls, commit_id())
            rows.append((f"first deploy, {nodes} nodes", nodes, run.state_transitions, counted))
    return rows


def downtime() -> tuple[int, int]:
    from moto.ec2.models import ec2_backends

    with mock.patch.dict(os.environ, QUIET), Emulator(poll_seconds=0, node_count=2) as emu:
        deploy(emu, commit_id())
        backend = ec2_backends[ACCOUNT][REGION]
        samples, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                running = [i.id for r in backend.reservations.copy().values() for i in r.instances
                           if i.state == "running"]
                samples.append(sum(1 for i in running if emu.nodes.state(i) == "active"))
                stop.wait(0.005)

        thread = threading.Thread(target=sample)
        thread.start()
        commit = commit_id()
        emu.github.trees[commit] = {"ansible": commit, "packer": "f" * 40}
        deploy(emu, commit)
        stop.set()
        thread.join()
        return len(samples), min(samples)


def main() -> dict:
    return {"scenarios": scenarios(), "downtime": downtime()}


def report(results: dict) -> None:
    print("deploy cost on the emulator (mutating AWS calls made by the functions; state transitions)")
    for label, _, transitions, counted in results["scenarios"]:
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(counted.items()))
        print(f"  {label:<26} {sum(counted.values()):>3} mutating calls, {transitions:>3} transitions  ({detail})")
    n, low = results["downtime"]
    print(f"  replacement of 2 nodes: fewest healthy nodes in {n} samples = {low} (0 would be downtime)")


if __name__ == "__main__":
    report(main())
