"""What the SQLite and PostgreSQL stores say alike: the jobs table's columns, a row as a
`JobRecord`, the query of a page of jobs, and filling the `statistic` column."""

from __future__ import annotations

from typing import Any

from broker.store.interface import JobRecord, job_statistic
from protocol.messages import JobStatus

RUNNING = str(JobStatus.RUNNING)  # a plain str: cheaper than `.value` per insert
# The condition written out, not a parameter, so that the indexes of running jobs
# (partial: WHERE status = 'running') serve every plan a database keeps for the query.
IS_RUNNING = f"status = '{RUNNING}'"
JOB_COLUMNS = (
    "seq, request_id, request, status, attempts, answer, reason, fingerprint, created_s,"
    " finished_s, owner"
)
SUMMARY_COLUMNS = JOB_COLUMNS.replace("answer, ", "NULL, ")  # a job without its answer


def record_from_row(row: tuple[Any, ...]) -> JobRecord:
    """The job of a row of `JOB_COLUMNS` (or `SUMMARY_COLUMNS`)."""
    seq, request_id, request, status, attempts, answer, reason, fingerprint, created = row[:9]
    finished, owner = row[9:]
    return JobRecord(
        seq=seq,
        request_id=request_id,
        job_body=bytes(request),  # the column keeps its first name, "request": no migration
        status=JobStatus(status),
        attempts=attempts,
        answer=None if answer is None else bytes(answer),
        reason=reason,
        fingerprint=fingerprint,
        created_s=created,
        finished_s=finished,
        owner=owner,
    )


def page_query(
    owner: str | None, status: str | None, statistic: str | None, mark: str = "?"
) -> str:
    """The SELECT of a page of (seq, status): the conditions given, then `seq > after`,
    in job order, `LIMIT`; each condition an equality that an index leads with (the
    owner's, or the listing indexes), so a page reads about as many rows as it returns.
    Its parameters: `page_params(owner, status, statistic)`, then after and limit."""
    conditions = [
        *(["owner = {m} AND owner != ''"] if owner is not None else []),
        *(["status = {m}"] if status is not None else []),
        *(["statistic = {m}"] if statistic is not None else []),
        "seq > {m}",
    ]
    where = " AND ".join(conditions).format(m=mark)
    return f"SELECT seq, status FROM jobs WHERE {where} ORDER BY seq LIMIT {mark}"


def page_params(owner: str | None, status: str | None, statistic: str | None) -> list[str]:
    """The parameters of `page_query`'s conditions, in its order (after and limit follow)."""
    return [value for value in (owner, status, statistic) if value is not None]


def fill_statistics(db: Any, mark: str, batch: int = 10_000) -> None:
    """Fill the `statistic` column of every job from its body, `batch` jobs at a time
    (`db`: an SQLite or psycopg connection, whose parameter mark is `mark`)."""
    after = 0
    while rows := db.execute(
        f"SELECT seq, request FROM jobs WHERE seq > {mark} ORDER BY seq LIMIT {mark}",
        (after, batch),
    ).fetchall():
        db.cursor().executemany(
            f"UPDATE jobs SET statistic = {mark} WHERE seq = {mark}",
            [(job_statistic(bytes(body)), seq) for seq, body in rows],
        )
        after = rows[-1][0]
