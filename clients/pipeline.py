"""`Client.map`'s engine: many jobs in flight over a socket of the caller's own.

The shared I/O thread (clients.transport) is right for calls from many threads, but each
of its requests costs a future, a lock and two thread hand-offs. A pipeline is driven by
one caller, so it keeps its own DEALER and does without them: it sends submit-and-wait
requests up to the window, reads the final states as they come, and yields answers in
input order. Jobs submitted while answers are at hand are sent together, as one BATCH,
once no answer is at hand (or after MAX_HOLD_S at most). Like the transport, it pings
a silent broker, resends everything in flight after a broker restart or a reconnect
(the request ids make that safe), and gives up on a job only after the caller's timeout.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from clients.transport import HEARTBEAT_TAG, RECEIVE_BATCH, Security, connect_to_broker
from protocol import config
from protocol import messages as m
from protocol.errors import JobTimeout
from protocol.wire import send_frames, waiting

Job = tuple[str, dict[str, Any]]
MAX_HOLD_S = 0.001  # the longest a submitted job waits to be sent with others


@dataclass
class InFlight:
    """A submitted job: its frames (to resend) and its reply, once it has come."""

    frames: list[bytes]
    sent_at: float
    reply: m.Envelope | None = None


class Pipeline:
    """Runs `jobs` with at most `window` in flight; yields each final reply in order."""

    def __init__(
        self,
        endpoint: str,
        security: Security | None,
        timeout_s: float,
        heartbeat_interval_s: float = config.HEARTBEAT_INTERVAL_MS / 1000,
        heartbeat_liveness: int = config.HEARTBEAT_LIVENESS,
    ) -> None:
        self.endpoint = endpoint
        self.security = security
        self.timeout_s = timeout_s
        self.interval_s = heartbeat_interval_s
        self.liveness = heartbeat_liveness
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock = self._open()
        self.in_flight: dict[bytes, InFlight] = {}
        self.request_prefix = uuid.uuid4().hex + "-"  # + the tag: unique, and cheap per job
        self.unsent: list[list[bytes]] = []
        self.unsent_since = 0.0
        self.broker_id: str | None = None
        self.last_heard = self.last_ping = time.monotonic()

    def run(self, jobs: Iterable[Job], window: int) -> Iterator[m.Envelope]:
        tags = (str(n).encode() for n in itertools.count(1))
        order: list[bytes] = []
        head = 0
        try:
            for (statistic, params), tag in zip(jobs, tags, strict=False):
                self._send(tag, statistic, params)
                order.append(tag)
                while len(order) - head >= window:
                    yield self._take(order[head])
                    head += 1
                if head == len(order) or self.in_flight[order[head]].reply is None:
                    self._send_unsent()  # before `jobs`, which may keep us waiting
            for tag in order[head:]:
                yield self._take(tag)
        finally:
            self.sock.close(linger=0)

    def _send(self, tag: bytes, statistic: str, params: dict[str, Any]) -> None:
        request_id = self.request_prefix + tag.decode()
        submit = m.Submit(request_id, statistic, dict(params), notify=True)
        frames = m.encode(submit, tag)
        now = time.monotonic()
        self.in_flight[tag] = InFlight(frames, now)
        if not self.unsent:
            self.unsent_since = now
        self.unsent.append(frames)

    def _send_unsent(self) -> None:
        for frames in m.batches(self.unsent, config.CLIENT_BATCH_BYTES):
            send_frames(self.sock, frames)
        self.unsent = []

    def _take(self, tag: bytes) -> m.Envelope:
        """Wait for the reply to `tag`, serving other replies and liveness meanwhile."""
        entry = self.in_flight[tag]
        if self.unsent and (
            entry.reply is None or time.monotonic() - self.unsent_since > MAX_HOLD_S
        ):
            self._send_unsent()
        while entry.reply is None:
            if time.monotonic() - entry.sent_at > self.timeout_s:
                raise JobTimeout(f"job {tag.decode()} of this map took over {self.timeout_s:g} s")
            if self.sock.poll(int(self.interval_s * 1000)):
                self._receive()
            self._keep_alive()
        del self.in_flight[tag]
        return entry.reply

    def _receive(self) -> None:
        for frames in waiting(self.sock, RECEIVE_BATCH):
            self.last_heard = time.monotonic()
            envelopes, _malformed = m.decode_all(frames)  # a broker never sends those
            for envelope in envelopes:
                if envelope.tag == HEARTBEAT_TAG:
                    self._on_pong(envelope.message)
                elif envelope.tag in self.in_flight:
                    self.in_flight[envelope.tag].reply = envelope

    def _on_pong(self, message: m.Message) -> None:
        if not isinstance(message, m.Pong):
            return
        if self.broker_id is not None and message.broker_id != self.broker_id:
            self._resend()  # a restarted broker has forgotten who waits for what
        self.broker_id = message.broker_id

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if now - self.last_heard > self.interval_s * self.liveness:
            self.sock.close(linger=0)
            self.sock = self._open()
            self.last_heard = now
            self._resend()
        elif now - max(self.last_heard, self.last_ping) >= self.interval_s:
            send_frames(self.sock, m.encode(m.Ping(), HEARTBEAT_TAG))
            self.last_ping = now

    def _resend(self) -> None:
        """Send again every job without a reply (the unsent ones among them)."""
        self.unsent = [entry.frames for entry in self.in_flight.values() if entry.reply is None]
        self._send_unsent()

    def _open(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        connect_to_broker(sock, self.endpoint, self.security)
        send_frames(sock, m.encode(m.Ping(), HEARTBEAT_TAG))
        return sock
