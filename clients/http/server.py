"""The gateway's HTTP server: waitress, with limits that a slow or hostile peer cannot outwait.

This module owns how HTTP is served (chosen by measurement: README, "HTTP gateway").
waitress reads requests on one event loop and hands only complete requests to its
worker threads, so a peer that drips its headers holds a socket, never a thread. On top
of that:

- **Deadlines**, total ones that a dripped byte does not renew: a new connection's first
  request head must be in within `header_timeout_s` of its accept, a later request's
  head within `header_timeout_s` of its first byte, and a request's body within
  `request_timeout_s` of its first byte; past them the connection is closed. A
  kept-alive connection may wait `idle_timeout_s` between requests.
- **The request policy at the head**: with `DeadlineServer.guard`, the policy of
  `clients.http.guard` judges each request as soon as its head is in, on the event
  loop; a refused request is answered and its connection closed without reading its
  body, and no worker thread waits on it.
- **Connections**: at most `connections` in all and `per_address` from one client
  address (more are closed at once). A new connection that finds them all taken closes
  the one that has waited longest for an unfinished request, so connections that drip,
  from however many addresses, cannot lock out a client that sends its request at once.
- The header and body sizes are capped.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import WSGITask
from waitress.utilities import Error

from clients.http.guard import Guard, Policy, Refusal, WsgiApp
from protocol import config
from protocol.logs import Throttle

log = logging.getLogger("lss.gateway")

# waitress counts its listening socket and its wake-up pipe among its connections, and
# accepts below its limit: one more, and it accepts when all of ours are taken.
ABOVE_OUR_LIMIT = 3
# Connections accepted per turn of the event loop: a queue of connections waiting to be
# accepted (an attack's) must not take a turn of the loop each. At most an eighth of
# the limit, so that a new connection is read (a turn later) long before it could be
# the one that has waited longest, closed to make room.
ACCEPT_BATCH = 128

UNCHECKED = Refusal(500, "the gateway could not check this request", "check")
"""The answer when the policy fails on a request's head: refused, never let through."""


@dataclass(frozen=True)
class HttpLimits:
    """What one peer may take of the server (sizes in bytes, times in seconds)."""

    connections: int = config.HTTP_MAX_CONNECTIONS
    threads: int = config.HTTP_THREADS
    request_timeout_s: float = config.HTTP_REQUEST_TIMEOUT_S  # a request's first to last byte
    per_address: int = config.HTTP_CONNECTIONS_PER_ADDRESS  # connections from one address
    idle_timeout_s: float = 30.0  # a kept-alive connection between requests
    header_timeout_s: float = config.HTTP_HEADER_TIMEOUT_S  # accept (or first byte) to head
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = config.MAX_MESSAGE_BYTES  # what one broker message may carry


class _RefusedHead(Error):
    """A request refused by the policy at its head: waitress answers it with `refusal`
    (on a worker thread, briefly) and closes the connection."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], str]:
        status, headers, body = self.refusal.response()
        return status, headers, body  # type: ignore[return-value]  # waitress writes bytes


class _HeadCheckedParser(HTTPRequestParser):
    """waitress's request parser, asking `judge` about the request once its head is in.

    A refused request is complete at once, with its refusal as its error; the rest of
    what arrived (its body, later requests) is dropped unread.
    """

    def __init__(self, adj: Adjustments, judge: Callable[[HTTPRequestParser], Error | None]):
        super().__init__(adj)
        self._judge: Callable[[HTTPRequestParser], Error | None] | None = judge

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self._judge is None or not self.headers_finished or self.error is not None:
            return consumed
        judge, self._judge = self._judge, None  # once per request
        error = judge(self)
        if error is None:
            return consumed
        self.error = error
        self.completed = True
        self.expect_continue = False  # no "100 Continue": the body is not wanted
        return len(data)


class _DeadlineChannel(HTTPChannel):
    """A waitress connection that keeps the times its deadlines run from, judges each
    request at its head, and counts itself in its server's connections per address."""

    server: DeadlineServer
    request_started_s: float | None = None  # monotonic: the unfinished request's first byte
    had_head = False  # a request head has arrived (later ones are timed from their first byte)
    refused = False  # a request was refused at its head: read nothing more
    counted = False  # in the server's connections per address (by `handle_accept`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.accepted_s = time.monotonic()
        super().__init__(*args, **kwargs)

    def parser_class(self, adj: Adjustments) -> HTTPRequestParser:  # type: ignore[override]
        """waitress makes each request's parser here (a class in waitress's own channel)."""
        return _HeadCheckedParser(adj, self._head_in)

    def _head_in(self, request: HTTPRequestParser) -> Error | None:
        """The server's policy on a request whose head is in (None: it may go on)."""
        self.had_head = True
        policy = self.server.policy
        if policy is None:
            return None
        try:
            task = WSGITask(self, request)  # type: ignore[arg-type]  # the stubs say Error
            environ = task.get_environment()  # what the app will see
            refusal = policy.refusal(environ)
            if refusal is not None:
                policy.log_refusal(environ, refusal)
        except Exception:  # a failed check refuses
            log.exception("could not check a request from %s: refused", _host(self.addr))
            refusal = UNCHECKED
        if refusal is None:
            return None
        self.refused = True
        return _RefusedHead(refusal)

    def readable(self) -> bool:
        return not self.refused and bool(super().readable())

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started_s = time.monotonic()
        handled: bool = super().received(data)
        if self.request is None:
            self.request_started_s = None
        return handled

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        if self.counted:  # once: a channel may be deleted twice
            self.counted = False
            self.server.forget_connection(_host(self.addr))

    def awaiting_request(self) -> bool:
        """Whether the peer owes this connection a request (nothing to serve or send)."""
        return not (
            self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed
        )

    def waiting_since(self) -> float:
        """When the unfinished request began (its first byte; else the accept)."""
        return self.accepted_s if self.request_started_s is None else self.request_started_s

    def overdue(self, now: float, limits: HttpLimits) -> bool:
        """Whether a request's head or body is late (`now`: time.monotonic())."""
        if not self.awaiting_request():
            return False
        request = self.request
        if request is not None and request.headers_finished:
            return self.waiting_since() < now - limits.request_timeout_s
        if self.had_head and request is None:
            return False  # kept alive between requests: waitress's idle timeout
        started = self.waiting_since() if self.had_head else self.accepted_s
        return started < now - limits.header_timeout_s


class DeadlineServer(TcpWSGIServer):
    """waitress's TCP server, also closing connections whose request is overdue or that
    are over their address's share, and making room for a new connection when full."""

    channel_class = _DeadlineChannel
    policy: Policy | None = None  # judges each request at its head (`guard`)

    def __init__(self, app: WsgiApp, limits: HttpLimits, **adjustments: Any) -> None:
        self.limits = limits
        self.connections_from: Counter[str] = Counter()
        self._refusals = Throttle(log, burst=1, window_s=10.0)
        self.channels: dict[int, Any] = {}  # waitress's socket map (the server's too)
        super().__init__(app, map=self.channels, adj=Adjustments(**adjustments))

    def guard(self, policy: Policy) -> None:
        """Apply `policy` to every request: at its head, and again (`Guard`) before the app."""
        self.policy = policy
        self.application = Guard(self.application, policy)

    def handle_accept(self) -> None:
        """waitress's, for every connection waiting to be accepted (ACCEPT_BATCH at most),
        closing at once one over its address's share; then, if they are more than the
        limit, closing those that have waited longest for an unfinished request."""
        for _ in range(max(1, min(ACCEPT_BATCH, self.limits.connections // 8))):
            if not self._accept_one():
                break
        excess = len(self._channels) - self.limits.connections
        if excess > 0:
            self._make_room(excess)

    def _accept_one(self) -> bool:
        """Accept one waiting connection; False when none was waiting."""
        try:
            accepted = self.accept()
            if accepted is None:
                return False
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:  # the peer is gone already: as waitress does, carry on
            return False
        addr = self.fix_addr(addr)
        host = _host(addr)
        if self.connections_from[host] >= self.limits.per_address:
            conn.close()
            self._refusals.warning(
                ("per address", host), "closed a connection from %s: it holds %d already",
                host, self.limits.per_address,
            )  # fmt: skip
            return True
        channel = _DeadlineChannel(self, conn, addr, self.adj, map=self.channels)
        self.connections_from[host] += 1
        channel.counted = True
        return True

    def _make_room(self, count: int) -> None:
        """Close the `count` connections that have waited longest for a request (the
        newest ones, just accepted, if the others all have a whole request)."""
        waiting = [channel for channel in self._channels.values() if channel.awaiting_request()]
        oldest = heapq.nsmallest(count, waiting, key=_DeadlineChannel.waiting_since)
        for channel in oldest:
            channel.handle_close()  # no worker thread has it: it has no request
        if oldest:
            self._refusals.warning(
                ("make room",), "all %d connections taken: closed %d waiting longest for a "
                "request (the first from %s, after %.1f s)", self.limits.connections,
                len(oldest), _host(oldest[0].addr), time.monotonic() - oldest[0].waiting_since(),
            )  # fmt: skip

    def forget_connection(self, host: str) -> None:
        self.connections_from[host] -= 1
        if self.connections_from[host] <= 0:
            del self.connections_from[host]

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[arg-type]  # the stubs say int: it is time.time()
        moment = time.monotonic()
        for channel in list(self._channels.values()):
            if channel.overdue(moment, self.limits):
                channel.will_close = True

    @property
    def _channels(self) -> dict[int, _DeadlineChannel]:
        """waitress's open connections by descriptor."""
        return cast(dict[int, _DeadlineChannel], self.active_channels)  # the stubs are wrong

    @property
    def port(self) -> int:
        return int(self.getsockname()[1])

    @property
    def address(self) -> str:
        """`HOST:PORT` as bound (an IPv6 host in brackets)."""
        host, port = self.getsockname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_server(app: WsgiApp, host: str, port: int, limits: HttpLimits) -> DeadlineServer:
    """A server bound to `host:port` (0: a free port), not serving yet; OSError if unbound."""
    shortest_s = min(limits.request_timeout_s, limits.idle_timeout_s, limits.header_timeout_s)
    return DeadlineServer(
        app,
        limits,
        host=host,
        port=port,
        threads=limits.threads,
        # waitress stops accepting at its own limit; ours is below it, so a connection
        # past ours is accepted, to make room for it or to close it (`handle_accept`).
        connection_limit=limits.connections + ABOVE_OUR_LIMIT,
        channel_timeout=int(limits.idle_timeout_s),
        cleanup_interval=max(1, int(shortest_s / 4)),
        max_request_header_size=limits.max_header_bytes,
        max_request_body_size=limits.max_body_bytes,
        ident="lss-gateway",
        expose_tracebacks=False,
        # select() fails on a descriptor past 1023 and would end the event loop for good
        # once about 1000 connections are open (the connection limit allows that many).
        asyncore_use_poll=True,
    )


def serve_until(server: DeadlineServer, stop: threading.Event) -> None:
    """Serve on a thread until `stop` is set; then let running requests finish (5 s at most).

    The event loop thread is a daemon: waitress has no way to end its loop from another
    thread while connections are open, and the process exits right after this returns.
    """
    thread = threading.Thread(target=_run_then_stop, args=(server, stop), name="lss-http",
                              daemon=True)  # fmt: skip
    thread.start()
    stop.wait()
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)


def _run_then_stop(server: DeadlineServer, stop: threading.Event) -> None:
    """Serve; should the event loop ever end (it only does by an error), the gateway
    stops rather than live on without serving."""
    try:
        server.run()
    finally:
        stop.set()


def _host(addr: Any) -> str:
    """The client address of a waitress `addr` ((host, port[, ...]) for TCP)."""
    return str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)
