"""Slipway's developer tooling: the embedded AWS emulator and the `slipway` command.

Never shipped to Lambda; chalicelib/ must not import it.
"""

import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# chalicelib/ and app.py sit beside slipway/, not installed with it: the emulator imports both.
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))
