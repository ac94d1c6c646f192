"""The routing-mesh stand-in (slipway/realnodes/mesh.py) as a plain process on this machine: the "nodes" are
loopback addresses (127.0.0.2, 127.0.0.3: Linux answers on all of 127/8), each "task" a server on
the same task port of one of them, the mesh listening on 127.0.0.1. tests/realnodes/test_mesh_real.py
runs it in real node containers."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from slipway.realnodes import mesh

NODES = ("127.0.0.2", "127.0.0.3")


class Task:
    """A task on `ip`:`port`: a connection that sends a line gets the task's name back, then an
    echo of every further line until it half-closes."""

    def __init__(self, name: str, ip: str, port: int) -> None:
        self.name = name
        task = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                if not self.rfile.readline():
                    return
                self.wfile.write(task.name.encode() + b"\n")
                while data := self.rfile.readline():
                    self.wfile.write(data)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            block_on_close = False

        self.server = Server((ip, port), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _task_port() -> int:
    """A port free on both node addresses."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((NODES[0], 0))
            port = probe.getsockname()[1]
            with socket.socket() as other:
                try:
                    other.bind((NODES[1], port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free on both loopback addresses")


@pytest.fixture
def tasks():
    started: list[Task] = []
    port = _task_port()

    def start(name: str, ip: str) -> Task:
        task = Task(name, ip, port)
        started.append(task)
        return task

    start.port = port
    yield start
    for task in started:
        with contextlib.suppress(OSError):
            task.stop()


def write_peers(path: Path, ips) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(f"{ip}\n" for ip in ips))
    os.replace(partial, path)


@pytest.fixture
def running(tmp_path, tasks):
    """Start mesh.py (as the node runs it: a python3 process) on 127.0.0.1; yields (address,
    peers file)."""
    peers, ready, log = tmp_path / "peers", tmp_path / "ready", tmp_path / "mesh.log"
    write_peers(peers, NODES)
    command = [sys.executable, mesh.__file__, "--listen", "0", "--bind", "127.0.0.1"]
    command += ["--task-port", str(tasks.port), "--peers", str(peers), "--ready-file", str(ready)]
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stderr=stderr)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"mesh.py did not listen: {log.read_text()}"
            time.sleep(0.02)
        yield ("127.0.0.1", int(ready.read_text())), peers
    finally:
        process.terminate()
        process.wait(timeout=10)


def ask(address) -> str:
    """The name of the task that answers a connection through the mesh ("" if none)."""
    try:
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"hello\n")
            return sock.makefile("rb").readline().decode().strip()
    except (ConnectionResetError, BrokenPipeError):
        return ""


def answers(address, count: int) -> Counter:
    return Counter(ask(address) for _ in range(count))


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_a_connection_reaches_the_one_node_whose_task_port_accepts(running, tasks):
    address, _ = running
    tasks("on-3", NODES[1])  # nothing listens on 127.0.0.2's task port: refused, the next peer tried

    assert answers(address, 6) == {"on-3": 6}


def test_connections_spread_round_robin_over_the_nodes_with_a_task(running, tasks):
    address, _ = running
    tasks("on-2", NODES[0])
    tasks("on-3", NODES[1])

    assert answers(address, 10) == {"on-2": 5, "on-3": 5}


def test_the_task_moving_to_another_node_is_still_answered(running, tasks):
    address, _ = running
    first = tasks("on-2", NODES[0])
    assert answers(address, 4) == {"on-2": 4}

    first.stop()
    tasks("on-3", NODES[1])
    assert answers(address, 4) == {"on-3": 4}


def test_a_changed_peers_file_is_read_again(running, tasks):
    address, peers = running
    tasks("on-2", NODES[0])
    tasks("on-3", NODES[1])

    write_peers(peers, [NODES[1]])
    assert eventually(lambda: answers(address, 4) == {"on-3": 4})
    write_peers(peers, [NODES[0]])
    assert answers(address, 4) == {"on-2": 4}


def test_with_no_task_anywhere_the_connection_is_reset(running):
    address, _ = running

    assert answers(address, 2) == {"": 2}


def test_bytes_go_both_ways_and_a_half_close_is_passed_on(running, tasks):
    address, _ = running
    tasks("on-2", NODES[0])

    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"hello\nsecond line\n")
        sock.shutdown(socket.SHUT_WR)  # the task sees the end, answers what it has, closes
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == b"on-2\nsecond line\n"


class Mute:
    """What docker-proxy is in front of a task that is not listening (starting, or stopping): it
    accepts, reads, and closes without a byte."""

    def __init__(self, ip: str, port: int) -> None:
        self.listener = socket.create_server((ip, port), reuse_port=False)
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection, contextlib.suppress(OSError):
                connection.recv(4096)

    def stop(self) -> None:
        self.listener.close()


def test_a_task_port_that_closes_without_answering_is_skipped_with_what_the_client_sent(running, tasks):
    address, _ = running
    mute = Mute(NODES[0], tasks.port)
    try:
        tasks("on-3", NODES[1])
        # Every request is answered by the task that listens, whichever peer the mesh tried first;
        # the one that said nothing saw the client's bytes, and the task got them again.
        assert answers(address, 6) == {"on-3": 6}
        assert mute.connections >= 1
    finally:
        mute.stop()
