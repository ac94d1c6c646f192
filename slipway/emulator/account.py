"""The emulated account: its id, region and stage, and the stage's environment as
.chalice/config.json gives it to the functions."""

from __future__ import annotations

import json

from slipway import PROJECT_DIR

ACCOUNT = "123456789012"
# The images example/stack.yml names: the emulated registry has them from the start.
EXAMPLE_IMAGES = ("slipway-example/web:1", "slipway-example/worker:1")
# Ports a real node container publishes on this machine's loopback (example/stack.yml's web).
REAL_NODE_PORTS = (8080,)
# Real nodes: the routing-mesh stand-in's ports (slipway/realnodes/mesh.py), published port -> the tasks'
# host-mode port: example/stack.yml publishes 80, which its web tasks publish as 8080 on their node.
REAL_NODE_MESH = {80: 8080}
REGION = "us-east-1"
STAGE = "dev"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


def stage_environment(stage: str = STAGE) -> dict[str, str]:
    """The environment variables .chalice/config.json gives the stage's functions."""
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return env
