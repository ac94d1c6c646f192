"""`python -m slipway.realnodes check | bake TAG | cleanup [--images]`."""

from slipway.realnodes.cleanup import main

raise SystemExit(main())
