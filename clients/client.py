"""The Python client library: `Client`, what users import to talk to an LSS service.

    from clients import Client
    with Client() as c:                      # $LSS_CLIENT_ENDPOINT or tcp://127.0.0.1:5555
        c.state_mean(QUESTION, "Ohio")       # -> {"Ohio": 31.2}

A `Client` may be shared by threads. Every call has a deadline (`timeout`, seconds);
`wait` and the per-statistic methods are pushed their answer by the broker (no polling).

Threads take turns at the socket (leader/followers): a caller waiting for a reply does
the socket's work itself when no other thread is doing it (then a call costs no thread
hand-off), and otherwise queues its request, wakes the thread at the socket, and sleeps
until its reply has come or the leader has left (then one of the sleepers leads).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from clients import operations, session, tidy
from clients.api import StatisticMethods
from clients.listing import JobListing
from clients.operations import Call
from clients.pipeline import Job, Pipeline
from clients.session import Answer, Request
from clients.transport import Security, Transport, default_security
from protocol import config
from protocol import messages as m
from protocol.errors import BrokerUnavailable

if TYPE_CHECKING:
    from pandas import DataFrame

T = TypeVar("T")


class Client(StatisticMethods[Answer]):
    """A connection to an LSS service. Use as a context manager, or call `close()`.

    `endpoint` is one broker's, or several: a comma-separated list or a list of str. The
    client talks to one broker at a time and moves to the next in the list when it falls
    silent for the heartbeat window, resending what is pending (docs/protocol.md,
    "Several brokers"). `endpoint` is kept as the comma-separated list. The heartbeat
    settings are the broker's (docs/protocol.md, "Client liveness").

    Its operations are those of clients.operations, driven here; `AsyncClient` has the
    same ones (tests/unit/test_client_surface.py).
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
        self.endpoints = config.endpoints(given)
        self.endpoint = ",".join(self.endpoints)
        self.timeout = timeout
        self._security = security or default_security()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._transport = Transport(
            self.endpoints,
            self._security,
            wake_fd=self._wake_r,
            heartbeat_interval_s=heartbeat_interval_s,
            heartbeat_liveness=heartbeat_liveness,
        )
        self._lock = threading.Lock()  # guards the session, `_leading` and `_closed`
        self._changed = threading.Condition(self._lock)  # requests answered, or no leader
        self._leading = False
        self._woken = False  # the wake pipe has been written to since the leader read it
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket; calls still waiting fail with `BrokerUnavailable`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._transport.session.fail_all(BrokerUnavailable("the client is closed"))
            self._changed.notify_all()
            self._wake()
            self._changed.wait_for(lambda: not self._leading, timeout=5)
        self._transport.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- jobs ---------------------------------------------------------------------

    def submit(
        self,
        statistic: str,
        /,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> str:
        """Create a job; returns its id (`job_id_N`). Raises `RequestRefused` if refused.

        `priority` orders this client's own jobs: 0 first, 9 last. With `deadline` (s), a
        job not started within it never runs: it ends "cancelled" ("deadline passed").
        A bad value of either is a ValueError, before anything is sent. The same two
        keywords are on every call that submits (`run`, the statistics, `map`...)."""
        when = operations.scheduling(priority, deadline)
        return self._perform(operations.submit(self._transport.session, statistic, params, when))

    def submit_as(
        self,
        request_id: str,
        statistic: str,
        params: dict[str, Any],
        timeout: float | None = None,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> str:
        """`submit` under a request id of the caller's, which makes a retry safe: the same
        id names the same job, also after a broker restart. Raises `BrokerUnavailable`
        without a reply within `timeout` s (default: the client's)."""
        when = operations.scheduling(priority, deadline)
        return self._perform(operations.submit_as(request_id, statistic, params, timeout, when))

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's state: {"status": "running" | "done" (with "data") | "error" (with
        "reason") | "cancelled" (with "reason": "cancelled" or "deadline passed")}."""
        return self._perform(operations.get(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Answer:
        """The job's answer once it is done; raises `JobFailed`, `JobCancelled`,
        `JobTimeout` or `UnknownJob`."""
        return self._perform(operations.wait(job_id, timeout))

    def cancel(self, job_id: str) -> str:
        """Cancel a job of this client's key: a queued one never runs, a running one's
        answer is dropped; its waiters get `JobCancelled`. Returns its final status:
        "cancelled" (now or before), or "done" / "error" when it had finished first (left
        as it is). Raises `UnknownJob` for an unknown id or another key's job."""
        return self._perform(operations.cancel(job_id))

    def wait_all(self, job_ids: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
        """The final state of each job, shaped like `get`'s, waiting for all at once (one
        WAIT each, sent together); a job not over within `timeout` s is still "running"."""
        requests = self._start([m.Wait(job) for job in job_ids])
        self._drive(requests, time.monotonic() + (self.timeout if timeout is None else timeout))
        return {
            job: self._state_of(request) for job, request in zip(job_ids, requests, strict=True)
        }

    def run(
        self,
        statistic: str,
        /,
        timeout: float | None = None,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> Answer:
        """Submit a job and wait for its answer, in one round trip (`priority` and
        `deadline` as in `submit`; a job cancelled raises `JobCancelled`)."""
        when = operations.scheduling(priority, deadline)
        call = operations.run(self._transport.session, statistic, params, timeout, when)
        return self._perform(call)

    def frame(
        self,
        statistic: str,
        /,
        timeout: float | None = None,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> DataFrame:
        """`run`'s answer as a pandas DataFrame, one row per number, its keys split into
        columns (state, category, stratum, year; then value: see `clients.tidy`).

        pandas is imported only here: ImportError, saying so, when it is missing."""
        answer = self.run(statistic, timeout, priority=priority, deadline=deadline, **params)
        return tidy.frame(answer)

    def map(
        self,
        jobs: Iterable[Job],
        window: int = 64,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> Iterator[Answer]:
        """Answers to `(statistic, params)` jobs in input order, up to `window` in flight,
        each with `priority` and `deadline` (as in `submit`).

        Raises `JobFailed` (or `JobCancelled`) at the position of a failed (or cancelled)
        job, and `JobTimeout` when a job takes longer than the client's timeout. The jobs
        travel on a socket of their own (clients.pipeline), so other threads' calls are
        not held up.
        """
        for request in self._pipeline(jobs, window, operations.scheduling(priority, deadline)):
            yield session.final_answer(request.outcome())

    def outcomes(
        self,
        jobs: Iterable[Job],
        window: int = 64,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Like `map`, but each job's final state shaped like `get`'s, never raising for a
        job: {"status": "done", "data": ...}, {"status": "cancelled", "reason": ...} or
        {"status": "error", "reason": ...} (a refused job, a failed one, or one over the
        client's timeout)."""
        for request in self._pipeline(jobs, window, operations.scheduling(priority, deadline)):
            yield self._state_of(request)

    def jobs(
        self,
        *,
        status: str | None = None,
        statistic: str | None = None,
        after: int | str = 0,
        limit: int | None = None,
    ) -> dict[str, str]:
        """Job ids with their status, in submission order: every job, or only those in
        `status` ("running", "done", "error", "cancelled"), of `statistic`, numbered above `after`
        (job_id_N, or its number N: the last id of a page gives the next), at most `limit`
        of them."""
        listing = JobListing(status, statistic, after, limit)
        while (request := listing.next_request()) is not None:
            listing.add(self._perform(operations.job_page(request)))
        return listing.jobs

    def num_jobs(self) -> int:
        """Jobs accepted and not yet finished."""
        return self._perform(operations.num_jobs())

    def shutdown(self, scope: str = m.SHUTDOWN_BROKER) -> int:
        """Start a graceful shutdown of this broker, or with `scope` "all" of every broker
        on its store; returns how many jobs this broker still has to finish."""
        return self._perform(operations.shutdown(scope))

    def ping(self) -> dict[str, Any]:
        """The broker's id, protocol version and whether it is shutting down."""
        return self._perform(operations.ping())

    def stats(self) -> dict[str, Any]:
        """Workers, queue depth, jobs by status and recent rates."""
        return self._perform(operations.stats())

    def recent(self, limit: int = 20) -> dict[str, list[dict[str, Any]]]:
        """The newest jobs and failures in the store: {"jobs": [...], "failures": [...]}."""
        return self._perform(operations.recent(limit))

    # --- one request: the reply within the client's timeout, or an error --------------

    def _perform(self, call: Call[T]) -> T:
        """`call`'s answer, its reply within its timeout (default: the client's); without
        one, the refusal it met until then, else `JobTimeout` or `BrokerUnavailable`."""
        limit = self.timeout if call.timeout is None else call.timeout
        (request,) = self._start([call.message])
        if not self._drive([request], time.monotonic() + limit):
            self._give_up(request)
            raise request.refusal or call.late(limit, self.endpoint)
        return call.answer(request.outcome())

    def _state_of(self, request: Request) -> dict[str, Any]:
        """`get`'s shape for a request that may be unanswered, refused or failed."""
        if not request.done:
            self._give_up(request)
            return operations.still_running()
        return operations.state_of_over(request)

    def _pipeline(
        self, jobs: Iterable[Job], window: int, when: operations.Scheduling
    ) -> Iterator[Request]:
        if window < 1:
            raise ValueError("window must be at least 1")
        endpoints = self._transport.session.endpoints_from_here()  # where a broker answered
        pipeline = Pipeline(Transport(endpoints, self._security), self.timeout, when)
        return pipeline.run(jobs, window)

    # --- the socket, one thread at a time (leader/followers) ----------------------------

    def _start(self, messages: Sequence[m.Message]) -> list[Request]:
        with self._lock:
            if self._closed:
                raise BrokerUnavailable("the client is closed")
            requests = [self._transport.session.request(message) for message in messages]
            if self._leading:
                self._wake()  # the leader sends them
        return requests

    def _give_up(self, request: Request) -> None:
        with self._lock:
            self._transport.session.forget(request)

    def _drive(self, requests: Sequence[Request], deadline: float) -> bool:
        """Wait until every request is over, leading when nobody is; whether they are."""
        with self._lock:
            while not all(request.done for request in requests):
                left = deadline - time.monotonic()
                if self._closed:
                    raise BrokerUnavailable("the client is closed")
                if left <= 0:
                    return False
                if self._leading:
                    self._changed.wait(left)
                else:
                    self._lead(requests, deadline)
        return True

    def _lead(self, requests: Sequence[Request], deadline: float) -> None:
        """Work the socket until `requests` are over or the deadline. Called with the lock
        held, which it releases while it blocks; on leaving, a follower takes over."""
        transport = self._transport
        self._leading = True
        try:
            while not self._closed and time.monotonic() < deadline:
                transport.flush()
                self._lock.release()
                try:
                    readable = transport.wait(deadline - time.monotonic())
                finally:
                    self._lock.acquire()
                if readable and transport.receive():
                    self._changed.notify_all()
                if self._woken:
                    self._drain_wake()
                if all(request.done for request in requests):
                    return
                transport.keep_alive()  # still waiting: now liveness matters
        finally:
            self._leading = False
            self._changed.notify_all()  # a follower takes over, or sees its reply

    def _wake(self) -> None:
        self._woken = True
        with contextlib.suppress(BlockingIOError):  # a full pipe: the leader is awake anyway
            os.write(self._wake_w, b"!")

    def _drain_wake(self) -> None:
        self._woken = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
