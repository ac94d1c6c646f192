"""API calls per prune for 1, 10 and 100 tagged nodes on the emulator (send + record).

The prune sends one tag-targeted command whatever the fleet size; recording reads the command
once and its invocations in pages of 50 (SSM's page size with output).
"""

from __future__ import annotations

import os
from collections import Counter
from unittest import mock

from slipway.emulator import Emulator
from slipway.harness import scheduled_event


def calls_for(nodes: int) -> Counter:
    from chalicelib import aws, naming

    with (
        mock.patch.dict(os.environ, {"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"}),
        Emulator(poll_seconds=0) as emu,
    ):
        ec2 = emu.client("ec2")
        image = ec2.register_image(Name="bench", RootDeviceName="/dev/sda1")["ImageId"]
        tags = naming.tag_list(naming.tags(emu.environment, "bench", "c0ffee", "node"))
        ec2.run_instances(
            ImageId=image,
            MinCount=nodes,
            MaxCount=nodes,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        counter: Counter = Counter()

        def count(model, **kwargs):
            counter[f"{model.service_model.service_name}:{model.name}"] += 1

        for service in ("ec2", "ssm"):
            aws.client(service).meta.events.register(f"provide-client-params.{service}.*", count)
        result = emu.invoke("prune", scheduled_event())
        emu.wait_for_events()
        recorded = [
            r
            for name, r in emu.results
            if name.endswith("-record_prune") and isinstance(r, dict) and r.get("command_id") == result["command_id"]
        ]
        assert recorded and recorded[0]["nodes"] == nodes, recorded
        return counter


def main() -> dict:
    return {n: calls_for(n) for n in (1, 10, 100)}


def report(results: dict) -> None:
    print("prune: AWS API calls per run (scheduled send + event-driven record)")
    for nodes, counter in results.items():
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(counter.items()))
        print(f"  {nodes:>3} nodes: {sum(counter.values())} calls ({detail})")


if __name__ == "__main__":
    report(main())
