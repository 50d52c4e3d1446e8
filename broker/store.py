"""The results store: every job's body, status and answer, keyed by job number.

Implementations share one interface (`Store`): `SqliteStore`, durable (WAL mode),
`MemoryStore` for unit tests, and `PgStore` (broker.pgstore), which brokers may
share. Writes form one transaction until `commit()`; a failed write or commit raises
`StorageError`, after which the caller calls `rollback()`. What the broker commits
before it sends what is the durability rule in docs/protocol.md ("Durability"). Job
numbers are issued by the store and never reused: not after results expire, a
rollback, a restart or a power loss. Counts by status are kept up to date in memory so
that counting never scans.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from broker import numbering
from broker.checkpoint import WAL_LIMIT_BYTES, Checkpointer
from broker.numbering import SEQ_BLOCK
from protocol import config
from protocol.errors import ProtocolError
from protocol.messages import Job, JobStatus, decode_body

log = logging.getLogger("lss.broker.store")

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
SYNCED_COMMITS = ("FULL", "EXTRA")  # every commit is on disk when it returns


class StorageError(Exception):
    """The store could not read or write; the open transaction must be rolled back.

    `operation` names the store method that failed (`add`, `commit`...). `contained`:
    the failure took back only that call's own writes, and the transaction goes on
    (one request's bad data fails that request, never the turn of every other peer).
    """

    def __init__(self, operation: str, reason: str, *, contained: bool = False) -> None:
        super().__init__(f"{operation}: {reason}")
        self.operation = operation
        self.contained = contained


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


def stored_bytes(job_body: bytes, answer: bytes | None = None, reason: str | None = None) -> int:
    """A job's bytes as a key's quota counts them: its body, its answer and its reason."""
    return len(job_body) + len(answer or b"") + len((reason or "").encode("utf-8", "replace"))


class Store(Protocol):
    """What the broker needs of a results store.

    `add`'s `statistic` is the one its job body names, kept apart so that jobs can be
    listed by it (`page`).

    Writes become durable at `commit()`; `rollback()` undoes every write since the last
    commit, except that job numbers handed out stay used. Any method may raise
    `StorageError`; a failed `add` takes back only its own write if it can (then the
    error is `contained`). `stored_bytes(owner)` is what a key's jobs take in the store
    (`JobRecord.stored_bytes`, summed), kept as a running total on every write and
    expiry, never counted by a scan.
    """

    def add(
        self, request_id: str, job_body: bytes, now_s: float, owner: str = "", statistic: str = ""
    ) -> tuple[int, bool]: ...
    def find_request(self, request_id: str) -> int | None: ...
    def get(self, seq: int) -> JobRecord | None: ...
    def finish(self, seq: int, outcome: Outcome, now_s: float, owner: str = "") -> None: ...
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
    def close(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How a job ended: DONE with an msgpack answer, or ERROR with a reason."""

    status: JobStatus
    answer: bytes | None = None
    reason: str | None = None
    fingerprint: str | None = None


class MemoryStore:
    """A `Store` in a dict: fast, forgets everything at exit. For tests.

    Rollback is real (an undo log), so that the broker's tests can run on either store.
    """

    def __init__(self) -> None:
        self._jobs: dict[int, JobRecord] = {}
        self._by_request: dict[str, int] = {}
        self._counts: Counter[JobStatus] = Counter()
        self._usage: Counter[str] = Counter()  # stored bytes by owner
        self._last_seq = 0
        self._undo: list[Callable[[], object]] = []

    def add(
        self, request_id: str, job_body: bytes, now_s: float, owner: str = "", statistic: str = ""
    ) -> tuple[int, bool]:
        """The job for `request_id`: a new one (True), or the one it already has (False)."""
        known = self._by_request.get(request_id)
        if known is not None:
            return known, False
        self._last_seq += 1
        seq = self._last_seq
        self._put(
            seq,
            JobRecord(seq, request_id, job_body, JobStatus.RUNNING, created_s=now_s, owner=owner),
        )
        self._by_request[request_id] = seq
        self._undo.append(lambda: self._by_request.pop(request_id, None))
        return seq, True

    def _put(self, seq: int, record: JobRecord | None) -> None:
        """Set (or with None delete) job `seq`, keeping counts and the undo log."""
        old = self._jobs.pop(seq, None)
        if old is not None:
            self._counts[old.status] -= 1
            self._usage[old.owner] -= old.stored_bytes
        if record is not None:
            self._jobs[seq] = record
            self._counts[record.status] += 1
            self._usage[record.owner] += record.stored_bytes
        self._undo.append(lambda: self._put(seq, old))

    def find_request(self, request_id: str) -> int | None:
        return self._by_request.get(request_id)

    def get(self, seq: int) -> JobRecord | None:
        return self._jobs.get(seq)

    def finish(self, seq: int, outcome: Outcome, now_s: float, owner: str = "") -> None:
        self._put(seq, with_outcome(self._jobs[seq], outcome, now_s))

    def stored_bytes(self, owner: str) -> int:
        return self._usage[owner]

    def add_attempt(self, seq: int) -> int:
        record = self._jobs[seq]
        self._put(seq, replace(record, attempts=record.attempts + 1))
        return record.attempts + 1

    def page(
        self,
        after: int,
        limit: int,
        owner: str | None = None,
        *,
        status: str | None = None,
        statistic: str | None = None,
    ) -> list[tuple[int, JobStatus]]:
        """Up to `limit` jobs numbered above `after` (only `owner`'s, in `status`, of
        `statistic`: those given)."""
        wanted = (
            seq
            for seq, r in self._jobs.items()
            if seq > after
            and (owner is None or r.owner == owner)
            and (status is None or r.status == status)
            and (statistic is None or job_statistic(r.job_body) == statistic)
        )
        return [(seq, self._jobs[seq].status) for seq in sorted(wanted)[:limit]]

    def recent(
        self, limit: int, status: JobStatus | None = None, owner: str | None = None
    ) -> list[JobRecord]:
        """Up to `limit` of the last `RECENT_SCAN` jobs (of `status`, of `owner`), newest
        first, without their answers."""
        newest = sorted((s for s in self._jobs if s > self._last_seq - RECENT_SCAN), reverse=True)
        found = [
            record
            for record in map(self._jobs.__getitem__, newest)
            if (status is None or record.status is status)
            and (owner is None or record.owner == owner)
        ]
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
            self._put(record.seq, None)
            self._by_request.pop(record.request_id, None)
            self._undo.append(
                functools.partial(self._by_request.setdefault, record.request_id, record.seq)
            )
        return len(old)

    def commit(self) -> None:
        """Nothing to make durable: forget the undo log."""
        self._undo = []

    def rollback(self) -> None:
        """Undo every write since the last commit; numbers handed out stay used."""
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            step()
        self._undo = []  # what the steps themselves logged

    def has_changes(self) -> bool:
        return bool(self._undo)

    def close(self) -> None:
        """Nothing to release."""


def with_outcome(record: JobRecord, outcome: Outcome, now_s: float) -> JobRecord:
    return replace(
        record, status=outcome.status, answer=outcome.answer, reason=outcome.reason,
        fingerprint=outcome.fingerprint, finished_s=now_s,
    )  # fmt: skip


_SCHEMA = (
    """
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
    finished_s REAL,
    owner TEXT NOT NULL DEFAULT '',
    statistic TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_s) WHERE finished_s IS NOT NULL;
CREATE TABLE IF NOT EXISTS key_usage (
    owner TEXT PRIMARY KEY,
    stored_bytes INTEGER NOT NULL
);
"""
    + numbering.SCHEMA
)
# Jobs by owner, for a client key's listing; partial, so that without CURVE (owner '')
# inserts pay nothing for it. Queries must say `owner != ''` to use it.
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq) WHERE owner != ''"
# Listing by status or statistic walks one of these in job order (`page_query`).
_LIST_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_statistic ON jobs (statistic, seq)",
)
_RUNNING = str(JobStatus.RUNNING)  # a plain str: cheaper than `.value` per insert
JOB_COLUMNS = (
    "seq, request_id, request, status, attempts, answer, reason, fingerprint, created_s,"
    " finished_s, owner"
)
_SUMMARY_COLUMNS = JOB_COLUMNS.replace("answer, ", "")
# A row's bytes as `stored_bytes` counts them, in SQL (reason: its UTF-8 bytes).
_ROW_BYTES = "length(request) + ifnull(length(answer), 0) + ifnull(length(CAST(reason AS BLOB)), 0)"
# Errors after which SQLite has undone the failed statement alone and the transaction
# is sound (a row it refused); after others (a full disk, I/O, a busy or corrupt
# database) the whole transaction is rolled back, as SQLite's documentation advises.
_STATEMENT_ERRORS = frozenset({
    sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH,
    sqlite3.SQLITE_RANGE, sqlite3.SQLITE_ERROR,
})  # fmt: skip
_ADD_USAGE = (
    "INSERT INTO key_usage (owner, stored_bytes) VALUES (?, ?) ON CONFLICT (owner)"
    " DO UPDATE SET stored_bytes = stored_bytes + excluded.stored_bytes"
)


P = ParamSpec("P")
R = TypeVar("R")


def _storage_op(method: Callable[P, R]) -> Callable[P, R]:
    """Turn any SQLite or file error of `method` into a `StorageError`."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(method.__name__, str(exc)) from exc

    return translated


class SqliteStore:
    """A durable `Store` in one SQLite file (WAL). Call `commit()` once per batch."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = config.SQLITE_SYNCHRONOUS,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
        boot: str | None = None,
    ) -> None:
        """`boot` names this boot of the machine (default: the kernel's boot id)."""
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level="DEFERRED", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._synced = checked_sync(synchronous) in SYNCED_COMMITS
        self._db.execute(f"PRAGMA synchronous={checked_sync(synchronous)}")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer thread does it
        self._db.execute(f"PRAGMA journal_size_limit={wal_limit_bytes}")
        new_usage_table = not _has_table(self._db, "key_usage")
        self._db.executescript(_SCHEMA)
        _add_owner_column(self._db)
        _add_statistic_column(self._db)
        if new_usage_table:
            _count_usage(self._db)
        self._checkpointer = Checkpointer(path, wal_limit_bytes=wal_limit_bytes)
        self._wal_limit_bytes = wal_limit_bytes
        self._checkpointer.start()
        self._counts = self._read_counts()
        # Stored bytes by owner as committed, and what the open transaction adds to them
        # (written by one statement at commit).
        self._usage: Counter[str] = self._read_usage()
        self._usage_delta: Counter[str] = Counter()
        # The highest number handed out, and the highest one reserved on disk: numbering
        # goes on above both, whatever fails (broker.numbering).
        self._boot = numbering.current_boot() if boot is None else boot
        self._issued = self._reserved = numbering.highest_told(self._db, self._boot)
        # Outcomes recorded since the last commit, written by one executemany at commit:
        # one statement per job cost more than the rest of the broker's work on it.
        self._finished: dict[int, tuple[Outcome, float]] = {}
        self._changed = False
        self._wal_path = f"{self._path}-wal"

    def _read_counts(self) -> Counter[JobStatus]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return Counter({JobStatus(status): count for status, count in rows})

    def _read_usage(self) -> Counter[str]:
        rows = self._db.execute("SELECT owner, stored_bytes FROM key_usage")
        return Counter({owner: int(size) for owner, size in rows})

    @_storage_op
    def add(
        self, request_id: str, job_body: bytes, now_s: float, owner: str = "", statistic: str = ""
    ) -> tuple[int, bool]:
        """The job for `request_id`: a new one (True), or the one it already has (False).

        New requests are the common case, so this inserts first and looks up only
        when the request id is already taken. The number is chosen here, not by
        AUTOINCREMENT, whose counter a rollback would rewind. A failed insert takes
        back only itself, if the transaction survives it (`_alone`).
        """
        seq = self._issued + 1
        try:
            self._db.execute(
                "INSERT INTO jobs (seq, request_id, request, status, created_s, owner, statistic)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, request_id, job_body, _RUNNING, now_s, owner, statistic),
            )
        except sqlite3.IntegrityError as exc:
            known = self.find_request(request_id)
            if known is None:
                self._raise_if_alone(exc)
                raise
            return known, False
        except sqlite3.Error as exc:
            self._raise_if_alone(exc)
            raise
        self._issued = seq
        self._counts[JobStatus.RUNNING] += 1
        self._usage_delta[owner] += stored_bytes(job_body)
        self._changed = True
        return seq, True

    def _raise_if_alone(self, exc: sqlite3.Error) -> None:
        """Raise a contained `StorageError` for `exc` if SQLite took back the failed
        statement alone and the transaction goes on (its statement journal is a
        savepoint per statement, at no cost here: a SAVEPOINT and a RELEASE per submit
        doubled its cost); else return, and the caller raises `exc` (the turn is
        rolled back)."""
        code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_ERROR) & 0xFF
        if self._db.in_transaction and code in _STATEMENT_ERRORS:
            self._changed = True  # the transaction is open: the turn's commit ends it
            raise StorageError("add", str(exc), contained=True) from exc

    @_storage_op
    def find_request(self, request_id: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM jobs WHERE request_id = ?", (request_id,)
        ).fetchone()
        return int(row[0]) if row else None

    @_storage_op
    def get(self, seq: int) -> JobRecord | None:
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        record = record_from_row(row)
        if seq in self._finished:
            outcome, finished_s = self._finished[seq]
            record = with_outcome(record, outcome, finished_s)
        return record

    def finish(self, seq: int, outcome: Outcome, now_s: float, owner: str = "") -> None:
        self._finished[seq] = (outcome, now_s)
        self._counts[JobStatus.RUNNING] -= 1
        self._counts[outcome.status] += 1
        self._usage_delta[owner] += stored_bytes(b"", outcome.answer, outcome.reason)
        self._changed = True

    def stored_bytes(self, owner: str) -> int:
        return self._usage[owner] + self._usage_delta[owner]

    def _write_usage(self) -> None:
        changed = [(owner, delta) for owner, delta in self._usage_delta.items() if delta]
        if changed:
            self._db.executemany(_ADD_USAGE, changed)

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

    @_storage_op
    def add_attempt(self, seq: int) -> int:
        self._changed = True
        self._db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE seq = ?", (seq,))
        row = self._db.execute("SELECT attempts FROM jobs WHERE seq = ?", (seq,)).fetchone()
        return int(row[0])

    @_storage_op
    def page(
        self,
        after: int,
        limit: int,
        owner: str | None = None,
        *,
        status: str | None = None,
        statistic: str | None = None,
    ) -> list[tuple[int, JobStatus]]:
        """Up to `limit` jobs numbered above `after` (only `owner`'s, in `status`, of
        `statistic`: those given)."""
        if status is not None:
            self._write_finished()  # into the open transaction: a rollback takes it back
        query = page_query(owner, status, statistic)
        rows = self._db.execute(query, (*page_params(owner, status, statistic), after, limit))
        finished = self._finished
        return [
            (int(seq), finished[seq][0].status if seq in finished else JobStatus(status))
            for seq, status in rows
        ]

    @_storage_op
    def recent(
        self, limit: int, status: JobStatus | None = None, owner: str | None = None
    ) -> list[JobRecord]:
        """Up to `limit` of the last `RECENT_SCAN` jobs (of `status`, of `owner`), newest
        first, without their answers."""
        self._write_finished()  # into the open transaction: a rollback takes it back
        wanted = None if status is None else str(status)
        rows = self._db.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM jobs WHERE seq > ? AND (? IS NULL OR status = ?)"
            " AND (? IS NULL OR owner = ?) ORDER BY seq DESC LIMIT ?",
            (self._issued - RECENT_SCAN, wanted, wanted, owner, owner, limit),
        )
        return [record_from_row((*row[:5], None, *row[5:])) for row in rows]

    @_storage_op
    def unfinished(self) -> list[JobRecord]:
        rows = self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq",
            (JobStatus.RUNNING.value,),
        )
        return [record_from_row(row) for row in rows if row[0] not in self._finished]

    def count(self, status: JobStatus) -> int:
        return self._counts[status]

    def last_seq(self) -> int:
        return self._issued

    @_storage_op
    def expire(self, finished_before_s: float) -> int:
        self._write_finished()
        gone = self._db.execute(
            "SELECT status, COUNT(*) FROM jobs WHERE finished_s < ? GROUP BY status",
            (finished_before_s,),
        ).fetchall()
        if not gone:
            return 0
        self._changed = True
        freed = self._db.execute(
            f"SELECT owner, sum({_ROW_BYTES}) FROM jobs WHERE finished_s < ? GROUP BY owner",
            (finished_before_s,),
        ).fetchall()
        for owner, size in freed:
            self._usage_delta[owner] -= int(size)
        self._db.execute("DELETE FROM jobs WHERE finished_s < ?", (finished_before_s,))
        for status, count in gone:
            self._counts[JobStatus(status)] -= count
        return sum(count for _, count in gone)

    @_storage_op
    def commit(self) -> None:
        """Make every write since the last commit durable (per `synchronous`)."""
        self._write_finished()
        self._write_usage()
        reserve = self._issued > self._reserved and not self._synced
        if reserve:
            numbering.reserve(self._db, self._issued + SEQ_BLOCK, self._boot)
        self._db.commit()
        self._changed = False
        self._usage.update(self._usage_delta)
        self._usage_delta.clear()
        self._after_commit(reserve)

    def _after_commit(self, reserved: bool) -> None:
        """Sync a new reservation, bound the WAL. Never raises: the commit is done."""
        try:
            if reserved:
                _fsync(self._wal_path)  # the reservation is on disk before a number is told
                self._reserved = self._issued + SEQ_BLOCK
            if os.stat(self._wal_path).st_size > self._wal_limit_bytes:
                self._restart_wal()
        except (OSError, sqlite3.Error) as exc:  # the next commit tries again
            log.error("after a commit: %s", exc)

    def _restart_wal(self) -> None:
        """Copy the rest of the WAL into the database so that the next commit rewinds it.

        Under constant commits the checkpointer thread's PASSIVE checkpoints never catch
        up with the writer, so the writer finishes the copy itself (see broker.checkpoint).
        """
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        if busy:
            log.warning("the WAL could not be restarted (a reader is busy); it may grow")

    @_storage_op
    def _give_back_reserved(self) -> None:
        """After a clean stop, numbering resumes right after the last number issued."""
        numbering.reserve(self._db, self._issued, self._boot)
        self._db.commit()
        self._reserved = self._issued

    @_storage_op
    def rollback(self) -> None:
        """Undo every write since the last commit; numbers handed out stay used."""
        self._finished.clear()
        self._usage_delta.clear()
        self._changed = False
        self._db.rollback()
        self._counts = self._read_counts()

    def has_changes(self) -> bool:
        """Whether anything was written since the last commit."""
        return self._changed

    def close(self) -> None:
        """Commit, give back the unused reserved numbers, checkpoint, close."""
        try:
            self.commit()
            if self._reserved > self._issued:
                self._give_back_reserved()
        except StorageError as exc:
            log.error("could not commit at close; uncommitted writes are lost: %s", exc)
        self._checkpointer.stop()
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("final WAL checkpoint failed: %s", exc)
        self._db.close()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checked_sync(mode: str) -> str:
    """`mode` as SQLite's `PRAGMA synchronous` spells it; ValueError if it is none."""
    if mode.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"unknown SQLite synchronous mode {mode!r}")
    return mode.upper()


def job_statistic(job_body: bytes) -> str:
    """The statistic a stored job body (a `Job` the broker made) names; "" for a body
    that does not read as one (no listing by statistic finds that job)."""
    try:
        return decode_body(Job, job_body).statistic
    except ProtocolError:
        return ""


def page_query(
    owner: str | None, status: str | None, statistic: str | None, mark: str = "?"
) -> str:
    """The SELECT of a page of (seq, status): the conditions given, then `seq > after`,
    in job order, `LIMIT`; each condition an equality that an index leads with (the
    owner's, or `_LIST_INDEXES`), so a page reads about as many rows as it returns.
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


def _add_statistic_column(db: sqlite3.Connection) -> None:
    """Give a store made before jobs were listed by statistic its `statistic` column,
    filled from each job's body, and the listing indexes."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    if "statistic" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN statistic TEXT NOT NULL DEFAULT ''")
        fill_statistics(db, "?")
    for statement in _LIST_INDEXES:
        db.execute(statement)
    db.commit()


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


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _count_usage(db: sqlite3.Connection) -> None:
    """Fill a new `key_usage` table from the jobs already stored (once, at the first
    start of a store made before quotas existed)."""
    db.execute(
        f"INSERT INTO key_usage (owner, stored_bytes) SELECT owner, sum({_ROW_BYTES})"
        " FROM jobs GROUP BY owner"
    )
    db.commit()


def _add_owner_column(db: sqlite3.Connection) -> None:
    """Give a store made before job owners existed its `owner` column (jobs: no owner)."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    if "owner" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    db.execute(_OWNER_INDEX)
    db.commit()


def record_from_row(row: tuple[Any, ...]) -> JobRecord:
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
