"""`AsyncClient`: the `Client` API for asyncio programs, on one `zmq.asyncio` DEALER.

    async with AsyncClient() as c:            # $LSS_CLIENT_ENDPOINT or tcp://127.0.0.1:5555
        answers = await asyncio.gather(c.state_mean(Q, "Ohio"), c.global_mean(Q))
        async for answer in c.map(jobs):      # input order, a window of jobs in flight
            ...

This module owns the asyncio side of the wire: a reader task matches replies to requests
by correlation tag, pings the broker while requests are unanswered, reconnects and
resends them after LIVENESS x INTERVAL of silence or when the broker restarted (resends
are safe: submits carry a request id, reads are idempotent). Every call has a deadline.
It also names the nine statistics, for the command line and the HTTP gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import zmq
import zmq.asyncio

from clients.client import default_security, expect, final_answer, job_state, submit_message
from clients.transport import HEARTBEAT_TAG, Security, connect_to_broker
from protocol import config
from protocol import messages as m
from protocol.errors import BrokerUnavailable, JobTimeout, RequestRefused
from protocol.messages import JobStatus

log = logging.getLogger("lss.client.aio")

Answer = dict[str, Any]
Jobs = Iterable[tuple[str, dict[str, Any]]] | AsyncIterable[tuple[str, dict[str, Any]]]


_RECEIVE_BATCH = 256  # replies handled per reader turn before yielding to other tasks


@dataclass
class _Pending:
    """An unanswered request: the frames to (re)send and the future of its final reply."""

    tag: bytes
    frames: list[bytes]
    future: asyncio.Future[m.Envelope]
    notify: bool = False


class AsyncClient:
    """A connection to an LSS broker for asyncio code. Use `async with`, or `await close()`.

    Create it anywhere; it binds to the event loop of its first call. Not thread-safe:
    use it from one event loop (the synchronous `Client` is the thread-safe one).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        timeout: float = config.CLIENT_TIMEOUT_S,
        *,
        security: Security | None = None,
        heartbeat_interval_s: float = config.HEARTBEAT_INTERVAL_MS / 1000,
        heartbeat_liveness: int = config.HEARTBEAT_LIVENESS,
    ) -> None:
        self.endpoint = endpoint or config.env_str("client_endpoint", config.CLIENT_ENDPOINT)
        self.timeout = timeout
        self._security = security or default_security()
        self._interval_s = heartbeat_interval_s
        self._liveness = heartbeat_liveness
        self._context = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._tags = itertools.count(1)
        self._broker_id: str | None = None
        self._last_heard = self._last_ping = time.monotonic()
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the reader, close the socket; unanswered calls fail with `BrokerUnavailable`."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._sock is not None:
            self._sock.close(linger=0)
        self._context.term()
        self._fail_all("client closed")

    # --- jobs ---------------------------------------------------------------------

    async def submit(self, statistic: str, /, **params: Any) -> str:
        """Create a job; returns its id (`job_id_N`). Raises `RequestRefused` if refused."""
        return expect(await self._call(submit_message(statistic, params)), m.Submitted).job_id

    async def get(self, job_id: str) -> dict[str, Any]:
        """A job's state: {"status": "running" | "done" (with "data") | "error" (with "reason")}."""
        return job_state(await self._call_envelope(m.Get(job_id)))

    async def wait(self, job_id: str, timeout: float | None = None) -> Answer:
        """The job's answer once it is done; raises `JobFailed`, `JobTimeout` or `UnknownJob`."""
        entry = await self._request(m.Wait(job_id))
        return final_answer(await self._result(entry, job_id, timeout))

    async def run(self, statistic: str, /, timeout: float | None = None, **params: Any) -> Answer:
        """Submit a job and wait for its answer, in one round trip."""
        entry = await self._request(submit_message(statistic, params, notify=True), notify=True)
        return final_answer(await self._result(entry, statistic, timeout))

    async def outcome(
        self, statistic: str, params: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Submit a job and wait for its final state, shaped like `get`'s; never raises for a job.

        {"status": "done", "data": ...}, or {"status": "error", "reason": ...} when the job
        failed or was refused. Raises `JobTimeout` when it is not over within `timeout` s.
        """
        entry = await self._request(submit_message(statistic, params, notify=True), notify=True)
        envelope = await self._result(entry, statistic, timeout)
        if isinstance(envelope.message, m.ErrorReply):
            return {"status": JobStatus.ERROR.value, "reason": envelope.message.reason}
        return job_state(envelope)

    async def map(self, jobs: Jobs, window: int = 64) -> AsyncIterator[Answer]:
        """Answers to `(statistic, params)` jobs in input order, up to `window` in flight.

        Raises `JobFailed` at the position of a failed job. `jobs` may be a plain or an
        asynchronous iterable.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        in_flight: deque[tuple[_Pending, str]] = deque()
        try:
            async for statistic, params in _aiter(jobs):
                notify = submit_message(statistic, params, notify=True)
                in_flight.append((await self._request(notify, notify=True), statistic))
                if len(in_flight) >= window:
                    yield final_answer(await self._result(*in_flight.popleft()))
            while in_flight:
                yield final_answer(await self._result(*in_flight.popleft()))
        finally:
            for entry, _ in in_flight:  # the caller stopped early: stop waiting for these
                self._forget(entry)

    async def jobs(self) -> dict[str, str]:
        """Every job id with its status, in submission order."""
        listing: dict[str, str] = {}
        after: int | None = 0
        while after is not None:
            page = expect(await self._call(m.ListJobs(after=after)), m.JobList)
            listing.update((str(job), str(status)) for job, status in page.jobs)
            after = page.next_after
        return listing

    async def num_jobs(self) -> int:
        """Jobs accepted and not yet finished."""
        return expect(await self._call(m.NumJobs()), m.JobCount).num_jobs

    async def shutdown(self) -> int:
        """Start a graceful shutdown; returns how many jobs are still to finish."""
        return expect(await self._call(m.Shutdown()), m.ShuttingDown).pending

    async def ping(self) -> dict[str, Any]:
        """The broker's id, protocol version and whether it is shutting down."""
        pong = expect(await self._call(m.Ping()), m.Pong)
        return {
            "broker_id": pong.broker_id,
            "version": pong.version,
            "shutting_down": pong.shutting_down,
        }

    async def stats(self) -> dict[str, Any]:
        """Workers, queue depth, jobs by status and recent rates."""
        return expect(await self._call(m.Stats()), m.StatsReply).stats

    # --- the nine statistics ------------------------------------------------------

    async def states_mean(self, question: str) -> Answer:
        return await self.run("states_mean", question=question)

    async def state_mean(self, question: str, state: str) -> Answer:
        return await self.run("state_mean", question=question, state=state)

    async def best5(self, question: str) -> Answer:
        return await self.run("best5", question=question)

    async def worst5(self, question: str) -> Answer:
        return await self.run("worst5", question=question)

    async def global_mean(self, question: str) -> Answer:
        return await self.run("global_mean", question=question)

    async def diff_from_mean(self, question: str) -> Answer:
        return await self.run("diff_from_mean", question=question)

    async def state_diff_from_mean(self, question: str, state: str) -> Answer:
        return await self.run("state_diff_from_mean", question=question, state=state)

    async def mean_by_category(self, question: str) -> Answer:
        return await self.run("mean_by_category", question=question)

    async def state_mean_by_category(self, question: str, state: str) -> Answer:
        return await self.run("state_mean_by_category", question=question, state=state)

    # --- requests -----------------------------------------------------------------

    async def _request(self, message: m.Message, *, notify: bool = False) -> _Pending:
        sock = self._socket()
        tag = str(next(self._tags)).encode()
        future = asyncio.get_running_loop().create_future()
        entry = _Pending(tag, m.encode(message, tag), future, notify)
        self._pending[tag] = entry
        await sock.send_multipart(entry.frames)
        return entry

    async def _call_envelope(self, message: m.Message) -> m.Envelope:
        entry = await self._request(message)
        try:
            return await asyncio.wait_for(entry.future, self.timeout)
        except TimeoutError as exc:
            self._forget(entry)
            raise BrokerUnavailable(
                f"no reply from {self.endpoint} within {self.timeout:g} s"
            ) from exc

    async def _call(self, message: m.Message) -> m.Message:
        msg = (await self._call_envelope(message)).message
        if isinstance(msg, m.ErrorReply):
            raise RequestRefused(msg.code, msg.reason)
        return msg

    async def _result(self, entry: _Pending, what: str, timeout: float | None = None) -> m.Envelope:
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(entry.future, limit)
        except TimeoutError as exc:
            self._forget(entry)
            raise JobTimeout(f"{what} did not finish within {limit:g} s") from exc

    def _forget(self, entry: _Pending) -> None:
        self._pending.pop(entry.tag, None)

    # --- the socket and its reader task -------------------------------------------

    def _socket(self) -> zmq.asyncio.Socket:
        if self._closed:
            raise BrokerUnavailable("the client is closed")
        if self._sock is None:
            self._sock = self._open()
            self._last_heard = time.monotonic()
            self._reader = asyncio.get_running_loop().create_task(self._run(), name="lss-aio")
        return self._sock

    def _open(self) -> zmq.asyncio.Socket:
        sock = self._context.socket(zmq.DEALER)
        connect_to_broker(sock, self.endpoint, self._security)  # options only: same on asyncio
        return sock

    async def _run(self) -> None:
        poll_ms = max(1, int(self._interval_s * 500))
        await self._ping()  # learn the broker's id now, to notice when it restarts
        while True:
            sock = self._socket()
            if await sock.poll(poll_ms):
                await self._receive(sock)
            await self._keep_alive()

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        for _ in range(_RECEIVE_BATCH):
            if not cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            frames = await sock.recv_multipart()
            self._last_heard = time.monotonic()
            envelopes, malformed = m.decode_all(frames)
            for exc in malformed:
                log.warning("malformed reply from the broker: %s", exc)
            for envelope in envelopes:
                await self._deliver(envelope)

    async def _deliver(self, envelope: m.Envelope) -> None:
        msg = envelope.message
        if envelope.tag == HEARTBEAT_TAG:
            if isinstance(msg, m.Pong):
                await self._on_pong(msg)
            return
        entry = self._pending.get(envelope.tag)
        if entry is None:
            return  # a duplicate after a resend, or a request given up on
        if entry.notify and isinstance(msg, m.Submitted):  # brokers that acknowledge first
            entry.frames = m.encode(m.Wait(msg.job_id), envelope.tag)  # a resend now waits
            return
        del self._pending[envelope.tag]
        if not entry.future.done():
            entry.future.set_result(envelope)

    async def _on_pong(self, pong: m.Pong) -> None:
        if self._broker_id is not None and pong.broker_id != self._broker_id:
            log.warning("the broker restarted; resending %d request(s)", len(self._pending))
            await self._resend_all()
        self._broker_id = pong.broker_id

    async def _keep_alive(self) -> None:
        now = time.monotonic()
        if not self._pending:
            self._last_heard = now
        elif now - self._last_heard > self._interval_s * self._liveness:
            log.warning(
                "no word from %s for %.1f s; reconnecting", self.endpoint, now - self._last_heard
            )
            if self._sock is not None:
                self._sock.close(linger=0)
            self._sock = self._open()
            self._last_heard = now
            await self._resend_all()
        elif now - max(self._last_heard, self._last_ping) >= self._interval_s:
            await self._ping()

    async def _ping(self) -> None:
        await self._socket().send_multipart(m.encode(m.Ping(), HEARTBEAT_TAG))
        self._last_ping = time.monotonic()

    async def _resend_all(self) -> None:
        sock = self._socket()
        for entry in list(self._pending.values()):
            await sock.send_multipart(entry.frames)

    def _fail_all(self, reason: str) -> None:
        entries = list(self._pending.values())
        self._pending.clear()
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(BrokerUnavailable(reason))
                entry.future.exception()  # mark retrieved: nobody may be awaiting it any more


async def _aiter(jobs: Jobs) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job
