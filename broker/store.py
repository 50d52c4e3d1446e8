"""The results store: every job's request, status and answer, keyed by job number.

Two implementations share one interface (`Store`): `SqliteStore`, durable (WAL mode,
one transaction per broker loop turn), and `MemoryStore` for unit tests. Job numbers
are issued by the store and never reused, also after results expire or a restart.
Counts by status are kept up to date in memory so that counting never scans.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from broker.checkpoint import Checkpointer
from protocol.messages import JobStatus

RECENT_SCAN = 10_000
"""`recent` looks among this many newest jobs only, so that it never scans a large store."""


@dataclass(frozen=True)
class JobRecord:
    """One job as stored: `request` is the msgpack body of the `Job` sent to workers."""

    seq: int
    request_id: str
    request: bytes
    status: JobStatus
    attempts: int = 0
    answer: bytes | None = None
    reason: str | None = None
    fingerprint: str | None = None
    created_s: float = 0.0
    finished_s: float | None = None


class Store(Protocol):
    """What the broker needs of a results store. Writes become durable at `commit()`."""

    def add(self, request_id: str, request: bytes, now_s: float) -> tuple[int, bool]: ...
    def find_request(self, request_id: str) -> int | None: ...
    def get(self, seq: int) -> JobRecord | None: ...
    def finish(self, seq: int, outcome: Outcome, now_s: float) -> None: ...
    def add_attempt(self, seq: int) -> int: ...
    def page(self, after: int, limit: int) -> list[tuple[int, JobStatus]]: ...
    def recent(self, limit: int, status: JobStatus | None = None) -> list[JobRecord]: ...
    def unfinished(self) -> list[JobRecord]: ...
    def count(self, status: JobStatus) -> int: ...
    def last_seq(self) -> int: ...
    def expire(self, finished_before_s: float) -> int: ...
    def commit(self) -> None: ...
    def has_new_jobs(self) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How a job ended: DONE with an msgpack answer, or ERROR with a reason."""

    status: JobStatus
    answer: bytes | None = None
    reason: str | None = None
    fingerprint: str | None = None


class MemoryStore:
    """A `Store` in a dict: fast, forgets everything at exit. For tests."""

    def __init__(self) -> None:
        self._jobs: dict[int, JobRecord] = {}
        self._by_request: dict[str, int] = {}
        self._counts: Counter[JobStatus] = Counter()
        self._last_seq = 0

    def add(self, request_id: str, request: bytes, now_s: float) -> tuple[int, bool]:
        """The job for `request_id`: a new one (True), or the one it already has (False)."""
        known = self._by_request.get(request_id)
        if known is not None:
            return known, False
        self._last_seq += 1
        seq = self._last_seq
        self._jobs[seq] = JobRecord(seq, request_id, request, JobStatus.RUNNING, created_s=now_s)
        self._by_request[request_id] = seq
        self._counts[JobStatus.RUNNING] += 1
        return seq, True

    def find_request(self, request_id: str) -> int | None:
        return self._by_request.get(request_id)

    def get(self, seq: int) -> JobRecord | None:
        return self._jobs.get(seq)

    def finish(self, seq: int, outcome: Outcome, now_s: float) -> None:
        record = self._jobs[seq]
        self._counts[record.status] -= 1
        self._counts[outcome.status] += 1
        self._jobs[seq] = replace(
            record,
            status=outcome.status,
            answer=outcome.answer,
            reason=outcome.reason,
            fingerprint=outcome.fingerprint,
            finished_s=now_s,
        )

    def add_attempt(self, seq: int) -> int:
        record = self._jobs[seq]
        self._jobs[seq] = replace(record, attempts=record.attempts + 1)
        return record.attempts + 1

    def page(self, after: int, limit: int) -> list[tuple[int, JobStatus]]:
        seqs = sorted(s for s in self._jobs if s > after)[:limit]
        return [(s, self._jobs[s].status) for s in seqs]

    def recent(self, limit: int, status: JobStatus | None = None) -> list[JobRecord]:
        """Up to `limit` of the last `RECENT_SCAN` jobs (of `status`), newest first, no answers."""
        newest = sorted((s for s in self._jobs if s > self._last_seq - RECENT_SCAN), reverse=True)
        found = [self._jobs[s] for s in newest if status is None or self._jobs[s].status is status]
        return [replace(record, answer=None) for record in found[:limit]]

    def unfinished(self) -> list[JobRecord]:
        return [r for _, r in sorted(self._jobs.items()) if r.status is JobStatus.RUNNING]

    def count(self, status: JobStatus) -> int:
        return self._counts[status]

    def last_seq(self) -> int:
        return self._last_seq

    def expire(self, finished_before_s: float) -> int:
        old = [
            r
            for r in self._jobs.values()
            if r.finished_s is not None and r.finished_s < finished_before_s
        ]
        for record in old:
            del self._jobs[record.seq]
            self._by_request.pop(record.request_id, None)
            self._counts[record.status] -= 1
        return len(old)

    def commit(self) -> None:
        """Nothing to make durable."""

    def has_new_jobs(self) -> bool:
        """Never: nothing waits for a commit here."""
        return False

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    request BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    answer BLOB,
    reason TEXT,
    fingerprint TEXT,
    created_s REAL NOT NULL,
    finished_s REAL
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_s) WHERE finished_s IS NOT NULL;
"""
_RUNNING = str(JobStatus.RUNNING)  # a plain str: cheaper than `.value` per insert
_COLUMNS = (
    "seq, request_id, request, status, attempts, answer, reason, fingerprint, created_s, finished_s"
)
_SUMMARY_COLUMNS = _COLUMNS.replace("answer, ", "")


class SqliteStore:
    """A durable `Store` in one SQLite file (WAL). Call `commit()` once per batch."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level="DEFERRED", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={_checked_sync(synchronous)}")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer thread does it
        self._db.executescript(_SCHEMA)
        self._checkpointer = Checkpointer(path)
        self._checkpointer.start()
        self._counts: Counter[JobStatus] = Counter()
        for status, count in self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            self._counts[JobStatus(status)] = count
        self._last_seq = self._read_last_seq()
        # Outcomes recorded since the last commit, written by one executemany at commit:
        # one statement per job cost more than the rest of the broker's work on it.
        self._finished: dict[int, tuple[Outcome, float]] = {}
        self._new_jobs = False

    def _read_last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        return int(row[0]) if row else 0

    def add(self, request_id: str, request: bytes, now_s: float) -> tuple[int, bool]:
        """The job for `request_id`: a new one (True), or the one it already has (False).

        New requests are the common case, so this inserts first and looks up only
        when the request id is already taken.
        """
        try:
            cursor = self._db.execute(
                "INSERT INTO jobs (request_id, request, status, created_s) VALUES (?, ?, ?, ?)",
                (request_id, request, _RUNNING, now_s),
            )
        except sqlite3.IntegrityError:
            known = self.find_request(request_id)
            if known is None:
                raise
            return known, False
        seq = cursor.lastrowid
        if seq is None:  # pragma: no cover - sqlite always sets it after an INSERT
            raise RuntimeError("sqlite did not return a row id")
        self._counts[JobStatus.RUNNING] += 1
        self._last_seq = seq
        self._new_jobs = True
        return seq, True

    def find_request(self, request_id: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM jobs WHERE request_id = ?", (request_id,)
        ).fetchone()
        return int(row[0]) if row else None

    def get(self, seq: int) -> JobRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        record = _record(row)
        if seq in self._finished:
            outcome, finished_s = self._finished[seq]
            record = replace(
                record, status=outcome.status, answer=outcome.answer, reason=outcome.reason,
                fingerprint=outcome.fingerprint, finished_s=finished_s,
            )  # fmt: skip
        return record

    def finish(self, seq: int, outcome: Outcome, now_s: float) -> None:
        self._finished[seq] = (outcome, now_s)
        self._counts[JobStatus.RUNNING] -= 1
        self._counts[outcome.status] += 1

    def _write_finished(self) -> None:
        if not self._finished:
            return
        self._db.executemany(
            "UPDATE jobs SET status = ?, answer = ?, reason = ?, fingerprint = ?, finished_s = ?"
            " WHERE seq = ?",
            [
                (str(o.status), o.answer, o.reason, o.fingerprint, finished_s, seq)
                for seq, (o, finished_s) in self._finished.items()
            ],
        )
        self._finished.clear()

    def add_attempt(self, seq: int) -> int:
        self._db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE seq = ?", (seq,))
        row = self._db.execute("SELECT attempts FROM jobs WHERE seq = ?", (seq,)).fetchone()
        return int(row[0])

    def page(self, after: int, limit: int) -> list[tuple[int, JobStatus]]:
        self._write_finished()
        rows = self._db.execute(
            "SELECT seq, status FROM jobs WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [(int(seq), JobStatus(status)) for seq, status in rows]

    def recent(self, limit: int, status: JobStatus | None = None) -> list[JobRecord]:
        """Up to `limit` of the last `RECENT_SCAN` jobs (of `status`), newest first, no answers."""
        self._write_finished()
        wanted = None if status is None else str(status)
        rows = self._db.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM jobs WHERE seq > ? AND (? IS NULL OR status = ?)"
            " ORDER BY seq DESC LIMIT ?",
            (self._last_seq - RECENT_SCAN, wanted, wanted, limit),
        )
        return [_record((*row[:5], None, *row[5:])) for row in rows]

    def unfinished(self) -> list[JobRecord]:
        self._write_finished()
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq", (JobStatus.RUNNING.value,)
        )
        return [_record(row) for row in rows]

    def count(self, status: JobStatus) -> int:
        return self._counts[status]

    def last_seq(self) -> int:
        return self._last_seq

    def expire(self, finished_before_s: float) -> int:
        self._write_finished()
        gone = self._db.execute(
            "SELECT status, COUNT(*) FROM jobs WHERE finished_s < ? GROUP BY status",
            (finished_before_s,),
        ).fetchall()
        self._db.execute("DELETE FROM jobs WHERE finished_s < ?", (finished_before_s,))
        for status, count in gone:
            self._counts[JobStatus(status)] -= count
        return sum(count for _, count in gone)

    def commit(self) -> None:
        self._write_finished()
        self._db.commit()
        self._new_jobs = False

    def has_new_jobs(self) -> bool:
        """Whether jobs were added since the last commit (their ids must wait for it)."""
        return self._new_jobs

    def close(self) -> None:
        self.commit()
        self._checkpointer.stop()
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._db.close()


def _checked_sync(mode: str) -> str:
    if mode.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ValueError(f"unknown SQLite synchronous mode {mode!r}")
    return mode.upper()


def _record(row: tuple[Any, ...]) -> JobRecord:
    seq, request_id, request, status, attempts, answer, reason, fingerprint, created, finished = row
    return JobRecord(
        seq=seq,
        request_id=request_id,
        request=bytes(request),
        status=JobStatus(status),
        attempts=attempts,
        answer=None if answer is None else bytes(answer),
        reason=reason,
        fingerprint=fingerprint,
        created_s=created,
        finished_s=finished,
    )
