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

import math
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


@dataclass(frozen=True)
class Scheduling:
    """Where a job waits among its producer's own: `priority` 0 (first) .. 9 (last), and
    `deadline_ms`, within which it must start or never run (0: none). Build it with
    `scheduling`, which checks the caller's values."""

    priority: int = m.DEFAULT_PRIORITY
    deadline_ms: int = 0


def scheduling(priority: int = m.DEFAULT_PRIORITY, deadline: float | None = None) -> Scheduling:
    """The `priority=` and `deadline=` (seconds, None: none) of a submitting call; a
    ValueError saying what is wrong before anything is sent."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be a whole number, got {type(priority).__name__}")
    if not m.MIN_PRIORITY <= priority <= m.MAX_PRIORITY:
        raise ValueError(
            f"priority must be from {m.MIN_PRIORITY} (first) to {m.MAX_PRIORITY} (last), "
            f"got {priority}"
        )
    return Scheduling(priority, 0 if deadline is None else _deadline_ms(deadline))


def _deadline_ms(deadline: float) -> int:
    """`deadline` seconds as whole milliseconds, rounded up (a short deadline stays one)."""
    longest_s = m.MAX_DEADLINE_MS / 1000
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise ValueError(f"deadline must be a number of seconds, got {type(deadline).__name__}")
    if not 0 < deadline <= longest_s:  # NaN too
        raise ValueError(f"deadline must be above 0 and at most {longest_s:g} s, got {deadline}")
    return math.ceil(deadline * 1000)


def submit(s: Session, statistic: str, params: dict[str, Any], when: Scheduling) -> Call[str]:
    return submit_as(s.new_request_id(), statistic, params, None, when)


def submit_as(
    request_id: str,
    statistic: str,
    params: dict[str, Any],
    timeout: float | None,
    when: Scheduling,
) -> Call[str]:
    return Call(_submit(request_id, statistic, params, when), _job_id, timeout=timeout)


def get(job_id: str) -> Call[dict[str, Any]]:
    return Call(m.Get(job_id), session.status_dict)


def wait(job_id: str, timeout: float | None) -> Call[Answer]:
    return Call(m.Wait(job_id), session.final_answer, job_id, timeout)


def run(
    s: Session, statistic: str, params: dict[str, Any], timeout: float | None, when: Scheduling
) -> Call[Answer]:
    submit = _submit(s.new_request_id(), statistic, params, when, notify=True)
    return Call(submit, session.final_answer, statistic, timeout)


def cancel(job_id: str) -> Call[str]:
    """Cancel a job: its final status ("cancelled", or "done" / "error" when it had
    finished first); `UnknownJob` for an unknown id or another key's job."""
    return Call(m.Cancel(job_id), session.final_status)


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


def map_submit(s: Session, statistic: str, params: dict[str, Any], when: Scheduling) -> m.Submit:
    """One job of `map` or `outcomes`: submitted, its final state pushed back."""
    return _submit(s.new_request_id(), statistic, dict(params), when, notify=True)


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


def _submit(
    request_id: str,
    statistic: str,
    params: dict[str, Any],
    when: Scheduling,
    notify: bool = False,
) -> m.Submit:
    return m.Submit(
        request_id, statistic, params, notify, priority=when.priority, deadline_ms=when.deadline_ms
    )


def _job_id(envelope: m.Envelope) -> str:
    return session.expect(envelope.message, m.Submitted).job_id


def _recent_jobs(envelope: m.Envelope) -> dict[str, list[dict[str, Any]]]:
    reply = session.expect(envelope.message, m.RecentJobs)
    return {"jobs": reply.jobs, "failures": reply.failures}
