"""The gateway's HTTP server: waitress, with limits that a slow or hostile peer cannot outwait.

This module owns how HTTP is served (chosen by measurement: README, "HTTP gateway").
waitress reads requests on one event loop and hands only complete requests to its
worker threads, so a peer that drips its headers holds a socket, never a thread. On top
of waitress's own idle timeout (`channel_timeout`) a request must arrive whole, headers
and body, within `request_timeout_s` of its first byte, or its connection is closed; the
connections are capped, and so are the header and body sizes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from clients.http.guard import WsgiApp
from protocol import config


@dataclass(frozen=True)
class Limits:
    """What one peer may take of the server (sizes in bytes, times in seconds)."""

    connections: int = 1000
    threads: int = 8
    request_timeout_s: float = 10.0  # first byte to last byte of a request
    idle_timeout_s: float = 30.0  # a kept-alive connection with nothing to say
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = config.MAX_MESSAGE_BYTES  # what one broker message may carry


class _DeadlineChannel(HTTPChannel):
    """A waitress connection that remembers when its unfinished request began."""

    request_started_s: float | None = None

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started_s = time.time()
        handled: bool = super().received(data)
        if self.request is None:
            self.request_started_s = None
        return handled


class DeadlineServer(TcpWSGIServer):
    """waitress's TCP server, also closing connections whose request is overdue."""

    channel_class = _DeadlineChannel

    def __init__(self, app: WsgiApp, request_timeout_s: float, **adjustments: Any) -> None:
        self.request_timeout_s = request_timeout_s
        super().__init__(app, adj=Adjustments(**adjustments))

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[arg-type]  # the stubs say int: it is time.time()
        cutoff = now - self.request_timeout_s
        channels = cast(dict[int, HTTPChannel], self.active_channels)  # the stubs are wrong
        for channel in list(channels.values()):
            started = getattr(channel, "request_started_s", None)
            if started is not None and started < cutoff and not channel.requests:
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
    return DeadlineServer(
        app,
        limits.request_timeout_s,
        host=host,
        port=port,
        threads=limits.threads,
        connection_limit=limits.connections,
        channel_timeout=int(limits.idle_timeout_s),
        cleanup_interval=max(1, int(min(limits.request_timeout_s, limits.idle_timeout_s) / 4)),
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
