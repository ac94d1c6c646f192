"""Deploy cost on the emulator: mutating AWS calls and state transitions for a first deploy, a
push that changes nothing in the image, and a push with a new image; first deploys of 1, 3 and
10 nodes; the fewest healthy nodes seen during a replacement (sampled every 5 ms); and a burst of
five pushes with new images, with and without skipping queued pushes a newer one supersedes."""

from __future__ import annotations

import os
import threading
from collections import Counter
from unittest import mock

from chalicelib import aws
from slipway.emulator import ACCOUNT, REGION, Emulator
from slipway.follow import follow
from slipway.harness import commit_id, deliver_push, deploy

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
                running = [
                    i.id for r in backend.reservations.copy().values() for i in r.instances if i.state == "running"
                ]
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


def burst(skip: bool, pushes: int = 5) -> dict:
    """`pushes` pushes with new images delivered at once to an environment already deployed:
    how many deployed, how many were skipped, and what the whole burst cost."""
    with (
        mock.patch.dict(os.environ, QUIET),
        Emulator(poll_seconds=1, extra_environment={"SLIPWAY_SKIP_SUPERSEDED": str(skip).lower()}) as emu,
    ):
        deploy(emu, commit_id())
        calls = Calls()
        calls.install()
        commits = [commit_id() for _ in range(pushes)]
        for commit in commits:
            emu.github.trees[commit] = {"ansible": commit, "packer": "f" * 40}
        arns = [deliver_push(emu, commit)[1]["execution_arn"] for commit in commits]
        runs = [
            follow(emu.client("stepfunctions"), arn, say=lambda *a, **k: None, poll=0.05, timeout=600) for arn in arns
        ]
        assert all(r.status == "SUCCEEDED" for r in runs), [(r.error, r.cause) for r in runs]
        counted = calls.take()
        return {
            "deployed": sum("Deployment succeeded" in r.states for r in runs),
            "skipped": sum("Skipped for a newer push" in r.states for r in runs),
            "bakes": sum("Bake node image" in r.states for r in runs),
            "transitions": sum(r.state_transitions for r in runs),
            "mutating": sum(counted.values()),
            "pushes": pushes,
        }


def main() -> dict:
    return {
        "scenarios": scenarios(),
        "downtime": downtime(),
        "burst": {"skip": burst(True), "every push": burst(False)},
    }


def report(results: dict) -> None:
    print("deploy cost on the emulator (mutating AWS calls made by the functions; state transitions)")
    for label, _, transitions, counted in results["scenarios"]:
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(counted.items()))
        print(f"  {label:<26} {sum(counted.values()):>3} mutating calls, {transitions:>3} transitions  ({detail})")
    n, low = results["downtime"]
    print(f"  replacement of 2 nodes: fewest healthy nodes in {n} samples = {low} (0 would be downtime)")
    for label, b in results["burst"].items():
        print(
            f"  burst of {b['pushes']} pushes with new images, poll 1 s ({label}): {b['deployed']} deployed, "
            f"{b['skipped']} skipped, {b['bakes']} bakes, {b['mutating']} mutating calls, "
            f"{b['transitions']} transitions"
        )


if __name__ == "__main__":
    report(main())
