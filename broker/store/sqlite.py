"""`SqliteStore`: the results store in one SQLite file (WAL), durable, for one broker.

Writes form one transaction until `commit()`; a failed write or commit raises
`StorageError`, after which the caller calls `rollback()`. What the broker commits
before it sends what is the durability rule in docs/protocol.md ("Durability"). Job
numbers are issued by the store and never reused: not after results expire, a
rollback, a restart or a power loss (broker.store.numbering). Counts by status and
each key's stored bytes are kept up to date in memory: `count` never scans (the counts
are read with one GROUP BY at start and again after a rollback).
Outcomes are written at commit, one statement for all (broker.store.pending).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Collection
from pathlib import Path

from broker.store import numbering
from broker.store.checkpoint import WAL_LIMIT_BYTES, Checkpointer, bound_wal
from broker.store.errors import StorageError, contained, translated
from broker.store.interface import (
    RECENT_SCAN,
    InProcessStore,
    JobRecord,
    Outcome,
    cancel_if_running,
    stored_bytes,
)
from broker.store.numbering import SEQ_BLOCK
from broker.store.pending import PendingOutcomes, rows_of
from broker.store.sql import (
    JOB_COLUMNS,
    RUNNING,
    SUMMARY_COLUMNS,
    page_params,
    page_query,
    record_from_row,
)
from broker.store.sqlite_schema import ROW_BYTES, prepare
from protocol import config
from protocol.messages import JobStatus

log = logging.getLogger("lss.broker.store")

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
SYNCED_COMMITS = ("FULL", "EXTRA")  # every commit is on disk when it returns
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
# Parameters as `pending.rows_of` gives them: seq first.
_FINISH = (
    "UPDATE jobs SET status = ?2, answer = ?3, reason = ?4, fingerprint = ?5, finished_s = ?6"
    " WHERE seq = ?1"
)
_op = translated(sqlite3.Error, OSError)


class SqliteStore(InProcessStore):
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
        prepare(self._db)
        self._checkpointer = Checkpointer(path, wal_limit_bytes=wal_limit_bytes)
        self._wal_limit_bytes = wal_limit_bytes
        self._checkpointer.start()
        self._counts = self._read_counts()
        # Stored bytes by owner as committed, and what the open transaction adds to them
        # (written by one statement at commit).
        self._usage: Counter[str] = self._read_usage()
        self._usage_delta: Counter[str] = Counter()
        # The highest number handed out, and the highest one reserved on disk: numbering
        # goes on above both, whatever fails (broker.store.numbering).
        self._boot = numbering.current_boot() if boot is None else boot
        self._issued = self._reserved = numbering.highest_told(self._db, self._boot)
        self._pending = PendingOutcomes()  # written by one executemany, at commit at the latest
        self._changed = False
        self._wal_path = f"{self._path}-wal"

    def _read_counts(self) -> Counter[JobStatus]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return Counter({JobStatus(status): count for status, count in rows})

    def _read_usage(self) -> Counter[str]:
        rows = self._db.execute("SELECT owner, stored_bytes FROM key_usage")
        return Counter({owner: int(size) for owner, size in rows})

    @_op
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
                (seq, request_id, job_body, RUNNING, now_s, owner, statistic),
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
            raise contained("add", exc) from exc

    @_op
    def find_request(self, request_id: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM jobs WHERE request_id = ?", (request_id,)
        ).fetchone()
        return int(row[0]) if row else None

    @_op
    def get(self, seq: int) -> JobRecord | None:
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        return self._pending.overlay(record_from_row(row))

    def get_many(self, seqs: Collection[int]) -> dict[int, JobRecord]:
        """The jobs of `seqs` that exist (a local file: one lookup each costs microseconds)."""
        return {seq: record for seq in seqs if (record := self.get(seq)) is not None}

    def finish(self, seq: int, outcome: Outcome, now_s: float, owner: str = "") -> None:
        self._pending.record(seq, outcome, now_s, owner)
        self._counts[JobStatus.RUNNING] -= 1
        self._counts[outcome.status] += 1
        self._usage_delta[owner] += stored_bytes(b"", outcome.answer, outcome.reason)
        self._changed = True

    def cancel(self, seq: int, reason: str, now_s: float) -> bool:
        return cancel_if_running(self, seq, reason, now_s)

    def stored_bytes(self, owner: str) -> int:
        return self._usage[owner] + self._usage_delta[owner]

    def _write_usage(self) -> None:
        changed = [(owner, delta) for owner, delta in self._usage_delta.items() if delta]
        if changed:
            self._db.executemany(_ADD_USAGE, changed)

    def _write_finished(self) -> None:
        """Write the pending outcomes into the open transaction: one executemany."""
        if self._pending:
            self._db.executemany(_FINISH, rows_of(self._pending.take()))

    @_op
    def add_attempt(self, seq: int) -> int:
        self._changed = True
        self._db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE seq = ?", (seq,))
        row = self._db.execute("SELECT attempts FROM jobs WHERE seq = ?", (seq,)).fetchone()
        return int(row[0])

    @_op
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
        self._write_finished()
        query = page_query(owner, status, statistic)
        rows = self._db.execute(query, (*page_params(owner, status, statistic), after, limit))
        return [(int(seq), JobStatus(status)) for seq, status in rows]

    @_op
    def recent(
        self, limit: int, status: JobStatus | None = None, owner: str | None = None
    ) -> list[JobRecord]:
        """Up to `limit` of the last `RECENT_SCAN` jobs (of `status`, of `owner`), newest
        first, without their answers."""
        self._write_finished()
        wanted = None if status is None else str(status)
        rows = self._db.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE seq > ? AND (? IS NULL OR status = ?)"
            " AND (? IS NULL OR owner = ?) ORDER BY seq DESC LIMIT ?",
            (self._issued - RECENT_SCAN, wanted, wanted, owner, owner, limit),
        )
        return [record_from_row(row) for row in rows]

    @_op
    def unfinished(self) -> list[JobRecord]:
        self._write_finished()
        rows = self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq", (RUNNING,)
        )
        return [record_from_row(row) for row in rows]

    def count(self, status: JobStatus) -> int:
        return self._counts[status]

    def last_seq(self) -> int:
        return self._issued

    @_op
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
            f"SELECT owner, sum({ROW_BYTES}) FROM jobs WHERE finished_s < ? GROUP BY owner",
            (finished_before_s,),
        ).fetchall()
        for owner, size in freed:
            self._usage_delta[owner] -= int(size)
        self._db.execute("DELETE FROM jobs WHERE finished_s < ?", (finished_before_s,))
        for status, count in gone:
            self._counts[JobStatus(status)] -= count
        return sum(count for _, count in gone)

    @_op
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
                numbering.sync(self._wal_path)  # on disk before a number is told
                self._reserved = self._issued + SEQ_BLOCK
            bound_wal(self._db, self._wal_path, self._wal_limit_bytes)
        except (OSError, sqlite3.Error) as exc:  # the next commit tries again
            log.error("after a commit: %s", exc)

    @_op
    def _give_back_reserved(self) -> None:
        """After a clean stop, numbering resumes right after the last number issued."""
        numbering.reserve(self._db, self._issued, self._boot)
        self._db.commit()
        self._reserved = self._issued

    @_op
    def rollback(self) -> None:
        """Undo every write since the last commit; numbers handed out stay used."""
        self._pending.clear()
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


def checked_sync(mode: str) -> str:
    """`mode` as SQLite's `PRAGMA synchronous` spells it; ValueError if it is none."""
    if mode.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"unknown SQLite synchronous mode {mode!r}")
    return mode.upper()
