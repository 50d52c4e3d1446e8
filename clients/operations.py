"""Every client operation once, without I/O: the request it sends and how its reply
becomes the caller's answer, for `Client` and `AsyncClient` alike.

An operation is a `Call`: a message, how to read its reply, and what its deadline means
(a reply that waits for a job is `JobTimeout` when late, any other `BrokerUnavailable`).
The clients only drive it: `Client` on its shared socket, `AsyncClient` on its event
loop. Their public surfaces are checked to match (tests/unit/test_client_surface.py);
the statistic methods are written once in clients/api.py, the job listing's pages in
clients/listing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from clients import session
from clients.session import Answer, Request, Session
from protocol import messages as m
from protocol.errors import BrokerUnavailable, JobTimeout, LssError

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how its reply becomes the answer. `job` names what the reply
    waits for, if it waits for a job to finish; `timeout` is in seconds, None for the
    client's own."""

    message: m.Message
    answer: Callable[[m.Envelope], T]
    job: str | None = None
    timeout: float | None = None

    def late(self, limit_s: float, endpoint: str) -> LssError:
        """The error of a request with no reply within `limit_s`."""
        if self.job is not None:
            return JobTimeout(f"{self.job} did not finish within {limit_s:g} s")
        return BrokerUnavailable(f"no reply from {endpoint} within {limit_s:g} s")


def submit(s: Session, statistic: str, params: dict[str, Any]) -> Call[str]:
    return submit_as(s.new_request_id(), statistic, params)


def submit_as(
    request_id: str, statistic: str, params: dict[str, Any], timeout: float | None = None
) -> Call[str]:
    return Call(m.Submit(request_id, statistic, params), _job_id, timeout=timeout)


def get(job_id: str) -> Call[dict[str, Any]]:
    return Call(m.Get(job_id), session.status_dict)


def wait(job_id: str, timeout: float | None) -> Call[Answer]:
    return Call(m.Wait(job_id), session.final_answer, job_id, timeout)


def run(s: Session, statistic: str, params: dict[str, Any], timeout: float | None) -> Call[Answer]:
    submit = m.Submit(s.new_request_id(), statistic, params, notify=True)
    return Call(submit, session.final_answer, statistic, timeout)


def job_page(request: m.ListJobs) -> Call[m.JobList]:
    """One page of a job listing (clients.listing)."""
    return Call(request, lambda e: session.expect(e.message, m.JobList))


def num_jobs() -> Call[int]:
    return Call(m.NumJobs(), lambda e: session.expect(e.message, m.JobCount).num_jobs)


def shutdown(scope: str) -> Call[int]:
    return Call(m.Shutdown(scope), lambda e: session.expect(e.message, m.ShuttingDown).pending)


def ping() -> Call[dict[str, Any]]:
    return Call(m.Ping(), lambda e: session.pong_info(e.message))


def stats() -> Call[dict[str, Any]]:
    return Call(m.Stats(), lambda e: session.expect(e.message, m.StatsReply).stats)


def recent(limit: int) -> Call[dict[str, list[dict[str, Any]]]]:
    return Call(m.Recent(limit), _recent_jobs)


def map_submit(s: Session, statistic: str, params: dict[str, Any]) -> m.Submit:
    """One job of `map` or `outcomes`: submitted, its final state pushed back."""
    return m.Submit(s.new_request_id(), statistic, dict(params), notify=True)


def map_timeout(request: Request, timeout_s: float) -> None:
    """End a job of `map` or `outcomes` not over within `timeout_s`: with the refusal it
    met until then, if any, else `JobTimeout`."""
    late = JobTimeout(f"a job of this map took over {timeout_s:g} s")
    request.fail(request.refusal or late)


def state_of_over(request: Request) -> dict[str, Any]:
    """`get`'s shape for a request that is over: answered, refused or failed."""
    try:
        return session.status_dict(request.outcome())
    except LssError as exc:
        return {"status": m.JobStatus.ERROR.value, "reason": str(exc)}


def still_running() -> dict[str, Any]:
    """`wait_all`'s state of a job not over within its deadline."""
    return {"status": m.JobStatus.RUNNING.value}


def _job_id(envelope: m.Envelope) -> str:
    return session.expect(envelope.message, m.Submitted).job_id


def _recent_jobs(envelope: m.Envelope) -> dict[str, list[dict[str, Any]]]:
    reply = session.expect(envelope.message, m.RecentJobs)
    return {"jobs": reply.jobs, "failures": reply.failures}
