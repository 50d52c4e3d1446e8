"""A worker's link to one broker: its DEALER, registration, heartbeat, reconnect, results.

A worker has one `Link` per broker endpoint it is given and serves them all with one
compute thread (workers.worker). Each link lives on its own: it registers (READY with
its credit), heartbeats while it has sent nothing for an interval, and when its broker
has been silent for LIVENESS x INTERVAL it presumes it lost: it opens a new DEALER with
a new identity and registers again after an exponential backoff, without holding up
the other links (no sleeping: the backoff is a time to register at).

A link's identity (host:pid:n, n counted across the worker's links) also marks the jobs
that came on it: a result whose connection is no longer a live link's is dropped (see
`Worker._read_results`).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from typing import Any

import zmq

from protocol import config, events
from protocol import messages as m
from protocol.curve import secure_client
from protocol.wire import send_frames
from workers.settings import WorkerSettings

log = logging.getLogger("lss.worker")

# Messages queued each way; finite so that a broker that stops reading cannot grow a
# worker without bound (a worker holds at most MAX_WORKER_CREDIT jobs at once anyway).
SOCKET_HWM = 1000


class Link:
    """One broker endpoint of a worker. `live` is the worker's set of the identities of
    its links' current connections, which the compute thread reads."""

    def __init__(
        self,
        endpoint: str,
        settings: WorkerSettings,
        context: zmq.Context[Any],
        numbers: itertools.count[int],
        live: set[bytes],
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.context = context
        self.numbers = numbers
        self.live = live
        self.identity = b""
        self.sock = self._open()
        self.outgoing: list[list[bytes]] = []  # results of this turn, sent at its end
        self.backoff_s = config.RECONNECT_MIN_MS / 1000
        self.register_at: float | None = 0.0  # when to send READY; None once sent
        self.shut_down = False  # the broker said it is shutting down
        self.last_heard = self.last_sent = 0.0

    def _open(self) -> zmq.Socket[bytes]:
        """A new DEALER with a new identity (host:pid:n), connected to the broker."""
        sock: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        self.live.discard(self.identity)
        # Unique per connection: it also marks which connection a job came on.
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{next(self.numbers)}".encode()
        self.live.add(self.identity)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_bytes)
        sock.setsockopt(zmq.SNDTIMEO, 0)  # see deliver
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        if self.settings.curve_server_key and self.settings.curve_secret:
            secure_client(sock, self.settings.curve_server_key, self.settings.curve_secret)
        sock.connect(self.endpoint)
        return sock

    def register(self, now: float, fingerprint: str) -> None:
        ready = m.Ready(self.settings.credit, fingerprint, os.getpid(), socket.gethostname())
        self.send(ready, now=now)
        self.register_at, self.last_heard = None, now
        log.info("registering with %s (credit %d)", self.endpoint, self.settings.credit)

    def reconnect(self, now: float) -> None:
        """Leave this connection (its held jobs are dropped) and register anew after the
        backoff, which doubles at each try until the broker is heard from again."""
        self.sock.close(linger=0)
        self.outgoing.clear()  # results for the connection we leave
        self.sock = self._open()
        self.shut_down = False
        self.register_at = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, config.RECONNECT_MAX_MS / 1000)

    def heard(self, now: float, disconnect: bool) -> None:
        """The broker spoke; being dropped (`disconnect`) is no reason to retry sooner."""
        self.last_heard = now
        if not disconnect:
            self.backoff_s = config.RECONNECT_MIN_MS / 1000

    def send(self, message: m.Message, *, now: float) -> None:
        self.deliver(m.encode(message, b""), now)

    def deliver(self, frames: list[bytes], now: float) -> None:
        try:
            send_frames(self.sock, frames)
        except zmq.Again:  # no connection (libzmq gives up after a refused CURVE handshake)
            log.debug("no connection to %s; message dropped, liveness will redial", self.endpoint)
        self.last_sent = now

    def send_results(self, now: float) -> None:
        """Send this turn's results, several as one BATCH."""
        if self.outgoing:
            outgoing, self.outgoing = self.outgoing, []
            for frames in m.batches(outgoing, self.settings.max_message_bytes):
                self.deliver(frames, now)

    def keep_alive(self, now: float, fingerprint: str, draining: bool) -> None:
        """Register when the backoff is over, heartbeat when quiet, reconnect when the
        broker is silent (not while the worker drains: it is leaving anyway)."""
        if self.register_at is not None:
            if now >= self.register_at and not draining:
                self.register(now, fingerprint)
            return
        if now - self.last_sent >= self.settings.heartbeat_interval_s:
            self.send(m.Heartbeat(), now=now)
        silence = self.settings.heartbeat_interval_s * self.settings.heartbeat_liveness
        if now - self.last_heard > silence and not draining:
            log.warning(
                "broker silent for %.1f s; reconnecting in %.1f s (%s)",
                silence, self.backoff_s, self.endpoint,
            )  # fmt: skip
            events.emit(
                "broker_silent", silence_s=silence, reconnect_in_s=self.backoff_s,
                endpoint=self.endpoint,
            )  # fmt: skip
            self.reconnect(now)

    def close(self, linger_ms: int) -> None:
        self.sock.close(linger=linger_ms)
