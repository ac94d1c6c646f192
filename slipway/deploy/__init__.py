"""Slipway's own deploy path into an AWS account: `slipway bootstrap` (the CloudFormation stack of
what `chalice deploy` does not make), `slipway package` (what that path deploys, for linting and
scanning) and the rehearsal of both against the emulator served over HTTP (CI)."""
