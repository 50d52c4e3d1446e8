"""One DEALER socket to the broker, driving a `Session` (clients.session) through it.

A `Transport` has no thread of its own: whoever drives it (the thread that leads in
`Client`, the caller of `Client.map`, the reader task of `AsyncClient`) calls `flush`
to send what the session has queued, waits until the socket is readable, then calls
`receive` and `keep_alive`. One thread at a time: the drivers make sure of that.

Every client socket is set up the same way (`connect_to_broker`): no linger, a cap on
one message (4 x LSS_MAX_MESSAGE_BYTES), large but finite queues (`config.CLIENT_HWM`
messages each way), sends that never block (SNDTIMEO=0: a send that cannot go now, e.g.
to a CURVE peer that refused us, is dropped and resent after the reconnect that
liveness will make), and CURVE when asked.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from clients.session import Request, Session
from protocol import config
from protocol.curve import secure_client
from protocol.wire import READS_PER_TURN, send_frames, waiting

# A broker batches replies up to its message limit; a larger message drops the connection
# before it is read (the broker allows peers the same factor).
CLIENT_MESSAGE_FACTOR = 4


def _max_message_bytes() -> int:
    limit: int = config.from_env("max_message_bytes", config.MAX_MESSAGE_BYTES)
    return limit


@dataclass
class Security:
    """CURVE client settings: the broker's public key file and this client's secret key file."""

    server_key_file: str
    secret_file: str


def default_security() -> Security | None:
    """CURVE settings from LSS_CURVE_SERVER_KEY and LSS_CURVE_SECRET, if both are set."""
    server_key = config.from_env("curve_server_key")
    secret = config.from_env("curve_secret")
    return Security(server_key, secret) if server_key and secret else None


def connect_to_broker(sock: zmq.Socket[Any], endpoint: str, security: Security | None) -> None:
    """Set up a new client DEALER as every client does (no linger, large but finite
    queues, sends that never block, CURVE when asked) and connect it to `endpoint`."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, CLIENT_MESSAGE_FACTOR * _max_message_bytes())
    sock.setsockopt(zmq.SNDHWM, config.CLIENT_HWM)
    sock.setsockopt(zmq.RCVHWM, config.CLIENT_HWM)
    sock.setsockopt(zmq.SNDTIMEO, 0)
    if security:
        secure_client(sock, security.server_key_file, security.secret_file)
    sock.connect(endpoint)


class Transport:
    """A session's socket, connected to the session's `endpoint` (one of `endpoints`, a
    comma-separated list or a sequence). `wake_fd`, when given, is polled with it (a
    pipe that another thread writes to when it has queued a request while this one waits)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        security: Security | None,
        *,
        wake_fd: int | None = None,
        heartbeat_interval_s: float = config.HEARTBEAT_INTERVAL_MS / 1000,
        heartbeat_liveness: int = config.HEARTBEAT_LIVENESS,
    ) -> None:
        self.security = security
        self.wake_fd = wake_fd
        self.session = Session(
            time.monotonic(),
            endpoints=endpoints,
            heartbeat_interval_s=heartbeat_interval_s,
            heartbeat_liveness=heartbeat_liveness,
        )
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock, self._poller = self._open()

    def _open(self) -> tuple[zmq.Socket[bytes], zmq.Poller]:
        sock: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        connect_to_broker(sock, self.session.endpoint, self.security)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if self.wake_fd is not None:
            poller.register(self.wake_fd, zmq.POLLIN)
        self.session.connected(time.monotonic())
        return sock, poller

    def flush(self) -> None:
        """Send everything the session has queued."""
        for frames in self.session.outgoing():
            with contextlib.suppress(zmq.Again):  # no connection yet: liveness resends
                send_frames(self.sock, frames)

    def wait(self, timeout_s: float) -> bool:
        """Block until the socket (or the wake pipe) is readable, for at most `timeout_s`
        and half a heartbeat interval (then `keep_alive` looks at liveness); whether
        something is to be read."""
        limit = min(timeout_s, self.session.interval_s / 2)
        return bool(self._poller.poll(max(0, int(limit * 1000 + 0.999))))

    def receive(self) -> list[Request]:
        """Read what has come (without blocking); the requests it answered."""
        now = time.monotonic()
        answered: list[Request] = []
        for frames in waiting(self.sock, READS_PER_TURN):
            answered += self.session.receive(frames, now)
        return answered

    def keep_alive(self) -> None:
        """Ping a silent broker; leave a dead one for the session's next endpoint,
        resending what is pending. The ping or the resent requests go with the next `flush`."""
        if self.session.tick(time.monotonic()):
            self.sock.close(linger=0)
            self.sock, self._poller = self._open()

    def pump(self, timeout_s: float) -> list[Request]:
        """One turn of a driver that has the socket to itself: send, wait, read, keep alive."""
        self.flush()
        answered = self.receive() if self.wait(timeout_s) else []
        self.keep_alive()
        return answered

    def close(self) -> None:
        self.sock.close(linger=0)
