"""The embedded AWS emulator: moto, in this process, running Slipway's real state machines.

What it adds to moto, and only here (chalicelib never knows it runs locally), one module per AWS
service moto needs help with, each saying in its first lines what moto lacks there:
`awslambda` (dispatch to the Chalice app), `stepfunctions`, `ec2`, `ssm`, `codebuild` (the bake),
`elb` (the load balancer), `dynamodb`, `events` (EventBridge), `iam`; beside them `github` (the
local GitHub), the emulated swarm nodes (`swarm` their model, `nodes` the swarm's scripts,
`stacks` the stack's), `hosts` (emulated or real nodes, chosen once) and `core` (the Emulator,
which creates what a deployment has and installs the rest). docs/emulator.md describes it for a person.
"""

from slipway.emulator.account import ACCOUNT, REGION, STAGE, stage_environment
from slipway.emulator.awslambda import LambdaContext, load_app
from slipway.emulator.codebuild import CONSTANT_IMAGE_TAGS, IMAGE_TAGS
from slipway.emulator.core import Emulator
from slipway.emulator.hosts import RealNodesUnavailable

__all__ = [
    "ACCOUNT",
    "CONSTANT_IMAGE_TAGS",
    "IMAGE_TAGS",
    "REGION",
    "STAGE",
    "Emulator",
    "LambdaContext",
    "RealNodesUnavailable",
    "load_app",
    "stage_environment",
]
