"""The client's side of the conversation with a broker, without I/O (sans-I/O).

`Session` owns what every client driver needs and nothing of sockets, threads or
clocks: correlation tags, the requests still unanswered, the frames waiting to be sent,
liveness (a ping after an interval of silence, a reconnect after LIVENESS intervals),
which broker of the client's endpoint list to talk to (the next one after a silence,
or after a refusal that says another broker would serve it), resending everything
unanswered when the broker changes, sending again later what a broker said may pass,
and matching a reply to its request. Drivers hand it what they received and the time,
and send what it hands them: `clients.transport` (one DEALER, for `Client` and
`Client.map`) and `clients.aio`. The functions at the end turn a reply into what a
caller gets: an answer, or an error of the `LssError` tree. The liveness, failover and
resend rules are in docs/protocol.md ("Client liveness", "Several brokers",
"Idempotence").
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol import config
from protocol import messages as m
from protocol.errors import (
    JobCancelled,
    JobFailed,
    LssError,
    ProtocolError,
    RequestRefused,
    UnknownJob,
)
from protocol.messages import ErrorCode, JobStatus

log = logging.getLogger("lss.client")

HEARTBEAT_TAG = b"hb"
PING_FRAMES = m.encode(m.Ping(), HEARTBEAT_TAG)
Answer = dict[str, Any]


@dataclass(eq=False)
class Request:
    """One request until it is over: its tag, its frames (to resend) and its outcome."""

    tag: bytes
    frames: list[bytes]
    reply: m.Envelope | None = None
    error: LssError | None = None
    done: bool = False
    refusal: RequestRefused | None = None  # the last refusal it is being sent again after
    moves: int = 0  # brokers it was sent on to because one was shutting down

    def fail(self, error: LssError) -> None:
        self.error, self.done = error, True

    def outcome(self) -> m.Envelope:
        """The reply; raises the error the request ended with instead."""
        if self.error is not None:
            raise self.error
        if self.reply is None:
            raise RuntimeError("the request is not over")  # a driver's bug, not the broker's
        return self.reply


class Session:
    """One client's requests to one broker at a time. Not thread-safe: a driver
    serialises calls.

    `endpoints` lists the brokers to try, in order: the driver connects to `endpoint`,
    and after a reconnect (`tick` says when) to the new `endpoint`, the next in the
    list. Times are `time.monotonic()` seconds, passed in by the driver.
    """

    def __init__(
        self,
        now: float,
        *,
        endpoints: str | Sequence[str] = config.CLIENT_ENDPOINT,
        heartbeat_interval_s: float = config.HEARTBEAT_INTERVAL_MS / 1000,
        heartbeat_liveness: int = config.HEARTBEAT_LIVENESS,
    ) -> None:
        self.endpoints = config.endpoints(endpoints)
        self._at = 0  # which of `endpoints` is `endpoint`
        self.endpoint = self.endpoints[0]  # the broker to talk to now
        self.interval_s = heartbeat_interval_s
        self.liveness = heartbeat_liveness
        self.pending: dict[bytes, Request] = {}
        self.broker_id: str | None = None
        self.malformed = 0  # replies that could not be decoded, also logged
        self._tags = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._request_prefix = uuid.uuid4().hex + "-"  # + a count: unique, cheaper than a UUID
        self._unsent: list[list[bytes]] = []
        self._later: list[tuple[float, Request]] = []  # refused for now: (when to resend, it)
        self._move_due = False  # a broker refused, saying another would serve
        self._ping_due = False
        self._last_heard = self._last_ping = self._last_tick = now
        self._idle = True  # nothing was pending at the last tick, or since
        self._doubt_s = 0.0  # silence that callers gave up on, carried to the next question

    # --- requests ---------------------------------------------------------------------

    def request(self, message: m.Message) -> Request:
        """Start `message` as a new request; its frames wait in `outgoing()`."""
        tag = str(next(self._tags)).encode()
        request = Request(tag, m.encode(message, tag))
        self._idle = self._idle or not self.pending
        self.pending[tag] = request
        self._unsent.append(request.frames)
        return request

    def new_request_id(self) -> str:
        """A SUBMIT's request id never used before, by this client or any other."""
        return f"{self._request_prefix}{next(self._request_ids)}"

    def forget(self, request: Request) -> None:
        """Stop waiting for `request` (its caller gave up); a late reply is dropped.
        The silence it met still counts: callers with deadlines shorter than the
        heartbeat window would otherwise never leave a dead broker."""
        self.pending.pop(request.tag, None)
        if not self.pending:
            self._doubt_s = max(0.0, self._last_tick - self._last_heard)

    def fail_all(self, error: LssError) -> list[Request]:
        """End every unanswered request with `error` (the client is closing)."""
        failed = list(self.pending.values())
        self.pending.clear()
        self._unsent.clear()
        self._later.clear()
        for request in failed:
            request.fail(error)
        return failed

    @property
    def has_outgoing(self) -> bool:
        return self._ping_due or bool(self._unsent)

    def outgoing(self) -> list[list[bytes]]:
        """The messages to send now, in order, several at once as a BATCH."""
        waiting = [PING_FRAMES, *self._unsent] if self._ping_due else self._unsent
        self._unsent, self._ping_due = [], False
        if len(waiting) < 2:
            return waiting
        return m.batches(waiting, config.CLIENT_BATCH_BYTES)

    # --- what the broker sent ---------------------------------------------------------

    def receive(self, frames: list[bytes], now: float) -> list[Request]:
        """Take in one received message (or BATCH); the requests it answered."""
        self._last_heard, self._doubt_s = now, 0.0
        try:
            messages = m.messages_in(frames)
        except ProtocolError as exc:
            self._report(exc)
            return []
        answered: list[Request] = []
        for message in messages:
            try:
                envelope = m.decode(message)
            except ProtocolError as exc:
                answered += self._malformed(message, exc)
                continue
            request = self.pending.pop(envelope.tag, None)
            if request is not None and self._send_again(request, envelope.message, now):
                continue
            if request is not None:
                request.reply, request.done = envelope, True
                answered.append(request)
            elif envelope.tag == HEARTBEAT_TAG:
                self._on_heartbeat(envelope.message)
            # else: a duplicate after a resend, or a request given up on
        return answered

    def _send_again(self, request: Request, message: m.Message, now: float) -> bool:
        """Keep a request whose refusal says it may be sent again: to the next broker when
        this one is shutting down (once to each other broker), else here after the delay."""
        if not isinstance(message, m.ErrorReply) or message.retry_after_ms <= 0:
            return False
        if message.code == ErrorCode.SHUTTING_DOWN:
            if request.moves >= len(self.endpoints) - 1:
                return False
            request.moves += 1
            self._move_due = True
        else:
            # The broker's delay, but no longer than a heartbeat window: it is a peer's
            # number, and the request (with its frames) is held meanwhile.
            delay_s = min(message.retry_after_ms / 1000, self.interval_s * self.liveness)
            self._later.append((now + delay_s, request))
        request.refusal = RequestRefused(message.code, message.reason)
        self.pending[request.tag] = request
        log.debug("request %s refused (%s); sending it again", request.tag, message.code)
        return True

    def _malformed(self, frames: list[bytes], exc: ProtocolError) -> list[Request]:
        """Report a reply that did not decode; fail its request when its tag is readable."""
        self._report(exc)
        request = self.pending.pop(_tag_of(frames) or b"", None)
        if request is None:
            return []
        request.fail(ProtocolError(f"malformed reply: {exc}"))
        return [request]

    def _report(self, exc: ProtocolError) -> None:
        self.malformed += 1
        log.warning("malformed reply from the broker: %s", exc)

    def _on_heartbeat(self, message: m.Message) -> None:
        if not isinstance(message, m.Pong):
            self._report(ProtocolError(f"a {type(message).__name__} answered a heartbeat ping"))
            return
        if self.broker_id is not None and message.broker_id != self.broker_id:
            log.warning("the broker restarted; resending %d request(s)", len(self.pending))
            self._resend_all()
        self.broker_id = message.broker_id

    # --- liveness ---------------------------------------------------------------------

    def connected(self, now: float) -> None:
        """A new connection (to `endpoint`): ping it (to learn the broker's id) and resend
        what is pending. Its broker's id is news, not a restart: the resend is done."""
        self._last_heard = now
        self.broker_id = None
        self._ping(now)
        self._resend_all()

    def tick(self, now: float) -> bool:
        """Keep the broker honest: queue a ping when due. True when the driver must
        reconnect (to `endpoint`, now the next in the list; then call `connected`):
        nothing heard for LIVENESS intervals while requests were pending, or a broker
        refused a request saying that another would serve it."""
        if self._move_due:
            self._move_due = False
            self._move_on(f"{self.endpoint} is shutting down")
            return True
        self._resend_due(now)
        if self._idle or not self.pending:
            self._idle = not self.pending
            self._last_heard = now - self._doubt_s  # silence without a question is no
            return False  # sign of death, but the silence of a question given up on is
        self._doubt_s, self._last_tick = 0.0, now
        if now - self._last_heard > self.interval_s * self.liveness:
            self._move_on(f"no word from {self.endpoint} for {now - self._last_heard:.1f} s")
            return True
        if now - max(self._last_heard, self._last_ping) >= self.interval_s:
            self._ping(now)
        return False

    def endpoints_from_here(self) -> list[str]:
        """The endpoint list starting at `endpoint`: for another session of the same
        client, which then starts where this one found a broker."""
        return self.endpoints[self._at :] + self.endpoints[: self._at]

    def _move_on(self, why: str) -> None:
        """Leave a broker for the next endpoint (the same one when it is alone)."""
        self._at = (self._at + 1) % len(self.endpoints)
        log.warning(
            "%s; moving to %s with %d pending request(s)",
            why, self.endpoints[self._at], len(self.pending),
        )  # fmt: skip
        self.endpoint = self.endpoints[self._at]

    def _resend_due(self, now: float) -> None:
        """Queue again the refused requests whose delay is over (and still wanted)."""
        due = [request for at, request in self._later if at <= now]
        self._later = [(at, request) for at, request in self._later if at > now]
        self._unsent += [request.frames for request in due if request.tag in self.pending]

    def _ping(self, now: float) -> None:
        self._ping_due = True
        self._last_ping = now

    def _resend_all(self) -> None:
        self._unsent = [request.frames for request in self.pending.values()]


def _tag_of(frames: Sequence[bytes]) -> bytes | None:
    """The tag of a message that did not decode, when its header is whole enough to say."""
    header = frames[0] if frames else b""
    return None if m.header_command(header) is None else m.header_tag(header)


# --- replies -> answers or errors --------------------------------------------------------


def expect(message: m.Message, kind: type[m.M]) -> m.M:
    """`message` as a `kind`; `RequestRefused` for an error reply, `ProtocolError` otherwise."""
    if isinstance(message, kind):
        return message
    raise _unexpected(message, kind)


def final_answer(envelope: m.Envelope) -> Answer:
    """A finished job's answer; `JobFailed`, `JobCancelled`, `UnknownJob` or
    `RequestRefused` otherwise."""
    msg = envelope.message
    if isinstance(msg, m.JobState):
        if msg.status == JobStatus.ERROR.value:
            raise JobFailed(msg.reason or "failed")
        if msg.status == JobStatus.CANCELLED.value:
            raise JobCancelled(msg.job_id, msg.reason or m.REASON_CANCELLED)
        return answer_of(envelope)
    raise _unknown_or_unexpected(msg)


def final_status(envelope: m.Envelope) -> str:
    """A CANCEL's reply: the job's status once the cancel is committed ("cancelled", or
    "done" / "error" when it had finished first); `UnknownJob` for an unknown id."""
    msg = envelope.message
    if isinstance(msg, m.JobState):
        return msg.status
    raise _unknown_or_unexpected(msg)


def _unknown_or_unexpected(message: m.Message) -> LssError:
    """The error of a reply about a job that is not its `JobState`."""
    if isinstance(message, m.ErrorReply) and message.code in _UNKNOWN_JOB:
        return UnknownJob(message.reason)
    return _unexpected(message, m.JobState)


_UNKNOWN_JOB = (ErrorCode.INVALID_JOB_ID, ErrorCode.EXPIRED)


def _unexpected(message: m.Message, kind: type[m.Message]) -> LssError:
    if isinstance(message, m.ErrorReply):
        return RequestRefused(message.code, message.reason)
    return ProtocolError(f"expected {kind.__name__}, got {type(message).__name__}")


def status_dict(envelope: m.Envelope) -> dict[str, Any]:
    """What `get` returns for a reply about a job: {"status": "running" | "done" (with
    "data") | "error" (with "reason")}, the original service's shape, or {"status":
    "cancelled", "reason": "cancelled" | "deadline passed"}; an unknown or expired job is
    an error."""
    msg = envelope.message
    if isinstance(msg, m.ErrorReply) and msg.code in _UNKNOWN_JOB:
        return {"status": JobStatus.ERROR.value, "reason": msg.reason}
    state = expect(msg, m.JobState)
    if state.status == JobStatus.DONE.value:
        return {"status": state.status, "data": answer_of(envelope)}
    if state.status == JobStatus.ERROR.value:
        return {"status": state.status, "reason": state.reason or "failed"}
    if state.status == JobStatus.CANCELLED.value:
        return {"status": state.status, "reason": state.reason or m.REASON_CANCELLED}
    return {"status": state.status}


def answer_of(envelope: m.Envelope) -> Answer:
    """The answer a done job's reply carries in its payload frame."""
    if envelope.payload is None:
        raise ProtocolError("a done job's reply has no answer frame")
    data = m.unpack(envelope.payload)
    if not isinstance(data, dict):
        raise ProtocolError("a job's answer must be a map")
    return data


def pong_info(message: m.Message) -> dict[str, Any]:
    """A PING's reply as {"broker_id", "version", "shutting_down", "pid"}."""
    pong = expect(message, m.Pong)
    return {
        "broker_id": pong.broker_id,
        "version": pong.version,
        "shutting_down": pong.shutting_down,
        "pid": pong.pid,
    }
