"""What every results store is: the `Store` interface, and the records it keeps.

A job is a `JobRecord`; how it ended, an `Outcome`. `stored_bytes` is what a job takes
in the store as a key's quota counts it. The implementations: broker.store.memory,
broker.store.sqlite and broker.store.postgres.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Protocol

from protocol.errors import ProtocolError
from protocol.messages import Job, JobStatus, decode_body

RECENT_SCAN = 10_000
"""`recent` looks among this many newest jobs only, so that it never scans a large store."""


@dataclass(frozen=True)
class JobRecord:
    """One job as stored: `job_body` is the msgpack body of the `Job` sent to workers."""

    seq: int
    request_id: str
    job_body: bytes
    status: JobStatus
    attempts: int = 0
    answer: bytes | None = None
    reason: str | None = None
    fingerprint: str | None = None
    created_s: float = 0.0
    finished_s: float | None = None
    owner: str = ""  # the submitter's public key with CURVE on, else ""

    @property
    def stored_bytes(self) -> int:
        """What the job takes in the store, as its key's quota counts it."""
        return stored_bytes(self.job_body, self.answer, self.reason)


@dataclass(frozen=True)
class Outcome:
    """How a job ended: DONE with an msgpack answer, or ERROR (CANCELLED) with a reason."""

    status: JobStatus
    answer: bytes | None = None
    reason: str | None = None
    fingerprint: str | None = None


def stored_bytes(job_body: bytes, answer: bytes | None = None, reason: str | None = None) -> int:
    """A job's bytes as a key's quota counts them: its body, its answer and its reason."""
    return len(job_body) + len(answer or b"") + len((reason or "").encode("utf-8", "replace"))


def with_outcome(record: JobRecord, outcome: Outcome, now_s: float) -> JobRecord:
    """`record` as it is once `outcome` is recorded at `now_s`."""
    return replace(
        record, status=outcome.status, answer=outcome.answer, reason=outcome.reason,
        fingerprint=outcome.fingerprint, finished_s=now_s,
    )  # fmt: skip


def job_statistic(job_body: bytes) -> str:
    """The statistic a stored job body (a `Job` the broker made) names; "" for a body
    that does not read as one (no listing by statistic finds that job)."""
    try:
        return decode_body(Job, job_body).statistic
    except ProtocolError:
        return ""


def cancel_if_running(store: Store, seq: int, reason: str, now_s: float) -> bool:
    """`Store.cancel` for a store only this broker writes: job `seq` ends CANCELLED with
    `reason` (recorded as any outcome) if it is still running; whether it was."""
    record = store.get(seq)
    if record is None or record.status is not JobStatus.RUNNING:
        return False
    store.finish(seq, Outcome(JobStatus.CANCELLED, reason=reason), now_s, record.owner)
    return True


class InProcessStore:
    """What a store in the broker's own process (memory, SQLite, one broker) says of the
    things a shared database has: every job it hands out is stored at once, no other
    broker ends its jobs, and no query travels."""

    def superseded(self) -> dict[int, int | str]:
        """Always empty: `add` writes at once, so every job it hands out is stored."""
        return {}

    def overruled(self) -> set[int]:
        """Always empty: one broker, so no other ends its jobs."""
        return set()

    def round_trips(self) -> tuple[int, float | None]:
        """(0, 0.0): the store is in this process; no query travels."""
        return 0, 0.0


class Store(Protocol):
    """What the broker needs of a results store.

    `add`'s `statistic` is the one its job body names, kept apart so that jobs can be
    listed by it (`page`).

    Writes become durable at `commit()`; `rollback()` undoes every write since the last
    commit, except that job numbers handed out stay used. Any method may raise
    `StorageError` (broker.store.errors); a failed `add` takes back only its own write
    if it can (then the error is `contained`). `stored_bytes(owner)` is what a key's
    jobs take in the store (`JobRecord.stored_bytes`, summed), kept as a running total
    on every write and expiry, never counted by a scan. `count(status)` never scans
    either: kept up to date in memory by the memory and SQLite stores; the PostgreSQL
    store, which other brokers write too, keeps running totals in the database and
    reads them (a few rows) at most every second. `get_many` reads many jobs at once
    (one query on PostgreSQL: a turn's reads). `expire` may delete only a batch of the
    jobs it could: it returns how many, and the broker calls again while that is not 0.

    `add` may hand out a new job's number before it writes the job (the PostgreSQL
    store writes a turn's jobs at `commit`). Such a job, if the commit did not store
    it, is in `superseded()` after the commit: with the number of the job its request
    id already had (another broker took it), or why its row alone was refused; the
    memory and SQLite stores write at once and never supersede. `round_trips()` is the
    database round trips so far and per job added lately (0 for in-process stores).
    `overruled()` names the jobs whose outcome the last commit did not record because
    the job had ended already (another broker cancelled it): what was said of them must
    be what the store holds.

    `cancel(seq, reason, now_s)` ends a running job CANCELLED whichever broker holds it
    (True), or does nothing if it is not running (False); on PostgreSQL the holder is
    told as of a finish (NOTIFY), and its own late finish is then refused quietly.
    """

    def add(
        self, request_id: str, job_body: bytes, now_s: float, owner: str = "", statistic: str = ""
    ) -> tuple[int, bool]: ...
    def find_request(self, request_id: str) -> int | None: ...
    def get(self, seq: int) -> JobRecord | None: ...
    def get_many(self, seqs: Collection[int]) -> dict[int, JobRecord]: ...
    def finish(self, seq: int, outcome: Outcome, now_s: float, owner: str = "") -> None: ...
    def cancel(self, seq: int, reason: str, now_s: float) -> bool: ...
    def stored_bytes(self, owner: str) -> int: ...
    def add_attempt(self, seq: int) -> int: ...
    def page(
        self,
        after: int,
        limit: int,
        owner: str | None = None,
        *,
        status: str | None = None,
        statistic: str | None = None,
    ) -> list[tuple[int, JobStatus]]: ...
    def recent(
        self, limit: int, status: JobStatus | None = None, owner: str | None = None
    ) -> list[JobRecord]: ...
    def unfinished(self) -> list[JobRecord]: ...
    def count(self, status: JobStatus) -> int: ...
    def last_seq(self) -> int: ...
    def expire(self, finished_before_s: float) -> int: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def has_changes(self) -> bool: ...
    def superseded(self) -> dict[int, int | str]: ...
    def overruled(self) -> set[int]: ...
    def round_trips(self) -> tuple[int, float | None]: ...
    def close(self) -> None: ...
