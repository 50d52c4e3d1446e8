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
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Coroutine,
    Iterable,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import zmq.asyncio

from clients import operations, session, tidy
from clients.api import StatisticMethods
from clients.listing import JobListing
from clients.operations import Call
from clients.session import Answer, Request, Session
from clients.transport import Security, Transport, default_security
from protocol import config
from protocol import messages as m
from protocol.errors import BrokerUnavailable

if TYPE_CHECKING:
    from pandas import DataFrame

T = TypeVar("T")
Jobs = Iterable[tuple[str, dict[str, Any]]] | AsyncIterable[tuple[str, dict[str, Any]]]


class AsyncClient(StatisticMethods[Coroutine[Any, Any, Answer]]):
    """A connection to an LSS broker for asyncio code. Use `async with`, or `await close()`.

    The same methods and parameters as `Client`, as coroutines (`map` and `outcomes` as
    asynchronous iterators); each operation is clients.operations', driven here.

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

    async def submit(
        self,
        statistic: str,
        /,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> str:
        """See `Client.submit`."""
        when = operations.scheduling(priority, deadline)
        return await self._perform(operations.submit(self._session(), statistic, params, when))

    async def submit_as(
        self,
        request_id: str,
        statistic: str,
        params: dict[str, Any],
        timeout: float | None = None,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> str:
        """See `Client.submit_as`."""
        when = operations.scheduling(priority, deadline)
        call = operations.submit_as(request_id, statistic, params, timeout, when)
        return await self._perform(call)

    async def get(self, job_id: str) -> dict[str, Any]:
        """See `Client.get`."""
        return await self._perform(operations.get(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Answer:
        """See `Client.wait`."""
        return await self._perform(operations.wait(job_id, timeout))

    async def cancel(self, job_id: str) -> str:
        """See `Client.cancel`."""
        return await self._perform(operations.cancel(job_id))

    async def wait_all(
        self, job_ids: Sequence[str], timeout: float | None = None
    ) -> dict[str, Any]:
        """See `Client.wait_all`."""
        limit = self.timeout if timeout is None else timeout
        requests = await self._over([m.Wait(job) for job in job_ids], limit)
        return {job: _state_of(request) for job, request in zip(job_ids, requests, strict=True)}

    async def run(
        self,
        statistic: str,
        /,
        timeout: float | None = None,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> Answer:
        """Submit a job and wait for its answer, in one round trip (see `Client.run`)."""
        when = operations.scheduling(priority, deadline)
        return await self._perform(
            operations.run(self._session(), statistic, params, timeout, when)
        )

    async def frame(
        self,
        statistic: str,
        /,
        timeout: float | None = None,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> DataFrame:
        """See `Client.frame`."""
        answer = await self.run(statistic, timeout, priority=priority, deadline=deadline, **params)
        return tidy.frame(answer)

    async def map(
        self,
        jobs: Jobs,
        window: int = 64,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> AsyncIterator[Answer]:
        """See `Client.map`; `jobs` may also be an asynchronous iterable."""
        when = operations.scheduling(priority, deadline)
        async with contextlib.aclosing(self._pipeline(jobs, window, when)) as requests:
            async for request in requests:
                yield session.final_answer(request.outcome())

    async def outcomes(
        self,
        jobs: Jobs,
        window: int = 64,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """See `Client.outcomes`; `jobs` may also be an asynchronous iterable."""
        when = operations.scheduling(priority, deadline)
        async with contextlib.aclosing(self._pipeline(jobs, window, when)) as requests:
            async for request in requests:
                yield operations.state_of_over(request)

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
            listing.add(await self._perform(operations.job_page(request)))
        return listing.jobs

    async def num_jobs(self) -> int:
        """See `Client.num_jobs`."""
        return await self._perform(operations.num_jobs())

    async def shutdown(self, scope: str = m.SHUTDOWN_BROKER) -> int:
        """See `Client.shutdown`."""
        return await self._perform(operations.shutdown(scope))

    async def ping(self) -> dict[str, Any]:
        """See `Client.ping`."""
        return await self._perform(operations.ping())

    async def stats(self) -> dict[str, Any]:
        """See `Client.stats`."""
        return await self._perform(operations.stats())

    async def recent(self, limit: int = 20) -> dict[str, list[dict[str, Any]]]:
        """See `Client.recent`."""
        return await self._perform(operations.recent(limit))

    # --- requests: their replies within a deadline ------------------------------------

    async def _perform(self, call: Call[T]) -> T:
        """`call`'s answer, as `Client._perform`."""
        limit = self.timeout if call.timeout is None else call.timeout
        (request,) = await self._over([call.message], limit)
        if not request.done:
            raise request.refusal or call.late(limit, self.endpoint)
        return call.answer(request.outcome())

    async def _pipeline(
        self, jobs: Jobs, window: int, when: operations.Scheduling
    ) -> AsyncGenerator[Request, None]:
        """The requests of `jobs`, over, in input order, up to `window` in flight (as
        clients.pipeline does for `Client`); a job late by the client's timeout fails."""
        if window < 1:
            raise ValueError("window must be at least 1")
        in_flight: deque[asyncio.Task[Request]] = deque()
        try:
            async for statistic, params in _aiter(jobs):
                submit = operations.map_submit(self._session(), statistic, params, when)
                in_flight.append(asyncio.ensure_future(self._map_job(submit)))
                if len(in_flight) >= window:
                    yield await in_flight.popleft()
            while in_flight:
                yield await in_flight.popleft()
        finally:
            for task in in_flight:  # the caller stopped early: stop waiting for these
                task.cancel()

    async def _map_job(self, submit: m.Submit) -> Request:
        (request,) = await self._over([submit], self.timeout)
        if not request.done:
            operations.map_timeout(request, self.timeout)
        return request

    async def _over(self, messages: Sequence[m.Message], timeout_s: float) -> list[Request]:
        """Send `messages` together; their requests once all are over, or after
        `timeout_s`, when those still unanswered are given up on (and not `done`)."""
        transport = self._connected()
        requests = [transport.session.request(message) for message in messages]
        transport.flush()
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in requests]
        self._waiters.update(zip(requests, waiters, strict=True))
        try:
            if waiters:
                await asyncio.wait(waiters, timeout=timeout_s)
        finally:
            for request in requests:
                if self._waiters.pop(request, None) is not None and not request.done:
                    transport.session.forget(request)  # late, or the caller was cancelled
        return requests

    def _resolve(self, requests: list[Request]) -> None:
        for request in requests:
            waiter = self._waiters.pop(request, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # --- the transport and its reader task --------------------------------------------

    def _session(self) -> Session:
        return self._connected().session

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


def _state_of(request: Request) -> dict[str, Any]:
    """`get`'s shape for a request that may be unanswered (given up on), refused or failed."""
    return operations.state_of_over(request) if request.done else operations.still_running()
