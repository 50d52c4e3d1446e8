"""The Python client library: `Client`, what users import to talk to an LSS service.

    from clients import Client
    with Client() as c:                      # $LSS_CLIENT_ENDPOINT or tcp://127.0.0.1:5555
        c.state_mean(QUESTION, "Ohio")       # -> {"Ohio": 31.2}

A `Client` may be shared by threads. Every call has a deadline (`timeout`, seconds);
`wait` and the per-statistic methods are pushed their answer by the broker (no polling).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

from clients.pipeline import Pipeline
from clients.transport import Pending, Security, Transport
from protocol import config
from protocol import messages as m
from protocol.errors import (
    BrokerUnavailable,
    JobFailed,
    JobTimeout,
    ProtocolError,
    RequestRefused,
    UnknownJob,
)
from protocol.messages import ErrorCode, JobStatus

Answer = dict[str, Any]


def default_security() -> Security | None:
    """CURVE settings from LSS_CURVE_SERVER_KEY and LSS_CURVE_SECRET, if both are set."""
    server_key, secret = os.environ.get("LSS_CURVE_SERVER_KEY"), os.environ.get("LSS_CURVE_SECRET")
    return Security(server_key, secret) if server_key and secret else None


class Client:
    """A connection to an LSS broker. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        endpoint: str | None = None,
        timeout: float = config.CLIENT_TIMEOUT_S,
        *,
        security: Security | None = None,
    ) -> None:
        self.endpoint = endpoint or config.env_str("client_endpoint", config.CLIENT_ENDPOINT)
        self.timeout = timeout
        self._security = security or default_security()
        self._transport = Transport(self.endpoint, security=self._security)

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
        self._transport.close()

    # --- jobs ---------------------------------------------------------------------

    def submit(self, statistic: str, /, **params: Any) -> str:
        """Create a job; returns its id (`job_id_N`). Raises `RequestRefused` if refused."""
        reply = self._call(submit_message(statistic, params))
        return expect(reply, m.Submitted).job_id

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's state: {"status": "running" | "done" (with "data") | "error" (with "reason")}."""
        return job_state(self._call_envelope(m.Get(job_id)))

    def wait(self, job_id: str, timeout: float | None = None) -> Answer:
        """The job's answer once it is done; raises `JobFailed`, `JobTimeout` or `UnknownJob`."""
        entry = self._transport.request(m.Wait(job_id))
        return final_answer(self._result(entry, timeout, job_id))

    def run(self, statistic: str, /, timeout: float | None = None, **params: Any) -> Answer:
        """Submit a job and wait for its answer, in one round trip."""
        entry = self._transport.request(submit_message(statistic, params, notify=True))
        return final_answer(self._result(entry, timeout, statistic))

    def map(self, jobs: Iterable[tuple[str, dict[str, Any]]], window: int = 64) -> Iterator[Answer]:
        """Answers to `(statistic, params)` jobs in input order, up to `window` in flight.

        Raises `JobFailed` at the position of a failed job, and `JobTimeout` when a job
        takes longer than the client's timeout. The jobs travel on a socket of their own
        (clients.pipeline), so other threads' calls are not held up.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        pipeline = Pipeline(self.endpoint, self._security, self.timeout)
        for envelope in pipeline.run(jobs, window):
            yield final_answer(envelope)

    def jobs(self) -> dict[str, str]:
        """Every job id with its status, in submission order."""
        listing: dict[str, str] = {}
        after: int | None = 0
        while after is not None:
            page = expect(self._call(m.ListJobs(after=after)), m.JobList)
            listing.update((str(job), str(status)) for job, status in page.jobs)
            after = page.next_after
        return listing

    def num_jobs(self) -> int:
        """Jobs accepted and not yet finished."""
        return expect(self._call(m.NumJobs()), m.JobCount).num_jobs

    def shutdown(self, scope: str = m.SHUTDOWN_BROKER) -> int:
        """Start a graceful shutdown of this broker, or with `scope` "all" of every broker
        on its store; returns how many jobs this broker still has to finish."""
        return expect(self._call(m.Shutdown(scope)), m.ShuttingDown).pending

    def ping(self) -> dict[str, Any]:
        """The broker's id, protocol version and whether it is shutting down."""
        pong = expect(self._call(m.Ping()), m.Pong)
        return {
            "broker_id": pong.broker_id,
            "version": pong.version,
            "shutting_down": pong.shutting_down,
        }

    def stats(self) -> dict[str, Any]:
        """Workers, queue depth, jobs by status and recent rates."""
        return expect(self._call(m.Stats()), m.StatsReply).stats

    def recent(self, limit: int = 20) -> dict[str, list[dict[str, Any]]]:
        """The newest jobs and failures in the store: {"jobs": [...], "failures": [...]}."""
        reply = expect(self._call(m.Recent(limit)), m.RecentJobs)
        return {"jobs": reply.jobs, "failures": reply.failures}

    # --- the nine statistics ------------------------------------------------------

    def states_mean(self, question: str) -> Answer:
        return self.run("states_mean", question=question)

    def state_mean(self, question: str, state: str) -> Answer:
        return self.run("state_mean", question=question, state=state)

    def best5(self, question: str) -> Answer:
        return self.run("best5", question=question)

    def worst5(self, question: str) -> Answer:
        return self.run("worst5", question=question)

    def global_mean(self, question: str) -> Answer:
        return self.run("global_mean", question=question)

    def diff_from_mean(self, question: str) -> Answer:
        return self.run("diff_from_mean", question=question)

    def state_diff_from_mean(self, question: str, state: str) -> Answer:
        return self.run("state_diff_from_mean", question=question, state=state)

    def mean_by_category(self, question: str) -> Answer:
        return self.run("mean_by_category", question=question)

    def state_mean_by_category(self, question: str, state: str) -> Answer:
        return self.run("state_mean_by_category", question=question, state=state)

    # --- plumbing -----------------------------------------------------------------

    def _call_envelope(self, message: m.Message) -> m.Envelope:
        entry = self._transport.request(message)
        try:
            return entry.future.result(timeout=self.timeout)
        except FutureTimeout as exc:
            self._transport.forget(entry)
            raise BrokerUnavailable(
                f"no reply from {self.endpoint} within {self.timeout:g} s"
            ) from exc

    def _call(self, message: m.Message) -> m.Message:
        msg = self._call_envelope(message).message
        if isinstance(msg, m.ErrorReply):
            raise RequestRefused(msg.code, msg.reason)
        return msg

    def _result(self, entry: Pending, timeout: float | None, what: str) -> m.Envelope:
        limit = self.timeout if timeout is None else timeout
        try:
            return entry.future.result(timeout=limit)
        except FutureTimeout as exc:
            self._transport.forget(entry)
            raise JobTimeout(f"{what} did not finish within {limit:g} s") from exc


def submit_message(statistic: str, params: dict[str, Any], notify: bool = False) -> m.Submit:
    return m.Submit(uuid.uuid4().hex, statistic, dict(params), notify=notify)


def expect(message: m.Message, kind: type[m.M]) -> m.M:
    if isinstance(message, m.ErrorReply):
        raise RequestRefused(message.code, message.reason)
    if not isinstance(message, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(message).__name__}")
    return message


def job_state(envelope: m.Envelope) -> dict[str, Any]:
    """A GET reply as the original service's {"status": ..., "data" | "reason": ...}."""
    msg = envelope.message
    if isinstance(msg, m.ErrorReply):
        if msg.code in (ErrorCode.INVALID_JOB_ID, ErrorCode.EXPIRED):
            return {"status": JobStatus.ERROR.value, "reason": msg.reason}
        raise RequestRefused(msg.code, msg.reason)
    state = expect(msg, m.JobState)
    if state.status == JobStatus.DONE.value:
        return {"status": state.status, "data": answer_of(envelope)}
    if state.status == JobStatus.ERROR.value:
        return {"status": state.status, "reason": state.reason or "failed"}
    return {"status": state.status}


def answer_of(envelope: m.Envelope) -> Answer:
    if envelope.payload is None:
        raise ProtocolError("a done job's reply has no answer frame")
    data = m.unpack(envelope.payload)
    if not isinstance(data, dict):
        raise ProtocolError("a job's answer must be a map")
    return data


def final_answer(envelope: m.Envelope) -> Answer:
    msg = envelope.message
    if isinstance(msg, m.ErrorReply):
        if msg.code in (ErrorCode.INVALID_JOB_ID, ErrorCode.EXPIRED):
            raise UnknownJob(msg.reason)
        raise RequestRefused(msg.code, msg.reason)
    state = expect(msg, m.JobState)
    if state.status == JobStatus.ERROR.value:
        raise JobFailed(state.reason or "failed")
    return answer_of(envelope)
