"""The NLB stand-in (slipway/realnodes/load_balancer.py) in front of local servers on 127.0.0.1: health checks
decide who gets traffic, draining keeps open connections for the deregistration delay and then
cuts them, no target healthy fails open, close frees the ports.

Each backend names itself: a connection that sends a line gets the server's name back, then an
echo of every further line until it half-closes; `GET <path>` gets an HTTP answer (the
backend's `status` for /health, 200 otherwise). Waits are bounded polling loops, never sleeps
standing for an outcome."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections import Counter

import pytest

from slipway.realnodes.load_balancer import HealthCheck, LoadBalancer

FAST = {"interval": 0.1, "timeout": 0.5, "healthy_threshold": 2, "unhealthy_threshold": 2}
PORT = 80  # the LB's port, as moto's listener has it; bound on a free local port


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.status = 200  # what GET /health answers
        self.paths: list[str] = []
        backend = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                if not line:  # a TCP health check: connect, close
                    return
                if line.startswith(b"GET "):
                    path = line.split()[1].decode()
                    backend.paths.append(path)
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    status = backend.status if path == "/health" else 200
                    body = backend.name.encode()
                    head = f"HTTP/1.0 {status} Whatever\r\nContent-Length: {len(body)}\r\n\r\n"
                    self.wfile.write(head.encode() + body)
                    return
                self.wfile.write(backend.name.encode() + b"\n")
                while data := self.rfile.readline():
                    self.wfile.write(data)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            block_on_close = False

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = self.server.server_address[:2]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """The listening socket closes: new connections are refused (open ones go on)."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    made: dict[str, Backend] = {}

    def make(*names: str) -> dict[str, Backend]:
        for name in names:
            made[name] = Backend(name)
        return {name: made[name] for name in names}

    yield make
    for backend in made.values():
        backend.stop()


@pytest.fixture
def balancer():
    made: list[LoadBalancer] = []

    def make(deregistration_delay: float = 0.0, **health) -> LoadBalancer:
        lb = LoadBalancer(health=HealthCheck(**{**FAST, **health}), deregistration_delay=deregistration_delay)
        made.append(lb)
        return lb

    yield make
    for lb in made:
        lb.close()


def eventually(check, timeout: float = 10.0, what: str = "condition"):
    """check()'s value once truthy; fails with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout:g}s")
        time.sleep(0.02)
    return value


def states(lb: LoadBalancer) -> dict[str, str]:
    return {target: health["state"] for target, health in lb.health(PORT).items()}


def wait_states(lb: LoadBalancer, expected: dict[str, str]) -> None:
    eventually(lambda: states(lb) == expected, what=f"states {states(lb)} to become {expected}")


def connect(lb: LoadBalancer) -> tuple[socket.socket, str]:
    """A connection through the LB and the name of the backend that took it."""
    sock = socket.create_connection(lb.address(PORT), timeout=5)
    try:
        sock.sendall(b"hello\n")
        return sock, sock.makefile("rb").readline().decode().strip()
    except OSError:
        sock.close()
        raise


def hits(lb: LoadBalancer, count: int) -> Counter:
    """Who answered `count` connections made one after the other."""
    answered: Counter = Counter()
    for _ in range(count):
        sock, name = connect(lb)
        sock.close()
        answered[name] += 1
    return answered


def ended(sock: socket.socket) -> bool:
    """Whether the peer has closed (FIN or RST) the connection, read to its end."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def started(lb, backends: dict[str, Backend]) -> None:
    lb.listen(PORT)
    lb.set_targets(PORT, {name: backend.address for name, backend in backends.items()})


def test_a_new_target_gets_no_traffic_until_it_is_healthy(balancer, backends):
    # Given a healthy target and a new one whose health path fails (not often enough to be unhealthy)
    lb = balancer(protocol="http", path="/health", unhealthy_threshold=1000)
    servers = backends("a", "b")
    servers["b"].status = 503
    started(lb, servers)
    eventually(lambda: states(lb)["a"] == "healthy", what="a healthy")
    b = lb.health(PORT)["b"]
    assert (b["state"], b["reason"], b["description"]) == (
        "initial",
        "Elb.InitialHealthChecking",
        "Initial health checks in progress",
    )

    # Then every connection goes to the healthy one
    assert hits(lb, 10) == {"a": 10}

    # When the new one passes its checks, it takes its share
    servers["b"].status = 200
    wait_states(lb, {"a": "healthy", "b": "healthy"})
    assert hits(lb, 10) == {"a": 5, "b": 5}
    assert lb.health(PORT)["b"]["reason"] is None


def test_traffic_spreads_round_robin_over_the_healthy_targets(balancer, backends):
    lb = balancer()
    started(lb, backends("a", "b", "c"))
    wait_states(lb, {"a": "healthy", "b": "healthy", "c": "healthy"})

    assert hits(lb, 30) == {"a": 10, "b": 10, "c": 10}
    stats = lb.stats(PORT)
    assert (stats["accepted"], stats["forwarded"], stats["failed"], stats["fail_open"]) == (30, 30, 0, 0)
    assert {target: counts["forwarded"] for target, counts in stats["targets"].items()} == {"a": 10, "b": 10, "c": 10}


def test_a_target_whose_server_stops_becomes_unhealthy_and_gets_no_new_connections(balancer, backends):
    lb = balancer()
    servers = backends("a", "b")
    started(lb, servers)
    wait_states(lb, {"a": "healthy", "b": "healthy"})

    servers["b"].stop()
    wait_states(lb, {"a": "healthy", "b": "unhealthy"})
    b = lb.health(PORT)["b"]
    assert (b["reason"], b["description"]) == ("Target.FailedHealthChecks", "Health checks failed")
    assert "refused" in b["last_check"].lower(), b

    before = lb.stats(PORT)["targets"]["b"]
    assert hits(lb, 10) == {"a": 10}
    assert lb.stats(PORT)["targets"]["b"] == before  # not even tried


def test_a_refused_connection_fails_that_client_connection_without_a_retry(balancer, backends):
    # One check only (a long interval): both targets stay healthy in the LB's eyes after b stops.
    lb = balancer(interval=60, healthy_threshold=1)
    servers = backends("a", "b")
    started(lb, servers)
    wait_states(lb, {"a": "healthy", "b": "healthy"})
    servers["b"].stop()

    answered = Counter()
    for _ in range(4):
        try:
            sock, name = connect(lb)
        except (ConnectionResetError, BrokenPipeError):  # the LB's RST, seen by the write or the read
            answered["(reset)"] += 1
        else:
            sock.close()
            answered[name or "(closed)"] += 1

    # Round robin sends every other connection to b; those fail, none is retried on a.
    assert answered["a"] == 2 and answered["(closed)"] + answered["(reset)"] == 2, answered
    stats = lb.stats(PORT)
    assert (stats["accepted"], stats["forwarded"], stats["failed"]) == (4, 2, 2)
    assert stats["targets"]["b"]["failed"] == 2 and stats["targets"]["a"]["failed"] == 0


def test_a_deregistered_target_keeps_its_connections_for_the_delay_then_they_are_cut(balancer, backends):
    lb = balancer(deregistration_delay=3.0)
    servers = backends("a", "b")
    started(lb, servers)
    wait_states(lb, {"a": "healthy", "b": "healthy"})
    # Round robin: the first and third connection go to one target, the second to the other.
    first, one = connect(lb)
    second, other = connect(lb)
    third, again = connect(lb)
    assert one == again != other

    # When that target is deregistered
    lb.set_targets(PORT, {other: servers[other].address})
    draining = lb.health(PORT)[one]
    assert (draining["state"], draining["reason"], draining["description"], draining["connections"]) == (
        "draining",
        "Target.DeregistrationInProgress",
        "Target deregistration is in progress",
        2,
    )

    # Then its open connections go on while it drains; one ends on its own (a half-close passed on)
    first.sendall(b"still there?\n")
    assert first.makefile("rb").readline() == b"still there?\n"
    first.shutdown(socket.SHUT_WR)
    assert first.recv(100) == b""  # the server's FIN, not a reset
    third.sendall(b"and you?\n")
    assert third.makefile("rb").readline() == b"and you?\n"
    assert states(lb)[one] == "draining"

    # And no new connection goes to it
    assert hits(lb, 6) == {other: 6}

    # Once the delay is over the target is gone and what is still open is cut
    eventually(lambda: one not in lb.health(PORT), what=f"{one} deregistered")
    assert ended(third)
    stats = lb.stats(PORT)
    assert stats["cut"] == 1 and stats["targets"][one]["cut"] == 1 and stats["targets"][other]["cut"] == 0
    assert stats["targets"][one]["forwarded"] == 2  # nothing new after the deregistration
    eventually(lambda: lb.stats(PORT)["active"] == 1, what="only the other target's connection open")
    second.sendall(b"unaffected\n")
    assert second.makefile("rb").readline() == b"unaffected\n"
    for sock in (first, second, third):
        sock.close()


def test_registering_a_draining_target_again_makes_it_initial_and_keeps_its_connections(balancer, backends):
    lb = balancer(deregistration_delay=60)
    servers = backends("a", "b")
    started(lb, servers)
    wait_states(lb, {"a": "healthy", "b": "healthy"})
    sock, name = connect(lb)
    lb.set_targets(PORT, {"a": servers["a"].address} if name == "b" else {"b": servers["b"].address})
    assert states(lb)[name] == "draining"

    lb.set_targets(PORT, {n: s.address for n, s in servers.items()})
    assert states(lb)[name] in ("initial", "healthy")  # healthy already, if two checks were that quick
    wait_states(lb, {"a": "healthy", "b": "healthy"})
    sock.sendall(b"kept\n")
    assert sock.makefile("rb").readline() == b"kept\n"
    assert hits(lb, 4) == {"a": 2, "b": 2}
    sock.close()


def test_http_health_checks_get_the_path_and_a_500_is_unhealthy(balancer, backends):
    lb = balancer(protocol="http", path="/health")
    servers = backends("a", "b")
    started(lb, servers)
    wait_states(lb, {"a": "healthy", "b": "healthy"})
    assert set(servers["a"].paths) == {"/health"}

    servers["b"].status = 500
    wait_states(lb, {"a": "healthy", "b": "unhealthy"})
    assert "500" in lb.health(PORT)["b"]["last_check"]
    assert hits(lb, 6) == {"a": 6}

    servers["b"].status = 302  # 200-399 passes
    wait_states(lb, {"a": "healthy", "b": "healthy"})


def test_an_unhealthy_targets_connections_are_reset_while_another_is_healthy(balancer, backends):
    lb = balancer(protocol="http", path="/health")
    servers = backends("a", "b")
    started(lb, servers)
    wait_states(lb, {"a": "healthy", "b": "healthy"})
    connections = {name: sock for sock, name in (connect(lb), connect(lb))}
    assert set(connections) == {"a", "b"}

    servers["b"].status = 500
    wait_states(lb, {"a": "healthy", "b": "unhealthy"})
    assert ended(connections["b"])
    connections["a"].sendall(b"fine\n")
    assert connections["a"].makefile("rb").readline() == b"fine\n"
    assert lb.stats(PORT)["targets"]["b"]["cut"] == 1
    for sock in connections.values():
        sock.close()


def test_with_no_healthy_target_it_fails_open_to_every_registered_target_not_draining(balancer, backends):
    lb = balancer(protocol="http", path="/health", deregistration_delay=60)
    servers = backends("a", "b", "c")
    for server in servers.values():
        server.status = 500  # the health path fails, the traffic port serves
    started(lb, servers)
    wait_states(lb, {"a": "unhealthy", "b": "unhealthy", "c": "unhealthy"})
    lb.set_targets(PORT, {"a": servers["a"].address, "b": servers["b"].address})
    assert states(lb)["c"] == "draining"

    assert hits(lb, 6) == {"a": 3, "b": 3}
    assert lb.stats(PORT)["fail_open"] == 6

    # As soon as one is healthy, it alone gets the traffic
    servers["a"].status = 200
    eventually(lambda: states(lb)["a"] == "healthy", what="a healthy")
    assert hits(lb, 4) == {"a": 4}
    assert lb.stats(PORT)["fail_open"] == 6


def test_listen_is_idempotent_per_port_and_targets_need_a_listener(balancer):
    lb = balancer()
    bound = lb.listen(PORT)
    assert lb.listen(PORT) == bound == lb.address(PORT)[1]
    with pytest.raises(ValueError, match="already listens"):
        lb.listen(PORT, bound + 1 if bound < 65535 else bound - 1)
    with pytest.raises(KeyError, match="no listener for port 443"):
        lb.set_targets(443, {"a": ("127.0.0.1", 1)})
    assert lb.health(PORT) == {} and lb.stats(PORT)["accepted"] == 0


def test_a_connection_with_no_registered_target_is_reset(balancer):
    lb = balancer()
    lb.listen(PORT)
    try:
        sock = socket.create_connection(lb.address(PORT), timeout=5)
    except ConnectionResetError:  # the RST came before connect() returned
        pass
    else:
        assert ended(sock)
        sock.close()
    assert eventually(lambda: lb.stats(PORT)["no_target"]) == 1


def test_close_releases_the_ports_and_ends_open_connections(balancer, backends):
    lb = balancer()
    servers = backends("a")
    started(lb, servers)
    other = lb.listen(443)
    wait_states(lb, {"a": "healthy"})
    sock, _ = connect(lb)
    ports = [lb.address(PORT)[1], other]

    lb.close()
    lb.close()  # idempotent
    assert ended(sock)
    sock.close()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        with socket.create_server(("127.0.0.1", port)):  # the port is free to bind again
            pass
    with pytest.raises(RuntimeError, match="closed"):
        lb.listen(PORT)
    eventually(
        lambda: not [t.name for t in threading.enumerate() if t.name.startswith("nlb-") and t.is_alive()],
        what="the load balancer's threads to end",
    )
