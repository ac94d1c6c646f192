"""`python -m slipway.cli`: the `slipway` command."""

import sys

from slipway.cli import main

sys.exit(main())
