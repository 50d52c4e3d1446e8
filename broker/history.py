"""The store's newest jobs and failures as a `RecentJobs` reply (for the dashboard).

Read from the store, not from memory, so the list survives a restart of the broker. A
job's body is decoded for its statistic and parameters; text longer than
`MAX_TEXT` is cut, so a reply stays small whatever clients submitted.
"""

from __future__ import annotations

from typing import Any

from broker.store import JobRecord, Store
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.messages import JobStatus

MAX_TEXT = 200


def recent_jobs(store: Store, limit: int, owner: str | None = None) -> m.RecentJobs:
    """Up to `limit` (capped at `MAX_RECENT`) newest jobs and newest failures (only
    `owner`'s, if given)."""
    limit = max(1, min(limit, m.MAX_RECENT))
    jobs = [summary(record) for record in store.recent(limit, owner=owner)]
    failures = [summary(record) for record in store.recent(limit, JobStatus.ERROR, owner)]
    return m.RecentJobs(jobs, failures)


def summary(record: JobRecord) -> dict[str, Any]:
    statistic, params = _job_of(record.job_body)
    return {
        "job_id": m.job_id(record.seq),
        "statistic": statistic,
        "params": params,
        "status": record.status.value,
        "reason": _cut(record.reason) if record.reason else None,
        "created_s": record.created_s,
        "finished_s": record.finished_s,
    }


def _job_of(body: bytes) -> tuple[str, dict[str, Any]]:
    try:
        job = m.decode_body(m.Job, body)
    except ProtocolError:
        return "?", {}
    return _cut(job.statistic), {str(k)[:MAX_TEXT]: _cut(v) for k, v in job.params.items()}


def _cut(value: Any) -> Any:
    text = (
        value
        if isinstance(value, str)
        else repr(value)
        if not isinstance(value, int | float)
        else value
    )
    if isinstance(text, str) and len(text) > MAX_TEXT:
        return text[:MAX_TEXT] + "..."
    return text
