"""The gateway's HTTP server: waitress, with limits that a slow or hostile peer cannot outwait.

This module owns how HTTP is served (chosen by measurement: README, "HTTP gateway").
waitress reads requests on one event loop and hands only complete requests to its
worker threads, so a peer that drips its headers holds a socket, never a thread. On top
of waitress's own idle timeout (`channel_timeout`) a request must arrive whole, headers
and body, within `request_timeout_s` of its first byte, or its connection is closed; a
connection that sends nothing at all is closed after `silent_timeout_s`. The
connections are capped in all and per client address (one address cannot take every
slot with idle sockets: the connections past its share are closed at once), and so are
the header and body sizes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from clients.http.guard import WsgiApp
from protocol import config
from protocol.logs import Throttle

log = logging.getLogger("lss.gateway")


@dataclass(frozen=True)
class Limits:
    """What one peer may take of the server (sizes in bytes, times in seconds)."""

    connections: int = 1000
    threads: int = 8
    request_timeout_s: float = 10.0  # first byte to last byte of a request
    per_address: int = config.HTTP_CONNECTIONS_PER_ADDRESS  # connections from one address
    idle_timeout_s: float = 30.0  # a kept-alive connection with nothing to say
    silent_timeout_s: float = 5.0  # a connection that has not sent a byte yet
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = config.MAX_MESSAGE_BYTES  # what one broker message may carry


class _DeadlineChannel(HTTPChannel):
    """A waitress connection that remembers when its unfinished request began, whether
    it ever sent anything, and counts itself in its server's connections per address."""

    server: DeadlineServer
    request_started_s: float | None = None
    heard = False  # any byte received yet

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started_s = time.time()
        self.heard = self.heard or bool(data)
        handled: bool = super().received(data)
        if self.request is None:
            self.request_started_s = None
        return handled

    counted = False  # in the server's connections per address (by `handle_accept`)

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        if self.counted:  # once: a channel may be deleted twice
            self.counted = False
            self.server.forget_connection(_host(self.addr))

    def overdue(self, now: float, request_timeout_s: float, silent_timeout_s: float) -> bool:
        """Whether a request is late, or the peer has said nothing for too long."""
        if self.requests:
            return False
        if self.request_started_s is not None:
            return self.request_started_s < now - request_timeout_s
        return not self.heard and self.creation_time < now - silent_timeout_s


class DeadlineServer(TcpWSGIServer):
    """waitress's TCP server, also closing connections whose request is overdue, that
    stay silent, or that are over their address's share."""

    channel_class = _DeadlineChannel

    def __init__(self, app: WsgiApp, limits: Limits, **adjustments: Any) -> None:
        self.limits = limits
        self.connections_from: Counter[str] = Counter()
        self._refusals = Throttle(log, burst=1, window_s=10.0)
        self.channels: dict[int, Any] = {}  # waitress's socket map (the server's too)
        super().__init__(app, map=self.channels, adj=Adjustments(**adjustments))

    def handle_accept(self) -> None:
        """waitress's, closing at once a connection over its address's share."""
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:  # the peer is gone already: as waitress does, carry on
            return
        addr = self.fix_addr(addr)
        host = _host(addr)
        if self.connections_from[host] >= self.limits.per_address:
            conn.close()
            self._refusals.warning(
                ("per address", host), "closed a connection from %s: it holds %d already",
                host, self.limits.per_address,
            )  # fmt: skip
            return
        channel = _DeadlineChannel(self, conn, addr, self.adj, map=self.channels)
        self.connections_from[host] += 1
        channel.counted = True

    def forget_connection(self, host: str) -> None:
        self.connections_from[host] -= 1
        if self.connections_from[host] <= 0:
            del self.connections_from[host]

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[arg-type]  # the stubs say int: it is time.time()
        channels = cast(dict[int, _DeadlineChannel], self.active_channels)  # the stubs are wrong
        for channel in list(channels.values()):
            if channel.overdue(now, self.limits.request_timeout_s, self.limits.silent_timeout_s):
                channel.will_close = True

    @property
    def port(self) -> int:
        return int(self.getsockname()[1])

    @property
    def address(self) -> str:
        """`HOST:PORT` as bound (an IPv6 host in brackets)."""
        host, port = self.getsockname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_server(app: WsgiApp, host: str, port: int, limits: Limits) -> DeadlineServer:
    """A server bound to `host:port` (0: a free port), not serving yet; OSError if unbound."""
    shortest_s = min(limits.request_timeout_s, limits.idle_timeout_s, limits.silent_timeout_s)
    return DeadlineServer(
        app,
        limits,
        host=host,
        port=port,
        threads=limits.threads,
        connection_limit=limits.connections,
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
