"""The results store in PostgreSQL, shared by several brokers (`--store postgresql://...`).

`PgStore` keeps the `Store` interface (broker.store.interface), so the broker's logic
and the durability rule (docs/protocol.md, "Durability") are the same as on SQLite:
writes form one transaction until `commit()`, any database error (a lost connection
included) raises `StorageError`, and the broker rolls the turn back. A lost connection
is made again by itself, in the background (broker.store.pg_connection).

What sharing adds (docs/deployment.md, "Several brokers"): job numbers from a database
sequence; each broker's lease and epoch (broker.store.pg_lease); `finish` is a
conditional UPDATE on the broker's epoch, so a deposed broker's late answer is refused
(`deposed` turns True) and every job is recorded as finished once. Counts by status
are running totals in `job_counts` (broker.store.pg_schema): each commit adds this
broker's moves to its own rows, expiry takes its deletions off in the statement that
deletes; `count` reads the few rows' sums at most every `COUNTS_MAX_AGE_S`, since other
brokers write them too. Reads never scan: `get_many` reads a turn's jobs in one query,
`recent` looks among the newest `RECENT_SCAN` jobs, expiry deletes `EXPIRE_BATCH` jobs
a call (docs/deployment.md, "Growth"). Each commit that finished jobs NOTIFYs `lss_finished`
with their numbers, for waiters on other brokers (broker.cluster).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection
from typing import Any

import psycopg
from psycopg import pq

from broker.store.errors import StorageError, contained, reason, translated
from broker.store.interface import RECENT_SCAN, JobRecord, Outcome, stored_bytes
from broker.store.pending import PendingOutcomes, rows_of
from broker.store.pg_connection import Connection
from broker.store.pg_lease import FINISHED_CHANNEL, LeasedConnection
from broker.store.pg_schema import SchemaTooNew, count_slot, migrate
from broker.store.sql import (
    IS_RUNNING,
    JOB_COLUMNS,
    RUNNING,
    SUMMARY_COLUMNS,
    page_params,
    page_query,
    record_from_row,
)
from protocol.messages import JobStatus, job_id

log = logging.getLogger("lss.broker.store")

NOTIFY_SEQS = 300  # numbers per NOTIFY: 300 of up to 20 characters stay under 8000 bytes
COUNTS_MAX_AGE_S = 1.0  # other brokers' jobs show in counts at most this late
EXPIRE_BATCH = 1_000  # jobs an expiry deletes at most: ~10 ms (the broker calls again)
USAGE_CACHE_KEYS = 10_000  # keys whose stored bytes are remembered (then all forgotten)
# Every outcome of a turn in one statement, each only if the job is still running and
# this broker's (its epoch): the fence of docs/deployment.md, "Several brokers".
_FINISH = (
    "UPDATE jobs SET status = v.status, answer = v.answer, reason = v.reason,"
    " fingerprint = v.fingerprint, finished_s = v.finished_s"
    " FROM unnest(%s::bigint[], %s::text[], %s::bytea[], %s::text[], %s::text[],"
    " %s::float8[]) AS v(seq, status, answer, reason, fingerprint, finished_s)"
    " WHERE jobs.seq = v.seq AND jobs.status = %s AND jobs.broker_epoch = %s"
    " RETURNING jobs.seq"
)
# A new job, in a savepoint of its own (PgStore._insert_alone).
_ADD = (
    "SAVEPOINT request; INSERT INTO jobs (seq, request_id, request, status, created_s, owner,"
    " statistic, broker_id, broker_epoch)"
    " VALUES (nextval('job_seq'), %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (request_id) DO NOTHING RETURNING seq; RELEASE SAVEPOINT request"
)
# The running totals of stored bytes by key (every broker's writes add to the same rows;
# owners in order, so that two brokers' commits never wait on each other in a cycle).
_ADD_USAGE = (
    "INSERT INTO key_usage (owner, stored_bytes)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[]) ORDER BY 1"
    " ON CONFLICT (owner) DO UPDATE SET stored_bytes = key_usage.stored_bytes"
    " + excluded.stored_bytes"
)
_ROW_BYTES = (
    "octet_length(request) + coalesce(octet_length(answer), 0) + coalesce(octet_length(reason), 0)"
)
# This broker's moves between statuses, added to its own rows of the running counts.
_ADD_COUNTS = (
    "INSERT INTO job_counts (slot, status, n)"
    " SELECT %s, * FROM unnest(%s::text[], %s::bigint[]) ORDER BY 2"
    " ON CONFLICT (slot, status) DO UPDATE SET n = job_counts.n + excluded.n"
)
_COUNTS = "SELECT status, sum(n) FROM job_counts GROUP BY status"
# Expiry deletes at most a batch of the oldest finished jobs (rows another broker is
# deleting are skipped, not waited for), and in the same statement frees each deleted
# row's bytes from its key's total and takes it off the counts: a row another broker
# deleted first is not returned here, so it is freed and uncounted once.
# The batch is written in the statement, not a parameter: a plan PostgreSQL keeps for
# the prepared statement must know it is small (not knowing, it scanned 1 M jobs).
_EXPIRE = (
    "WITH gone AS (DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE finished_s < %s"
    " ORDER BY finished_s LIMIT {batch:d} FOR UPDATE SKIP LOCKED)"
    f" RETURNING status, owner, {_ROW_BYTES} AS size),"
    " freed AS (UPDATE key_usage SET stored_bytes = key_usage.stored_bytes - f.size"
    " FROM (SELECT owner, sum(size) AS size FROM gone GROUP BY owner ORDER BY owner) f"
    " WHERE key_usage.owner = f.owner),"
    " uncounted AS (INSERT INTO job_counts (slot, status, n)"
    " SELECT %s, status, -count(*) FROM gone GROUP BY status ORDER BY status"
    " ON CONFLICT (slot, status) DO UPDATE SET n = job_counts.n + excluded.n)"
    " SELECT status, count(*) FROM gone GROUP BY status"
)
_op = translated(psycopg.Error)


class PgStore(LeasedConnection):
    """A `Store` in a PostgreSQL database that several brokers share."""

    def __init__(self, url: str, broker_id: str, host: str = "") -> None:
        """Connect, create or migrate the schema (`SchemaTooNew` if it is newer), and
        register this broker. `StorageError` if the database cannot be reached."""
        super().__init__(url, broker_id, host)
        self._to_notify: list[int] = []
        self._pending = PendingOutcomes()  # written by one statement, at commit at the latest
        # Stored bytes by key: as last read (with when, monotonic), and what this
        # broker's open transaction adds (written by one statement at commit).
        self._usage: dict[str, tuple[int, float]] = {}
        self._usage_delta: Counter[str] = Counter()
        self._issued = 0
        # Jobs by status: as last read from job_counts (with this broker's writes since),
        # and this broker's moves in the open transaction (written at commit), by status.
        self._counted: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._counts_at = -COUNTS_MAX_AGE_S
        try:
            migrate(self._session.conn())
            self._session.reconnect_in_background()
        except psycopg.Error as exc:
            self._session.close()
            raise StorageError("migrate", reason(exc)) from exc
        except SchemaTooNew:
            self._session.close()
            raise

    # --- the Store interface ----------------------------------------------------------

    @_op
    def add(
        self, request_id: str, job_body: bytes, now_s: float, owner: str = "", statistic: str = ""
    ) -> tuple[int, bool]:
        """The job for `request_id`: a new one (True), or the one it already has (False),
        whichever broker took it (the request id is UNIQUE). A failed insert takes back
        only itself (a savepoint), if the transaction survives it."""
        row = self._insert_alone(
            (request_id, job_body, RUNNING, now_s, owner, statistic, self.broker_id, self.epoch)
        )
        if row is not None:
            self._issued = max(self._issued, int(row[0]))
            self._counts[JobStatus.RUNNING] += 1
            self._usage_delta[owner] += stored_bytes(job_body)
            return int(row[0]), True
        known = self.find_request(request_id)
        if known is None:
            raise StorageError("add", f"request id {request_id[:100]!r} vanished meanwhile")
        return known, False

    def _insert_alone(self, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Insert one job in a savepoint of its own: the seq, or None if the request id
        was taken. If it fails, only this insert is taken back (a contained
        `StorageError`); if even that fails (e.g. the connection is lost), the error goes
        up as it was, and the caller rolls back the turn. Savepoint, insert and release
        travel as one query, in one round trip as the insert alone did (binding on the
        client side is what lets one query carry three statements)."""
        db = self._session.begin()
        self._changed = True
        cursor = psycopg.ClientCursor(db)
        try:
            cursor.execute(_ADD, params)
            cursor.nextset()  # the first result is the SAVEPOINT's, the second the insert's
            return cursor.fetchone()
        except psycopg.Error as exc:
            self._back_to_savepoint(db, exc)
            raise contained("add", exc) from exc

    @staticmethod
    def _back_to_savepoint(db: Connection, exc: psycopg.Error) -> None:
        """Take back what the query that raised `exc` did, or raise `exc` if it cannot."""
        if db.info.transaction_status == pq.TransactionStatus.INTRANS:
            return  # refused before it was sent (e.g. a NUL in text): nothing happened
        try:
            db.execute("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request")
        except psycopg.Error:
            raise exc from None

    @_op
    def find_request(self, request_id: str) -> int | None:
        row = self._read("SELECT seq FROM jobs WHERE request_id = %s", (request_id,)).fetchone()
        return int(row[0]) if row else None

    @_op
    def get(self, seq: int) -> JobRecord | None:
        row = self._read(f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = %s", (seq,)).fetchone()
        if row is None:
            return None
        return self._pending.overlay(record_from_row(row))

    @_op
    def get_many(self, seqs: Collection[int]) -> dict[int, JobRecord]:
        """The jobs of `seqs` that exist, each as `get` reads it: one query however many."""
        if not seqs:
            return {}
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY(%s)", (list(seqs),))
        return {int(row[0]): self._pending.overlay(record_from_row(row)) for row in rows}

    def finish(self, seq: int, outcome: Outcome, now_s: float, owner: str = "") -> None:
        """Record how job `seq` ended, if this broker (epoch) still owns it: written with
        the others of the turn by one statement, at the latest at `commit`, which raises
        `StorageError` (and sets `deposed`) if another broker owns it."""
        self._pending.record(seq, outcome, now_s, owner)
        self._usage_delta[owner] += stored_bytes(b"", outcome.answer, outcome.reason)
        self._counts[JobStatus.RUNNING] -= 1
        self._counts[outcome.status] += 1
        self._changed = True

    def _write_finished(self) -> None:
        """Write the outcomes recorded since the last call: one conditional UPDATE."""
        if not self._pending:
            return
        pending = self._pending.take()
        columns = [list(column) for column in zip(*rows_of(pending), strict=True)]
        written = self._write(_FINISH, (*columns, RUNNING, self.epoch)).fetchall()
        done = {int(seq) for (seq,) in written}
        self._to_notify += done
        for seq in pending.keys() - done:
            outcome, _, owner = pending[seq]  # not written: its bytes are not stored
            self._usage_delta[owner] -= stored_bytes(b"", outcome.answer, outcome.reason)
            self._counts.subtract({RUNNING: -1, outcome.status: 1})  # nor is its move
            self._refused_finish(seq)

    def stored_bytes(self, owner: str) -> int:
        """The bytes the key `owner` stores, on every broker: read at most every
        COUNTS_MAX_AGE_S, plus this broker's own writes since (finishes recorded and
        not written yet included; one written by another broker first is taken back
        when its write is refused)."""
        now = time.monotonic()
        known, read_at = self._usage.get(owner, (0, -COUNTS_MAX_AGE_S))
        if now - read_at >= COUNTS_MAX_AGE_S:
            known = self._read_usage(owner, known)
            if len(self._usage) >= USAGE_CACHE_KEYS:
                self._usage.clear()
            self._usage[owner] = (known, now)
        return known + self._usage_delta[owner]

    def _read_usage(self, owner: str, last: int) -> int:
        try:
            row = self._read(
                "SELECT stored_bytes FROM key_usage WHERE owner = %s", (owner,)
            ).fetchone()
        except (psycopg.Error, StorageError) as exc:
            log.debug("stored bytes not refreshed: %s", exc)  # the last figure stands
            return last
        return int(row[0]) if row else 0

    def _write_usage(self) -> None:
        changed = sorted((owner, delta) for owner, delta in self._usage_delta.items() if delta)
        if changed:
            owners, deltas = [owner for owner, _ in changed], [delta for _, delta in changed]
            self._write(_ADD_USAGE, (owners, deltas))

    def _refused_finish(self, seq: int) -> None:
        row = self._read("SELECT status, broker_epoch FROM jobs WHERE seq = %s", (seq,)).fetchone()
        if row is not None and row[0] != RUNNING and row[1] == self.epoch:
            # Finished by this epoch already: a commit whose outcome the connection's loss
            # hid. The first record stands.
            log.info("%s was already recorded as finished", job_id(seq))
            return
        self.deposed = True
        owner = "nobody (it expired)" if row is None else f"broker epoch {row[1]}"
        raise StorageError(
            "finish", f"{job_id(seq)} belongs to {owner}, not to this broker's epoch"
            f" {self.epoch}: this broker was deposed",
        )  # fmt: skip

    @_op
    def add_attempt(self, seq: int) -> int:
        """One more lost worker for job `seq` (refused, unchanged, if another owns it)."""
        row = self._write(
            "UPDATE jobs SET attempts = attempts + 1 WHERE seq = %s AND broker_epoch = %s"
            " RETURNING attempts",
            (seq, self.epoch),
        ).fetchone()
        if row is None:
            row = self._read("SELECT attempts FROM jobs WHERE seq = %s", (seq,)).fetchone()
        return int(row[0]) if row else 0

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
        query = page_query(owner, status, statistic, mark="%s")
        rows = self._read(query, (*page_params(owner, status, statistic), after, limit))
        return [(int(seq), JobStatus(status)) for seq, status in rows]

    @_op
    def recent(
        self, limit: int, status: JobStatus | None = None, owner: str | None = None
    ) -> list[JobRecord]:
        """Up to `limit` of the last `RECENT_SCAN` jobs (of `status`, of `owner`), newest
        first, without their answers."""
        wanted = None if status is None else str(status)
        self._write_finished()
        rows = self._read(
            f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE seq > %s"
            " AND (%s::text IS NULL OR status = %s) AND (%s::text IS NULL OR owner = %s)"
            " ORDER BY seq DESC LIMIT %s",
            (self.last_seq() - RECENT_SCAN, wanted, wanted, owner, owner, limit),
        )
        return [record_from_row(row) for row in rows]

    @_op
    def unfinished(self) -> list[JobRecord]:
        """The unfinished jobs this broker (its current epoch) dispatches."""
        self._write_finished()
        rows = self._read(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {IS_RUNNING} AND broker_epoch = %s ORDER BY seq",
            (self.epoch,),
        )
        return [record_from_row(row) for row in rows]

    def count(self, status: str) -> int:
        """Jobs in the whole store by status (any status string): the running totals,
        read at most every COUNTS_MAX_AGE_S, plus this broker's own moves since
        (docs/deployment.md, "Several brokers"). Never scans the jobs."""
        if time.monotonic() - self._counts_at >= COUNTS_MAX_AGE_S:
            self._recount()
        return self._counted[status] + self._counts[status]

    def _recount(self) -> None:
        try:
            rows = self._read(_COUNTS).fetchall()
        except (psycopg.Error, StorageError) as exc:
            log.debug("counts not refreshed: %s", exc)  # the last counts stand meanwhile
            return
        self._counted = Counter({str(status): int(n) for status, n in rows})
        self._counts_at = time.monotonic()

    def _write_counts(self) -> None:
        """Add this transaction's moves between statuses to this broker's rows."""
        moved = sorted((status, n) for status, n in self._counts.items() if n)
        if moved:
            statuses, deltas = [status for status, _ in moved], [n for _, n in moved]
            self._write(_ADD_COUNTS, (count_slot(self.epoch), statuses, deltas))

    @_op
    def running_of(self, owner: str) -> int:
        """Unfinished jobs of the key `owner`, on every broker."""
        self._write_finished()
        row = self._read(
            f"SELECT count(*) FROM jobs WHERE owner = %s AND owner <> '' AND {IS_RUNNING}",
            (owner,),
        ).fetchone()
        return int(row[0]) if row else 0

    @_op
    def last_seq(self) -> int:
        """The highest job number handed out by any broker on the store."""
        row = self._read(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM job_seq"
        ).fetchone()
        self._issued = max(self._issued, int(row[0]) if row else 0)
        return self._issued

    @_op
    def expire(self, finished_before_s: float) -> int:
        """Delete up to EXPIRE_BATCH of the jobs finished before `finished_before_s`,
        oldest first; how many (the broker calls again while there are any)."""
        self._write_finished()
        params = (finished_before_s, count_slot(self.epoch))
        gone = self._write(_EXPIRE.format(batch=EXPIRE_BATCH), params).fetchall()
        self._usage.clear()  # the statement freed bytes in the table: read them again
        for status, count in gone:  # and took them off the counts
            self._counted[str(status)] -= int(count)
        return sum(int(count) for _, count in gone)

    @_op
    def commit(self) -> None:
        """Commit the open transaction, and tell other brokers which jobs it finished."""
        db = self._session.conn()
        if db.info.transaction_status == pq.TransactionStatus.INERROR:
            raise StorageError("commit", "the transaction had failed; it must be rolled back")
        self._write_finished()
        self._write_usage()
        self._write_counts()
        if not self._session.in_transaction():
            self._changed = False
            return
        for payload in notify_payloads(self._to_notify):
            db.execute("SELECT pg_notify(%s, %s)", (FINISHED_CHANNEL, payload))
        db.execute("COMMIT")
        self._to_notify = []
        self._changed = False
        self._counted.update(self._counts)
        self._counts.clear()
        for owner, delta in self._usage_delta.items():
            if owner in self._usage:
                known, read_at = self._usage[owner]
                self._usage[owner] = (known + delta, read_at)
        self._usage_delta.clear()

    def rollback(self) -> None:
        """Undo every write since the last commit (job numbers stay used)."""
        self._pending.clear()
        self._usage_delta.clear()
        self._usage.clear()  # figures read in the failed transaction may be gone
        self._counts.clear()
        self._to_notify = []
        self._changed = False
        self._counts_at = -COUNTS_MAX_AGE_S  # counted again at the next `count`
        db = self._session.live()
        if db is None:
            return  # the server ended the transaction with the connection
        try:
            if self._session.in_transaction():
                db.execute("ROLLBACK")
        except psycopg.Error as exc:
            raise StorageError("rollback", reason(exc)) from exc

    def has_changes(self) -> bool:
        return self._changed

    def close(self) -> None:
        """Commit, give up this broker's lease (others adopt what it leaves at once), close."""
        try:
            self.commit()
            self._session.conn().execute("DELETE FROM brokers WHERE epoch = %s", (self.epoch,))
        except (StorageError, psycopg.Error) as exc:
            log.error("could not commit at close; uncommitted writes are lost: %s", exc)
        self._session.close()


def notify_payloads(seqs: list[int]) -> list[str]:
    """Job numbers as comma-separated NOTIFY payloads, each under PostgreSQL's limit."""
    payloads: list[str] = []
    for start in range(0, len(seqs), NOTIFY_SEQS):
        payloads.append(",".join(map(str, seqs[start : start + NOTIFY_SEQS])))
    return payloads
