"""The emulated nodes recognise the pipeline's scripts by their markers (chalicelib/scripts.py
MARKERS), not by their words: a reworded script still deploys, an unmarked one fails the run
saying which markers the emulated nodes know."""

from __future__ import annotations

import pytest

from chalicelib import scripts
from slipway.harness import deploy


def test_a_reworded_script_deploys_and_an_unmarked_one_fails_the_run_naming_the_markers(
    make_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_emulator()
    monkeypatch.setattr(
        scripts, "HEALTH_SCRIPT", [scripts.MARKERS["health"], "docker info -f '{{ .Swarm.LocalNodeState }}'"]
    )
    first = deploy(emu)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    monkeypatch.setattr(scripts, "HEALTH_SCRIPT", ["docker info --format '{{.Swarm.LocalNodeState}}'"])
    second = deploy(emu)
    assert second.status == "FAILED" and second.error == "UnknownScript", (second.error, second.cause)
    assert "no Slipway marker" in second.cause and scripts.MARKERS["health"] in second.cause
    assert emu.nodes.state(first.output["nodes"]["current"][0]) == "active"  # the old node serves on
