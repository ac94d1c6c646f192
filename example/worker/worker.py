"""Slipway's example worker: a service with no port, whose only job is to keep running and say so.

Every WORKER_INTERVAL seconds (5 by default) it prints one line; SIGTERM (Swarm's stop) ends it at
once with exit 0, so an update or a scale-down never waits out the stop grace period.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

INTERVAL = float(os.environ.get("WORKER_INTERVAL", "5"))
stop = threading.Event()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    beats = 0
    while not stop.wait(INTERVAL if beats else 0):
        beats += 1
        print(f"worker alive: beat {beats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
