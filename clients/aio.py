"""`AsyncClient`: the `Client` API for asyncio programs.

    async with AsyncClient() as c:            # $LSS_CLIENT_ENDPOINT or tcp://127.0.0.1:5555
        answers = await asyncio.gather(c.state_mean(Q, "Ohio"), c.global_mean(Q))
        async for answer in c.map(jobs):      # input order, a window of jobs in flight
            ...

The asyncio driver of a transport (clients.transport, over clients.session): a call
sends its request at once and awaits a future; one reader task waits until the socket
is readable, reads, and resolves the futures of the requests answered. Liveness and
resending are the session's. Every call has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any

import zmq.asyncio

from clients import session
from clients.api import Statistics
from clients.listing import JobListing
from clients.session import Answer, Request
from clients.transport import Security, Transport, default_security
from protocol import config
from protocol import messages as m
from protocol.errors import BrokerUnavailable, JobTimeout

Jobs = Iterable[tuple[str, dict[str, Any]]] | AsyncIterable[tuple[str, dict[str, Any]]]


class AsyncClient(Statistics[Coroutine[Any, Any, Answer]]):
    """A connection to an LSS broker for asyncio code. Use `async with`, or `await close()`.

    Create it anywhere; it binds to the event loop of its first call. Not thread-safe:
    use it from one event loop (the synchronous `Client` is the thread-safe one).
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | None = None,
        timeout: float = config.CLIENT_TIMEOUT_S,
        *,
        security: Security | None = None,
        heartbeat_interval_s: float = config.HEARTBEAT_INTERVAL_MS / 1000,
        heartbeat_liveness: int = config.HEARTBEAT_LIVENESS,
    ) -> None:
        given = endpoint or config.env_str("client_endpoint", config.CLIENT_ENDPOINT)
        self.endpoints = config.endpoints(given)  # one broker's, or several: as in `Client`
        self.endpoint = ",".join(self.endpoints)
        self.timeout = timeout
        self._security = security or default_security()
        self._heartbeat = (heartbeat_interval_s, heartbeat_liveness)
        self._transport: Transport | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[Request, asyncio.Future[None]] = {}
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
        if self._transport is not None:
            self._resolve(self._transport.session.fail_all(BrokerUnavailable("client closed")))
            self._transport.close()

    # --- jobs: as `Client`'s methods of the same names --------------------------------

    async def submit(self, statistic: str, /, **params: Any) -> str:
        """See `Client.submit`."""
        message = m.Submit(self._connected().session.new_request_id(), statistic, params)
        return session.expect((await self._ask(message)).message, m.Submitted).job_id

    async def get(self, job_id: str) -> dict[str, Any]:
        """See `Client.get`."""
        return session.status_dict(await self._ask(m.Get(job_id)))

    async def wait(self, job_id: str, timeout: float | None = None) -> Answer:
        """See `Client.wait`."""
        return session.final_answer(await self._finish(m.Wait(job_id), timeout, job_id))

    async def run(self, statistic: str, /, timeout: float | None = None, **params: Any) -> Answer:
        """Submit a job and wait for its answer, in one round trip."""
        submit = m.Submit(self._connected().session.new_request_id(), statistic, params, True)
        return session.final_answer(await self._finish(submit, timeout, statistic))

    async def map(self, jobs: Jobs, window: int = 64) -> AsyncIterator[Answer]:
        """See `Client.map`; `jobs` may also be an asynchronous iterable."""
        if window < 1:
            raise ValueError("window must be at least 1")
        in_flight: deque[asyncio.Task[m.Envelope]] = deque()
        try:
            async for statistic, params in _aiter(jobs):
                request_id = self._connected().session.new_request_id()
                submit = m.Submit(request_id, statistic, dict(params), notify=True)
                in_flight.append(asyncio.ensure_future(self._finish(submit, None, statistic)))
                if len(in_flight) >= window:
                    yield session.final_answer(await in_flight.popleft())
            while in_flight:
                yield session.final_answer(await in_flight.popleft())
        finally:
            for task in in_flight:  # the caller stopped early: stop waiting for these
                task.cancel()

    async def jobs(
        self,
        *,
        status: str | None = None,
        statistic: str | None = None,
        after: int | str = 0,
        limit: int | None = None,
    ) -> dict[str, str]:
        """See `Client.jobs`."""
        listing = JobListing(status, statistic, after, limit)
        while (request := listing.next_request()) is not None:
            listing.add(session.expect((await self._ask(request)).message, m.JobList))
        return listing.jobs

    async def num_jobs(self) -> int:
        """See `Client.num_jobs`."""
        return session.expect((await self._ask(m.NumJobs())).message, m.JobCount).num_jobs

    async def shutdown(self) -> int:
        """See `Client.shutdown`."""
        return session.expect((await self._ask(m.Shutdown())).message, m.ShuttingDown).pending

    async def ping(self) -> dict[str, Any]:
        """See `Client.ping`."""
        return session.pong_info((await self._ask(m.Ping())).message)

    async def stats(self) -> dict[str, Any]:
        """See `Client.stats`."""
        return session.expect((await self._ask(m.Stats())).message, m.StatsReply).stats

    # --- one request ----------------------------------------------------------------

    async def _ask(self, message: m.Message) -> m.Envelope:
        """A request the broker answers at once: no reply in time is `BrokerUnavailable`."""
        try:
            return await self._call(message, self.timeout)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"no reply from {self.endpoint} within {self.timeout:g} s"
            ) from exc

    async def _finish(self, message: m.Message, timeout: float | None, what: str) -> m.Envelope:
        """A request answered when a job is over: no reply in time is `JobTimeout`."""
        limit = self.timeout if timeout is None else timeout
        try:
            return await self._call(message, limit)
        except TimeoutError as exc:
            raise JobTimeout(f"{what} did not finish within {limit:g} s") from exc

    async def _call(self, message: m.Message, timeout_s: float) -> m.Envelope:
        transport = self._connected()
        request = transport.session.request(message)
        transport.flush()
        waiter = self._waiters[request] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, timeout_s)
        finally:
            if self._waiters.pop(request, None) is not None and not request.done:
                transport.session.forget(request)  # timed out, or the caller was cancelled
        return request.outcome()

    def _resolve(self, requests: list[Request]) -> None:
        for request in requests:
            waiter = self._waiters.pop(request, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # --- the transport and its reader task --------------------------------------------

    def _connected(self) -> Transport:
        if self._closed:
            raise BrokerUnavailable("the client is closed")
        if self._transport is None:
            interval_s, liveness = self._heartbeat
            self._transport = Transport(
                self.endpoints,
                self._security,
                heartbeat_interval_s=interval_s,
                heartbeat_liveness=liveness,
            )
            self._reader = asyncio.get_running_loop().create_task(self._read(), name="lss-aio")
        return self._transport

    async def _read(self) -> None:
        transport = self._connected()
        while True:
            sock = transport.sock  # replaced when the transport reconnects
            readable = zmq.asyncio.Socket.from_socket(sock)
            while transport.sock is sock:
                transport.flush()
                if await readable.poll(max(1, int(transport.session.interval_s * 500))):
                    self._resolve(transport.receive())
                transport.keep_alive()


async def _aiter(jobs: Jobs) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job
