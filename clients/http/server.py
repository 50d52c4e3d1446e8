"""The gateway's HTTP server: waitress, with limits that a slow or hostile peer cannot outwait.

This module owns how HTTP is served (chosen by measurement: README, "HTTP gateway").
waitress reads requests on one event loop and hands only complete requests to its
worker threads, so a peer that drips its headers holds a socket, never a thread. On top
of that:

- **Deadlines**, total ones that a dripped byte does not renew: a new connection's first
  request head must be in within `header_timeout_s` of its accept, a later request's
  head within `header_timeout_s` of its first byte, and a request's body within
  `request_timeout_s` of its first byte; past them the connection is closed. A
  kept-alive connection may wait `idle_timeout_s` between requests, and what is queued to
  send must all be taken by the peer within `response_timeout_s` of the first byte queued
  since the output was last empty, so a peer that reads its replies a byte at a time
  holds its connection no longer than one that drips its request. All on
  time.monotonic(): waitress's own sweep (on the wall clock, renewed by any byte) is
  replaced by ours.
- **Pipelining**: at most `pipelined` requests wait on one connection; bytes past them
  stay unparsed until those are answered, so one packet of requests cannot queue
  hundreds of replies.
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
import math
import socket
import struct
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

ABORT = struct.pack("ii", 1, 0)
"""SO_LINGER on, for 0 s: closing the socket resets the connection, dropping unsent data."""

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
    response_timeout_s: float = config.HTTP_RESPONSE_TIMEOUT_S  # output queued to taken
    pipelined: int = 8  # requests queued on one connection (the rest wait unparsed)
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


class _Unparsed(HTTPRequestParser):
    """What a connection sent past its share of pipelined requests: kept as bytes until
    the requests before it are answered, then parsed as if it had just arrived (at most
    one read: the connection is not read while it holds them)."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.data = b""

    def received(self, data: bytes) -> int:
        self.data += data
        return len(data)


class _DeadlineChannel(HTTPChannel):
    """A waitress connection that keeps the times its deadlines run from, judges each
    request at its head, bounds its pipelined requests, and counts itself in its
    server's connections per address."""

    server: DeadlineServer
    request_started_s: float | None = None  # monotonic: the unfinished request's first byte
    output_since_s: float | None = None  # monotonic: output queued, unsent since
    had_head = False  # a request head has arrived (later ones are timed from their first byte)
    refused = False  # a request was refused at its head: read nothing more
    counted = False  # in the server's connections per address (by `handle_accept`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.accepted_s = self.sent_s = time.monotonic()  # sent_s: output last all sent
        super().__init__(*args, **kwargs)

    def parser_class(self, adj: Adjustments) -> HTTPRequestParser:  # type: ignore[override]
        """waitress makes each request's parser here (a class in waitress's own channel);
        past the connection's share of queued requests, the rest is kept unparsed."""
        if len(self.requests) >= self.server.limits.pipelined:
            return _Unparsed(adj)
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
        """waitress's, once what was kept unparsed is parsed (when nothing is queued)."""
        if isinstance(self.request, _Unparsed) and not (self.requests or self.total_outbufs_len):
            unparsed, self.request = self.request.data, None
            self.received(unparsed)
        return not (self.refused or isinstance(self.request, _Unparsed)) and bool(
            super().readable()
        )

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started_s = time.monotonic()
        handled: bool = super().received(data)
        if self.request is None:
            self.request_started_s = None
        return handled

    def write_soon(self, data: bytes) -> int:
        """waitress's (on a worker thread), keeping when the output began to wait."""
        if data and self.output_since_s is None:
            self.output_since_s = time.monotonic()
        queued = super().write_soon(data)
        self._note_sent()
        return queued

    def handle_write(self) -> None:
        super().handle_write()
        self._note_sent()

    def _note_sent(self) -> None:
        if not self.total_outbufs_len:
            self.output_since_s = None
            self.sent_s = time.monotonic()

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        if self.counted:  # once: a channel may be deleted twice
            self.counted = False
            self.server.forget_connection(_host(self.addr))

    def awaiting_request(self) -> bool:
        """Whether the peer owes this connection a request (nothing to serve or send)."""
        return not (
            self.requests
            or self.total_outbufs_len
            or self.will_close
            or self.close_when_flushed
            or isinstance(self.request, _Unparsed)  # in already, parsed at the next turn
        )

    def waiting_since(self) -> float:
        """When the unfinished request began (its first byte; else the accept)."""
        return self.accepted_s if self.request_started_s is None else self.request_started_s

    def overdue(self, now: float, limits: HttpLimits) -> bool:
        """Whether a request's head or body, the taking of the output, or the next request
        on a kept-alive connection is late (`now`: time.monotonic())."""
        if self.total_outbufs_len:
            if self.output_since_s is None:  # queued as the event loop found it all sent
                self.output_since_s = now
            return self.output_since_s < now - limits.response_timeout_s
        if not self.awaiting_request():
            return False
        request = self.request
        if request is not None and request.headers_finished:
            return self.waiting_since() < now - limits.request_timeout_s
        if self.had_head and request is None:  # kept alive between requests
            return self.sent_s < now - limits.idle_timeout_s
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
        # waitress's sweep runs on the wall clock (a clock set back would stop it) and
        # spares a connection that receives a byte now and then: `sweep` replaces it.
        self.next_channel_cleanup = math.inf  # type: ignore[assignment]  # stubs: int
        self._next_sweep_s = 0.0

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

    def readable(self) -> bool:
        """waitress's, sweeping the connections first every `cleanup_interval`."""
        moment = time.monotonic()
        if moment >= self._next_sweep_s:
            self._next_sweep_s = moment + self.adj.cleanup_interval
            self.sweep(moment)
        return bool(super().readable())

    def sweep(self, now: float) -> None:
        """Close the connections past a deadline (`now`: time.monotonic())."""
        for channel in list(self._channels.values()):
            if not channel.overdue(now, self.limits):
                continue
            if not channel.total_outbufs_len:
                channel.will_close = True  # closed at its next turn (it is writable)
                continue
            self._refusals.warning(
                ("slow reader",), "closed a connection from %s: %d bytes of replies not "
                "taken within %g s", _host(channel.addr), channel.total_outbufs_len,
                self.limits.response_timeout_s,
            )  # fmt: skip
            # now, and reset: its socket may never be writable again (a full send buffer,
            # taken a byte at a time), a worker thread writing to it is told it is gone,
            # and what the kernel still holds for it is dropped, not sent at its pace
            if channel.socket is not None:
                channel.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT)
            channel.handle_close()

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
    shortest_s = min(
        limits.request_timeout_s,
        limits.idle_timeout_s,
        limits.header_timeout_s,
        limits.response_timeout_s,
    )
    return DeadlineServer(
        app,
        limits,
        host=host,
        port=port,
        threads=limits.threads,
        # waitress stops accepting at its own limit; ours is below it, so a connection
        # past ours is accepted, to make room for it or to close it (`handle_accept`).
        connection_limit=limits.connections + ABOVE_OUR_LIMIT,
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
