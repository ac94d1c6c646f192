"""Slipway's example web service: the smallest thing worth deploying as a Swarm stack.

GET / answers one line with the version baked into the image (WEB_VERSION) and whether the
stack's secret reached the task; GET /health answers 200, or 503 in the image built to fail its
health check (WEB_HEALTHY=no). `app.py check` is the image's HEALTHCHECK: exit 0 when /health
answers 200. Standard library only: the image is a plain Debian root with python3.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import sys
import threading
import urllib.request

PORT = int(os.environ.get("WEB_PORT", "8080"))
VERSION = os.environ.get("WEB_VERSION", "0")
HEALTHY = os.environ.get("WEB_HEALTHY", "yes") == "yes"
SECRET = os.environ.get("WEB_SECRET_FILE", "/run/secrets/web_token")


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "slipway-example-web"

    def do_GET(self) -> None:  # the name http.server calls
        if self.path == "/health":
            self.answer(200 if HEALTHY else 503, "ok" if HEALTHY else "unhealthy")
        elif self.path == "/":
            secret = "yes" if os.path.exists(SECRET) and os.path.getsize(SECRET) > 0 else "no"
            self.answer(200, f"slipway-example/web version={VERSION} task={socket.gethostname()} secret={secret}")
        else:
            self.answer(404, "not found")

    def answer(self, status: int, line: str) -> None:
        body = (line + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # one line per request on stderr
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def check() -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


def main(argv: list[str]) -> int:
    if argv[1:] == ["check"]:
        return check()
    if argv[1:] not in ([], ["serve"]):
        print("usage: app.py [serve|check]", file=sys.stderr)
        return 2
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    # A stop (each rolling update, each node retired) lets the requests under way finish: SIGTERM
    # stops the accepting (from another thread: shutdown() waits for serve_forever), then
    # server_close() closes the socket and joins the request threads.
    server.daemon_threads = False
    server.block_on_close = True
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    # PID 1 of its container: exit 143 (128 + 15), not 0, when stopped: Swarm stops an unhealthy task
    # with SIGTERM and records it as failed ("non-zero exit (143): dockerexec: unhealthy container")
    # only if it exits non-zero; an exit 0 reads "Complete", with no error.
    return 128 + stopping[0] if stopping else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
