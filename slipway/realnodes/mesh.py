#!/usr/bin/env python3
"""A stand-in for Docker Swarm's ingress routing mesh, run inside each real node container.

On EC2 a service's published port answers on every node of the swarm: the ingress network's IPVS
sends each connection to one of the service's tasks, on whichever node it runs. This machine's
kernel has no IPVS, so local real nodes publish task ports in `mode: host` (only the node running
the task answers there); this program gives every node the published port again:

    python3 mesh.py --listen 8080 --task-port 18080 --peers /run/slipway-mesh/peers

It listens on 0.0.0.0:<listen> and forwards each connection to <peer>:<task-port>, the peers being
the swarm's node addresses, one per line in the peers file (re-read whenever the file changes:
replace it atomically, write a temporary file and rename it). Peers are taken round robin, each
connection starting after the peer that took the last one. A peer that refuses or does not answer
within --connect-timeout (0.5 s) is skipped, the next one tried, and it goes to the back of the
order for a few seconds. That is the approximation: Swarm takes a task out of IPVS before stopping
it and IPVS only knows live tasks, while this only learns that a node has no task (or no longer
has one) by trying it. When no peer accepts, the client connection is reset. A task port that
accepts and closes without answering a byte (docker-proxy, which holds a host-mode port, does that
for a task whose program is not listening yet, or any more) is treated the same: the next peer is
tried, sent what the client has sent so far (`Mesh.forward`).

Standard library only, Python 3.11 (Debian 12's python3, the node image's): slipway/realnodes/
copies this one file into the node (DockerNodes.start_mesh), so it imports nothing of Slipway's.
Like the mesh, it always accepts, whether a task runs anywhere or not: a load balancer's TCP
health check of a node's published port passes while the node (and this program) lives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import struct
import sys
import threading
import time

BUFFER = 65536
PENALTY_SECONDS = 3.0  # how long a peer that failed is tried only after the others
FIRST_ANSWER_SECONDS = 30.0  # a task that says nothing for this long is not retried elsewhere


class Peers:
    """The peers file, re-read when it changes (inode, size or mtime), and the round-robin order."""

    def __init__(self, path: str, log) -> None:
        self.path = path
        self.log = log
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._ips: list[str] = []
        self._next = 0
        self._failed: dict[str, float] = {}  # peer -> until when it goes last

    def _read(self) -> list[str]:
        """(lock held) The current peer list."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            if self._seen is not None:
                self.log(f"peers file {self.path} is gone: no peers")
            self._seen, self._ips = None, []
            return self._ips
        seen = (status.st_ino, status.st_size, status.st_mtime_ns)
        if seen != self._seen:
            try:
                with open(self.path) as handle:
                    text = handle.read()
            except OSError as exc:
                self.log(f"cannot read {self.path}: {exc}")
                return self._ips
            ips = []
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line and line not in ips:
                    ips.append(line)
            if ips != self._ips:
                self.log(f"peers: {' '.join(ips) or '(none)'}")
            self._seen, self._ips = seen, ips
        return self._ips

    def order(self) -> list[str]:
        """The peers to try for one connection, in order: round robin from after the last peer
        that took one, peers that failed lately at the end."""
        with self._lock:
            ips = self._read()
            if not ips:
                return []
            start = self._next % len(ips)
            turn = ips[start:] + ips[:start]
            now = time.monotonic()
            return [ip for ip in turn if self._failed.get(ip, 0) <= now] + [
                ip for ip in turn if self._failed.get(ip, 0) > now
            ]

    def took(self, ip: str) -> None:
        with self._lock:
            self._failed.pop(ip, None)
            if ip in self._ips:
                self._next = self._ips.index(ip) + 1

    def failed(self, ip: str) -> None:
        with self._lock:
            self._failed[ip] = time.monotonic() + PENALTY_SECONDS


class Mesh:
    def __init__(self, task_port: int, peers: Peers, connect_timeout: float, log) -> None:
        self.task_port = task_port
        self.peers = peers
        self.connect_timeout = connect_timeout
        self.log = log

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except InterruptedError:
                continue
            except OSError as exc:
                self.log(f"accept failed: {exc}")
                time.sleep(0.05)
                continue
            threading.Thread(target=self.forward, args=(client,), daemon=True).start()

    def connect(self, skip: frozenset[str] = frozenset()) -> tuple[socket.socket, str] | None:
        """A connection to the task port of the first peer that accepts (not in `skip`), or None."""
        tried = []
        for ip in self.peers.order():
            if ip in skip:
                continue
            try:
                upstream = socket.create_connection((ip, self.task_port), timeout=self.connect_timeout)
            except OSError as exc:
                self.peers.failed(ip)
                tried.append(f"{ip}: {exc.strerror or exc}")
                continue
            self.peers.took(ip)
            upstream.settimeout(None)
            return upstream, ip
        self.log(f"no peer accepted on port {self.task_port}: {'; '.join(tried) or 'no peers'}")
        return None

    def forward(self, client: socket.socket) -> None:
        """Connect the client to a task. Until the task has answered a first byte, a task port
        that closes the connection (docker-proxy, the host-mode port's listener, accepts for a
        task whose program is not listening: one starting, or stopping) is one Swarm would not
        have routed to: the next peer is tried, with what the client has sent so far."""
        sent = b""
        skip: set[str] = set()
        while True:
            found = self.connect(frozenset(skip))
            if found is None:
                abort(client)
                client.close()
                return
            upstream, ip = found
            try:
                if sent:
                    upstream.sendall(sent)
                first, sent = self._first_answer(client, upstream, sent)
            except OSError:
                first = None
            if first is None:  # closed without a byte: try the next one
                upstream.close()
                self.peers.failed(ip)
                skip.add(ip)
                continue
            if first == b"":  # the client went away first
                upstream.close()
                client.close()
                return
            break
        try:
            client.sendall(first)
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream)
            back.join()
        except OSError:
            abort(upstream)
        finally:
            client.close()
            upstream.close()

    @staticmethod
    def _first_answer(client: socket.socket, upstream: socket.socket, sent: bytes) -> tuple[bytes | None, bytes]:
        """Relay the client's bytes to `upstream` until it answers: (its first bytes, all the client
        sent); None for a task that closed or reset without answering; b"" if the client closed first."""
        while True:
            readable, _, _ = select.select([client, upstream], [], [], FIRST_ANSWER_SECONDS)
            if not readable:
                return None, sent  # no answer in time: treat as a task that is not there
            if upstream in readable:
                try:
                    data = upstream.recv(BUFFER)
                except OSError:
                    return None, sent
                return (data or None), sent
            data = client.recv(BUFFER)
            if not data:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
                readable, _, _ = select.select([upstream], [], [], FIRST_ANSWER_SECONDS)
                try:
                    answer = upstream.recv(BUFFER) if readable else b""
                except OSError:
                    answer = b""
                return (answer if answer else b""), sent
            sent += data
            upstream.sendall(data)


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until `source` ends, then half-close `sink`; a reset ends both directions."""
    try:
        while data := source.recv(BUFFER):
            sink.sendall(data)
    except OSError:
        abort(source)
        abort(sink)
        return
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def abort(sock: socket.socket) -> None:
    """Make the coming close an RST, and wake whoever is blocked on the socket."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Swarm's ingress routing mesh, approximated (slipway)")
    parser.add_argument("--listen", type=int, required=True, help="the published port (0: any free port)")
    parser.add_argument("--task-port", type=int, required=True, help="the tasks' host-mode port on each peer")
    parser.add_argument("--peers", required=True, help="file of peer addresses, one a line")
    parser.add_argument("--bind", default="0.0.0.0", help="the address to listen on")
    parser.add_argument("--connect-timeout", type=float, default=0.5)
    parser.add_argument("--ready-file", help="written, with the bound port, once listening")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} mesh :{args.listen}: {message}", file=sys.stderr, flush=True)

    try:
        listener = socket.create_server((args.bind, args.listen), backlog=128)
    except OSError as exc:
        log(f"cannot listen on {args.bind}:{args.listen}: {exc}")
        return 1
    bound = listener.getsockname()[1]
    if args.ready_file:
        partial = f"{args.ready_file}.tmp"
        with open(partial, "w") as handle:
            handle.write(f"{bound}\n")
        os.replace(partial, args.ready_file)
    log(f"listening on {args.bind}:{bound}, forwarding to port {args.task_port} of the peers in {args.peers}")
    mesh = Mesh(args.task_port, Peers(args.peers, log), args.connect_timeout, log)
    try:
        mesh.serve(listener)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
