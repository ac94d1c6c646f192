"""Slipway's developer tooling: the embedded AWS emulator and the `slipway` command.

Never shipped to Lambda; chalicelib/ must not import it.
"""

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
