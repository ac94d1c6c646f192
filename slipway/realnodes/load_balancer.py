"""A TCP load balancer on this machine that behaves like an AWS Network Load Balancer, for the
emulator's --real-nodes run: moto holds the load balancer, its listeners, target groups and
registrations; this is what carries the bytes (stdlib only: threads and blocking sockets).

    with LoadBalancer(health=HealthCheck(protocol="http", path="/health"), deregistration_delay=30) as lb:
        port = lb.listen(80)                       # the LB's port 80, on a free local port
        lb.set_targets(80, {"i-0a": ("10.42.1.10", 8080), "i-0b": ("10.42.2.20", 8080)})
        lb.health(80)  # {"i-0a": {"state": "initial", "reason": "Elb.InitialHealthChecking", ...}, ...}

What it does as an NLB does (Elastic Load Balancing's guide, "Health checks for Network Load
Balancer target groups"; the API reference's TargetHealth):

- Each registered target is checked in a thread of its own: a TCP connect, or an HTTP GET of
  `path` whose status must match `matcher` (200-399 by default), every `interval` seconds. A new
  target is `initial` (Elb.InitialHealthChecking) and gets no traffic until `healthy_threshold`
  checks in a row pass; a target that fails `unhealthy_threshold` checks in a row (from initial or
  from healthy) is `unhealthy` (Target.FailedHealthChecks: an NLB gives no finer reason, the
  `last_check` key says what failed), and `healthy_threshold` passes bring it back.
- Each accepted connection goes to one target, round robin over the healthy ones; bytes are pumped
  both ways, and a half-close (FIN) on one side is passed on to the other. If the chosen target
  refuses or does not answer within `connect_timeout`, that client connection is reset: a real NLB
  forwards the client's SYN and does not retry another target, so neither does this.
- Fail open: when no registered target is healthy, connections go round robin to every registered
  target that is not draining, whatever its state, `initial` included ("the effect of the fail
  open is to allow traffic to all targets ... regardless of their health status"): a brand-new
  target group whose targets have not passed a check yet serves traffic, as on AWS. `stats` counts
  those connections as `fail_open`.
- A target that becomes unhealthy while another is healthy has its connections reset, as NLB's
  default target_health_state.unhealthy.connection_termination.enabled=true does (not while the
  LB fails open). `unhealthy_connection_termination=False` leaves them.
- A target left out of `set_targets` is `draining` (Target.DeregistrationInProgress): no new
  connections, no more health checks; its open connections go on until they end or
  `deregistration_delay` has elapsed since deregistration, then they are reset (NLB's target
  group attribute deregistration_delay.connection_termination.enabled=true; AWS's default for an
  NLB is false, where they are left until they end: `connection_termination=False`). The target
  stays draining for the whole delay, as an NLB keeps it, even once its connections are gone; then
  it is no longer listed by `health` (AWS would answer `unused`, Target.NotRegistered, for a target
  asked for by id: `health` lists what is registered, so it leaves it out). Registering it again
  while it drains makes it `initial` again, its open connections kept.

What it does not: no cross-zone or flow-hash routing (round robin instead), no client IP
preservation (targets see this machine's address), no TLS or UDP listeners, no idle timeout. It
accepts a client's connection before it tries the target, so a client whose target refuses sees
its connect succeed and then an RST (an NLB's client gets the RST answering its SYN); a connection
cut while data flows sees a FIN, then an RST.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

INITIAL = "initial"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
DRAINING = "draining"

# TargetHealth's Reason and Description per state, as describe-target-health gives them for an NLB.
REASONS: dict[str, tuple[str | None, str | None]] = {
    INITIAL: ("Elb.InitialHealthChecking", "Initial health checks in progress"),
    HEALTHY: (None, None),
    UNHEALTHY: ("Target.FailedHealthChecks", "Health checks failed"),
    DRAINING: ("Target.DeregistrationInProgress", "Target deregistration is in progress"),
}
_BUFFER = 65536


@dataclass(frozen=True)
class HealthCheck:
    """A target group's health check. `timeout` defaults to the interval; `matcher` is the
    HTTP codes that pass, as a target group's Matcher.HttpCode spells them ("200-399", "200,302")."""

    protocol: str = "tcp"  # "tcp" | "http"
    path: str = "/"
    interval: float = 1.0
    timeout: float | None = None
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    matcher: str = "200-399"

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "http"):
            raise ValueError(f"health check protocol must be tcp or http, not {self.protocol!r}")
        if not self.path.startswith("/"):
            raise ValueError(f"health check path must start with /: {self.path!r}")
        if self.interval <= 0 or (self.timeout is not None and self.timeout <= 0):
            raise ValueError("health check interval and timeout must be positive")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("health check thresholds must be at least 1")
        self.codes()  # a malformed matcher fails here, not in the checker thread

    @property
    def seconds(self) -> float:
        """How long one check may take."""
        return self.timeout if self.timeout is not None else self.interval

    def codes(self) -> frozenset[int]:
        codes: set[int] = set()
        for part in self.matcher.split(","):
            low, _, high = part.strip().partition("-")
            try:
                codes.update(range(int(low), int(high or low) + 1))
            except ValueError as exc:
                raise ValueError(f"not an HTTP code matcher: {self.matcher!r}") from exc
        return frozenset(codes)


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket
    cut: bool = False

    def reset(self) -> bool:
        """End both sides at once (an RST where the peer still sends): the pumps wake and end.
        False if it was reset already."""
        if self.cut:
            return False
        self.cut = True
        for sock in (self.client, self.upstream):
            _abort(sock)
        return True


@dataclass(eq=False)
class _Target:
    id: str
    address: tuple[str, int]
    state: str = INITIAL
    passes: int = 0
    failures: int = 0
    last_check: str = "no check yet"
    generation: int = 0  # bumped on every (re)registration and deregistration: stale probes are dropped
    drain_deadline: float = 0.0
    removed: bool = False
    connections: set[_Connection] = field(default_factory=set)
    thread: threading.Thread | None = None


@dataclass
class _Counters:
    forwarded: int = 0
    failed: int = 0
    cut: int = 0
    active: int = 0


@dataclass(eq=False)
class _Listener:
    port: int
    sock: socket.socket
    targets: dict[str, _Target] = field(default_factory=dict)
    turn: itertools.count = field(default_factory=itertools.count)
    accepted: int = 0
    forwarded: int = 0
    failed: int = 0
    no_target: int = 0
    fail_open: int = 0
    cut: int = 0
    per_target: dict[str, _Counters] = field(default_factory=dict)
    closed: bool = False
    thread: threading.Thread | None = None


class LoadBalancer:
    """One NLB: listeners (the LB's ports) on `host`, each with its registered targets (the
    target group behind that listener). Thread-safe; `close` from any thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        health: HealthCheck,
        deregistration_delay: float,
        connect_timeout: float = 3.0,
        connection_termination: bool = True,
        unhealthy_connection_termination: bool = True,
        log: Callable[[str], object] | None = None,
    ) -> None:
        if deregistration_delay < 0:
            raise ValueError("deregistration_delay must not be negative")
        self.host = host
        self.health_check = health
        self.deregistration_delay = deregistration_delay
        self.connect_timeout = connect_timeout
        self.connection_termination = connection_termination
        self.unhealthy_connection_termination = unhealthy_connection_termination
        self.log = log or (lambda message: None)
        self._codes = health.codes()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # wakes checker threads: registrations, close
        self._listeners: dict[int, _Listener] = {}
        self._closed = False

    # --- listeners -----------------------------------------------------------------------------

    def listen(self, port: int, listen_port: int = 0) -> int:
        """Open the listener for the LB's `port` on `host`:`listen_port` (0: any free port) and
        return the bound port. Idempotent: a second call for `port` returns the same port."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this load balancer is closed")
            existing = self._listeners.get(port)
            if existing is not None:
                bound = existing.sock.getsockname()[1]
                if listen_port and listen_port != bound:
                    raise ValueError(f"port {port} already listens on {self.host}:{bound}, not {listen_port}")
                return bound
            sock = socket.create_server((self.host, listen_port), backlog=128)
            listener = _Listener(port, sock)
            listener.thread = threading.Thread(
                target=self._accept, args=(listener,), name=f"nlb-{port}-accept", daemon=True
            )
            self._listeners[port] = listener
            listener.thread.start()
            bound = sock.getsockname()[1]
        self.log(f"load balancer: port {port} listens on {self.host}:{bound}")
        return bound

    def ports(self) -> list[int]:
        """The load balancer's ports that have a listener."""
        with self._lock:
            return sorted(self._listeners)

    def address(self, port: int) -> tuple[str, int]:
        """Where clients reach the LB's `port`: (host, bound port)."""
        with self._lock:
            host, bound = self._listener(port).sock.getsockname()[:2]
        return host, bound

    def unlisten(self, port: int) -> None:
        """Delete the listener: its port closes, its targets go at once, their connections are reset."""
        with self._lock:
            listener = self._listeners.pop(port, None)
            if listener is None:
                return
            doomed = self._drop_listener(listener)
            self._changed.notify_all()
        self._join(doomed)

    def _listener(self, port: int) -> _Listener:
        listener = self._listeners.get(port)
        if listener is None:
            raise KeyError(f"the load balancer has no listener for port {port} (listen first)")
        return listener

    # --- targets -------------------------------------------------------------------------------

    def set_targets(self, port: int, targets: dict[str, tuple[str, int]]) -> None:
        """The registered targets of `port`'s listener (target id -> (ip, port)). A new target, or
        one registered again while it drains, or one whose address changed, starts `initial`; a
        target left out starts draining."""
        wanted = {target_id: (str(ip), int(target_port)) for target_id, (ip, target_port) in targets.items()}
        messages = []
        with self._lock:
            listener = self._listener(port)
            for target_id, address in wanted.items():
                target = listener.targets.get(target_id)
                if target is None:
                    target = _Target(target_id, address)
                    listener.targets[target_id] = target
                    listener.per_target.setdefault(target_id, _Counters())
                    target.thread = threading.Thread(
                        target=self._watch, args=(listener, target), name=f"nlb-{port}-{target_id}", daemon=True
                    )
                    target.thread.start()
                    messages.append(f"{target_id} {address[0]}:{address[1]} registered")
                elif target.state == DRAINING or target.address != address:
                    was = target.state
                    target.address, target.state, target.passes, target.failures = address, INITIAL, 0, 0
                    target.generation += 1
                    messages.append(f"{target_id} {address[0]}:{address[1]} registered again (was {was})")
            now = time.monotonic()
            for target in listener.targets.values():
                if target.id not in wanted and target.state != DRAINING:
                    target.state = DRAINING
                    target.drain_deadline = now + self.deregistration_delay
                    target.generation += 1
                    messages.append(
                        f"{target.id} draining ({len(target.connections)} open connections, "
                        f"{self.deregistration_delay:g}s)"
                    )
            self._changed.notify_all()
        for message in messages:
            self.log(f"load balancer: port {port}: {message}")

    def health(self, port: int) -> dict[str, dict]:
        """Per registered (or draining) target id: state (initial, healthy, unhealthy, draining),
        reason and description as AWS's TargetHealth gives them (None when healthy), address,
        open connections and what the last check saw. A target whose deregistration has completed
        is not listed."""
        with self._lock:
            listener = self._listener(port)
            answer = {}
            for target in listener.targets.values():
                reason, description = REASONS[target.state]
                answer[target.id] = {
                    "state": target.state,
                    "reason": reason,
                    "description": description,
                    "address": target.address,
                    "connections": len(target.connections),
                    "last_check": target.last_check,
                }
            return answer

    def stats(self, port: int) -> dict:
        """The listener's counters: connections accepted, forwarded (the target accepted), failed
        (the target refused or timed out), no_target (nothing registered), fail_open (forwarded
        while no target was healthy), cut (reset by deregistration or unhealthiness), active; and
        per target id (including targets no longer registered): forwarded, failed, cut, active."""
        with self._lock:
            listener = self._listener(port)
            return {
                "accepted": listener.accepted,
                "forwarded": listener.forwarded,
                "failed": listener.failed,
                "no_target": listener.no_target,
                "fail_open": listener.fail_open,
                "cut": listener.cut,
                "active": sum(counters.active for counters in listener.per_target.values()),
                "targets": {
                    target_id: {
                        "forwarded": counters.forwarded,
                        "failed": counters.failed,
                        "cut": counters.cut,
                        "active": counters.active,
                    }
                    for target_id, counters in listener.per_target.items()
                },
            }

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every listener (their ports are free again), stop the health checks and reset
        every open connection. Idempotent."""
        with self._lock:
            self._closed = True
            listeners, self._listeners = list(self._listeners.values()), {}
            doomed = [thread for listener in listeners for thread in self._drop_listener(listener)]
            self._changed.notify_all()
        self._join(doomed)

    def __enter__(self) -> LoadBalancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_listener(self, listener: _Listener) -> list[threading.Thread]:
        """(lock held) Close the listening socket, remove its targets, reset their connections."""
        listener.closed = True
        with contextlib.suppress(OSError):
            listener.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        listener.sock.close()
        threads = [listener.thread] if listener.thread else []
        for target in listener.targets.values():
            target.removed = True
            self._cut(listener, target.id, target.connections)
            if target.thread:
                threads.append(target.thread)
        listener.targets.clear()
        return threads

    def _join(self, threads: list[threading.Thread]) -> None:
        # A checker may be inside one probe (at most the check's timeout) when told to stop.
        deadline = time.monotonic() + self.health_check.seconds + 2
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # --- health checks -------------------------------------------------------------------------

    def _watch(self, listener: _Listener, target: _Target) -> None:
        """The target's own thread: checks it every interval while registered; while it drains,
        waits for the end of the delay (or a registration again), then completes deregistration."""
        while True:
            with self._lock:
                if self._closed or target.removed:
                    return
                stopped = functools.partial(self._stopped, target, target.generation)
                if target.state == DRAINING:
                    remaining = target.drain_deadline - time.monotonic()
                    if remaining > 0:
                        self._changed.wait_for(stopped, remaining)
                        continue
                    cut = self._complete_deregistration(listener, target)
                    break
                address = target.address
            passed, seen = self._probe(address)
            with self._lock:
                if not stopped():
                    self._record(listener, target, passed, seen)
                    self._changed.wait_for(stopped, self.health_check.interval)
        self.log(f"load balancer: port {listener.port}: {target.id} deregistered ({cut} connections reset)")

    def _stopped(self, target: _Target, generation: int) -> bool:
        return self._closed or target.removed or target.generation != generation

    def _complete_deregistration(self, listener: _Listener, target: _Target) -> int:
        """(lock held) The delay is over: reset what is still open, forget the target."""
        target.removed = True
        listener.targets.pop(target.id, None)
        return self._cut(listener, target.id, target.connections) if self.connection_termination else 0

    def _cut(self, listener: _Listener, target_id: str, connections: set[_Connection]) -> int:
        """(lock held) Reset these connections, counted when the LB decides, not when they end."""
        cut = sum(connection.reset() for connection in list(connections))
        listener.cut += cut
        listener.per_target[target_id].cut += cut
        return cut

    def _probe(self, address: tuple[str, int]) -> tuple[bool, str]:
        check = self.health_check
        if check.protocol == "tcp":
            try:
                socket.create_connection(address, timeout=check.seconds).close()
            except TimeoutError:
                return False, f"TCP connect timed out after {check.seconds:g}s"
            except OSError as exc:
                return False, f"TCP connect failed: {exc.strerror or exc}"
            return True, "TCP connect succeeded"
        connection = http.client.HTTPConnection(*address, timeout=check.seconds)
        try:
            connection.request("GET", check.path, headers={"User-Agent": "ELB-HealthChecker/2.0"})
            status = connection.getresponse().status
        except TimeoutError:
            return False, f"HTTP GET {check.path} timed out after {check.seconds:g}s"
        except (OSError, http.client.HTTPException) as exc:
            return False, f"HTTP GET {check.path} failed: {type(exc).__name__}: {exc}"
        finally:
            connection.close()
        return status in self._codes, f"HTTP GET {check.path}: {status}"

    def _record(self, listener: _Listener, target: _Target, passed: bool, seen: str) -> None:
        """(lock held) One check's result: count it, change state at a threshold."""
        target.last_check = seen
        check = self.health_check
        was = target.state
        if passed:
            target.passes, target.failures = target.passes + 1, 0
            if was != HEALTHY and target.passes >= check.healthy_threshold:
                target.state = HEALTHY
        else:
            target.passes, target.failures = 0, target.failures + 1
            if was != UNHEALTHY and target.failures >= check.unhealthy_threshold:
                target.state = UNHEALTHY
                others_healthy = any(t.state == HEALTHY for t in listener.targets.values())
                if self.unhealthy_connection_termination and others_healthy:
                    self._cut(listener, target.id, target.connections)
        if target.state != was:
            self.log(f"load balancer: port {listener.port}: {target.id} {was} -> {target.state} ({seen})")

    # --- traffic -------------------------------------------------------------------------------

    def _accept(self, listener: _Listener) -> None:
        while True:
            try:
                client, _ = listener.sock.accept()
            except OSError as exc:
                if listener.closed:
                    return
                self.log(f"load balancer: port {listener.port}: accept failed: {exc}")
                time.sleep(0.05)  # EMFILE and the like: do not spin
                continue
            with self._lock:
                listener.accepted += 1
            threading.Thread(
                target=self._forward, args=(listener, client), name=f"nlb-{listener.port}-conn", daemon=True
            ).start()

    def _choose(self, listener: _Listener) -> tuple[_Target | None, bool]:
        """(lock held) The next target round robin: over the healthy ones, or, when none is,
        over every registered target not draining (fail open)."""
        targets = [t for t in listener.targets.values() if t.state == HEALTHY]
        fail_open = not targets
        if fail_open:
            targets = [t for t in listener.targets.values() if t.state != DRAINING]
        if not targets:
            return None, False
        return targets[next(listener.turn) % len(targets)], fail_open

    def _forward(self, listener: _Listener, client: socket.socket) -> None:
        with self._lock:
            target, fail_open = self._choose(listener)
            if target is None:
                listener.no_target += 1
            else:
                address = target.address
        if target is None:
            _abort(client, close=True)
            return
        try:
            upstream = socket.create_connection(address, timeout=self.connect_timeout)
        except OSError as exc:
            with self._lock:
                listener.failed += 1
                listener.per_target[target.id].failed += 1
            self.log(f"load balancer: port {listener.port}: {target.id} {address[0]}:{address[1]}: {exc}")
            _abort(client, close=True)
            return
        upstream.settimeout(None)
        connection = _Connection(client, upstream)
        with self._lock:
            listener.forwarded += 1
            listener.per_target[target.id].forwarded += 1
            listener.per_target[target.id].active += 1
            listener.fail_open += fail_open
            target.connections.add(connection)
            if target.removed or listener.closed:  # deregistered, or closed, while connecting
                self._cut(listener, target.id, {connection})
        try:
            _pump_both(client, upstream)
        finally:
            with self._lock:
                target.connections.discard(connection)
                listener.per_target[target.id].active -= 1
            client.close()
            upstream.close()


def _pump_both(client: socket.socket, upstream: socket.socket) -> None:
    """Bytes both ways until both directions have ended; returns when they have."""
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until `source` ends, then half-close `sink` (the FIN passed on). An error (a reset,
    or a cut) ends both directions."""
    try:
        while data := source.recv(_BUFFER):
            sink.sendall(data)
    except OSError:
        _abort(source)
        _abort(sink)
        return
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _abort(sock: socket.socket, *, close: bool = False) -> None:
    """Make closing `sock` an RST (SO_LINGER 0). `close`: close it now, the peer sees only the RST
    (nothing else uses the socket). Otherwise shut it down, which wakes a thread blocked on it
    (the peer sees a FIN, then the RST when that thread closes it)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if not close:
            sock.shutdown(socket.SHUT_RDWR)
    if close:
        sock.close()
