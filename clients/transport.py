"""The client's connection to the broker: one I/O thread, one DEALER, many callers.

Callers on any thread hand a request to `Transport.request()` and get a `Future`; the
I/O thread owns the socket, matches replies to requests by correlation tag, and keeps
every unanswered request until it is answered. When the broker goes silent (no reply to
heartbeat pings for LIVENESS x INTERVAL) the thread reconnects and resends everything
pending; when a ping shows the broker restarted, it resends too. Resending is safe:
submits carry a request id (same id, same job) and reads are idempotent.

A submit with `notify=True` is answered once, by the job's final state: resending it
returns the same job (same request id), so it is as safe to resend as a WAIT.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import zmq

from protocol import config
from protocol import messages as m
from protocol.curve import secure_client
from protocol.wire import send_frames, waiting

log = logging.getLogger("lss.client")

HEARTBEAT_TAG = b"hb"
RECEIVE_BATCH = 1000  # replies read before the I/O thread serves its callers again


@dataclass
class Pending:
    """An unanswered request: what to (re)send and who waits for the answer."""

    tag: bytes
    frames: list[bytes]
    future: Future[m.Envelope]


@dataclass
class Security:
    """CURVE client settings: the broker's public key file and this client's secret key file."""

    server_key_file: str
    secret_file: str


def connect_to_broker(sock: zmq.Socket[Any], endpoint: str, security: Security | None) -> None:
    """Set up a new client DEALER as every client does (no linger, large but finite
    queues, CURVE when asked) and connect it to `endpoint`."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, config.CLIENT_HWM)
    sock.setsockopt(zmq.RCVHWM, config.CLIENT_HWM)
    if security:
        secure_client(sock, security.server_key_file, security.secret_file)
    sock.connect(endpoint)


@dataclass
class _Shared:
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[bytes, Pending] = field(default_factory=dict)
    outgoing: deque[bytes] = field(default_factory=deque)


class Transport:
    """Thread-safe request/reply over one DEALER socket, run by a background thread."""

    def __init__(
        self,
        endpoint: str,
        *,
        security: Security | None = None,
        heartbeat_interval_s: float = config.HEARTBEAT_INTERVAL_MS / 1000,
        heartbeat_liveness: int = config.HEARTBEAT_LIVENESS,
    ) -> None:
        self.endpoint = endpoint
        self._security = security
        self._interval_s = heartbeat_interval_s
        self._liveness = heartbeat_liveness
        self._shared = _Shared()
        self._tags = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._open()
        self._broker_id: str | None = None
        self._last_heard = self._last_ping = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="lss-client-io", daemon=True)
        self._thread.start()

    # --- caller side (any thread) -------------------------------------------------

    def request(self, message: m.Message) -> Pending:
        """Queue `message`; the returned entry's future gets the reply."""
        tag = str(next(self._tags)).encode()
        entry = Pending(tag, m.encode(message, tag), Future())
        with self._shared.lock:
            self._shared.pending[tag] = entry
            self._shared.outgoing.append(tag)
        self._wake()
        return entry

    def forget(self, entry: Pending) -> None:
        """Stop waiting for `entry` (its caller gave up)."""
        with self._shared.lock:
            self._shared.pending.pop(entry.tag, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: the thread is awake anyway
            os.write(self._wake_w, b"!")

    # --- I/O thread ---------------------------------------------------------------

    def _open(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDTIMEO, 0)  # never block: a refused CURVE peer has no connection
        connect_to_broker(sock, self.endpoint, self._security)
        self._send(sock, m.encode(m.Ping(), HEARTBEAT_TAG))
        return sock

    @staticmethod
    def _send(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        with contextlib.suppress(zmq.Again):  # not connected: _keep_alive redials and resends
            send_frames(sock, frames)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._closed:
                polled = self._sock  # replaced when the thread reconnects
                poller.register(polled, zmq.POLLIN)
                ready = dict(poller.poll(int(self._interval_s * 500) or 1))
                poller.unregister(polled)
                if self._wake_r in ready:
                    self._send_outgoing()
                if self._sock in ready:
                    self._receive()
                self._keep_alive()
        finally:
            self._sock.close(linger=0)
            self._context.term()
            self._fail_all("client closed")

    def _send_outgoing(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._shared.lock:
            tags = list(self._shared.outgoing)
            self._shared.outgoing.clear()
            entries = [self._shared.pending.get(tag) for tag in tags]
        messages = [entry.frames for entry in entries if entry is not None]
        for frames in m.batches(messages, config.CLIENT_BATCH_BYTES):
            self._send(self._sock, frames)

    def _receive(self) -> None:
        for frames in waiting(self._sock, RECEIVE_BATCH):
            self._last_heard = time.monotonic()
            envelopes, malformed = m.decode_all(frames)
            for exc in malformed:
                log.warning("malformed reply from the broker: %s", exc)
            for envelope in envelopes:
                self._deliver(envelope)

    def _deliver(self, envelope: m.Envelope) -> None:
        msg = envelope.message
        if envelope.tag == HEARTBEAT_TAG:
            if isinstance(msg, m.Pong):
                self._on_pong(msg)
            return
        with self._shared.lock:
            entry = self._shared.pending.get(envelope.tag)
            if entry is None:
                return  # a duplicate after a resend, or a request given up on
            del self._shared.pending[envelope.tag]
        if not entry.future.done():
            entry.future.set_result(envelope)

    def _on_pong(self, pong: m.Pong) -> None:
        if self._broker_id is not None and pong.broker_id != self._broker_id:
            log.warning("the broker restarted; resending %d pending request(s)", self._count())
            self._resend_all()
        self._broker_id = pong.broker_id

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if not self._count():
            self._last_heard = now
            return
        if now - self._last_heard > self._interval_s * self._liveness:
            log.warning(
                "no word from %s for %.1f s; reconnecting", self.endpoint, now - self._last_heard
            )
            self._sock.close(linger=0)
            self._sock = self._open()
            self._last_heard = now
            self._resend_all()
        elif now - max(self._last_heard, self._last_ping) >= self._interval_s:
            self._send(self._sock, m.encode(m.Ping(), HEARTBEAT_TAG))
            self._last_ping = now

    def _resend_all(self) -> None:
        with self._shared.lock:
            self._shared.outgoing.extend(self._shared.pending)
        self._send_outgoing()

    def _count(self) -> int:
        with self._shared.lock:
            return len(self._shared.pending)

    def _fail_all(self, reason: str) -> None:
        with self._shared.lock:
            entries = list(self._shared.pending.values())
            self._shared.pending.clear()
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(ConnectionError(reason))
