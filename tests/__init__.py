"""Slipway's tests, by layer (docs/testing.md)."""

# The least environment Settings accepts (chalicelib.settings.from_environment): the unit tests'
# starting point, each adding what it tests.
SETTINGS_BASE = {
    "SLIPWAY_ENVIRONMENT": "dev",
    "AWS_REGION": "eu-west-1",
    "SLIPWAY_NODE_INSTANCE_PROFILE": "slipway-dev-node",
}
