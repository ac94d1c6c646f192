"""Everything that runs in Slipway's Lambda functions (Chalice ships this folder whole)."""
