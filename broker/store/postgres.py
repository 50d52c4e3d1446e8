"""The results store in PostgreSQL, shared by several brokers (`--store postgresql://...`).

`PgStore` keeps the `Store` interface (broker.store.interface), so the broker's logic
and the durability rule (docs/protocol.md, "Durability") are the same as on SQLite:
writes form one transaction until `commit()`, any database error (a lost connection
included) raises `StorageError`, and the broker rolls the turn back. A lost connection
is made again by itself, in the background (broker.store.pg_connection).

What sharing adds (docs/deployment.md, "Several brokers"): job numbers from a database
sequence, reserved a block at a time (broker.store.numbering.NumberBlocks); each
broker's lease and epoch (broker.store.pg_lease); `finish` is a conditional UPDATE on
the broker's epoch, so a deposed broker's late answer is refused (`deposed` turns True)
and every job is recorded as finished once. Counts by status are running totals in
`job_counts` (broker.store.pg_schema): each commit adds this broker's moves to its own
rows, expiry takes its deletions off in the statement that deletes; `count` reads the
few rows' sums at most every `COUNTS_MAX_AGE_S`, since other brokers write them too.
Reads never scan: `get_many` reads a turn's jobs in one query, `recent` looks among
the newest `RECENT_SCAN` jobs, expiry deletes `EXPIRE_BATCH` jobs a call
(docs/deployment.md, "Growth"). Each commit that finished jobs NOTIFYs `lss_finished`
with their numbers, for waiters on other brokers (broker.cluster).

A turn's writes take one round trip however many jobs it holds: `add` hands out a
reserved number at once and keeps the job in memory; `commit` sends, in one pipeline,
one statement (`_WRITE`) that inserts the turn's jobs, records its outcomes, adds their
bytes to the keys' totals and NOTIFYs the jobs finished (the statement is the
transaction when the turn wrote nothing else; otherwise the COMMIT follows it) and, now
and then, a query for the next block of numbers. A request id this broker knows is
answered from memory; one another broker (or an earlier turn) took is found by the
insert (`ON CONFLICT DO NOTHING`): that job is not stored, and `superseded()` names
the job the request id has, for the broker to answer with it. A row the batch cannot
take is found by writing the rows one by one, each in a savepoint: only its own submit
fails (`superseded()` says why).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Collection
from typing import Any, NamedTuple

import psycopg
from psycopg import pq

from broker.store.errors import StorageError, reason, translated
from broker.store.interface import RECENT_SCAN, JobRecord, Outcome, stored_bytes
from broker.store.numbering import NumberBlocks
from broker.store.pending import Finish, PendingOutcomes
from broker.store.pg_connection import Connection, Cursor
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

COUNTS_MAX_AGE_S = 1.0  # other brokers' jobs show in counts at most this late
EXPIRE_BATCH = 1_000  # jobs an expiry deletes at most: ~10 ms (the broker calls again)
USAGE_CACHE_KEYS = 10_000  # keys whose stored bytes are remembered (then all forgotten)
NOTIFY_SEQS = 300  # numbers per NOTIFY: 300 of up to 20 characters stay under 8000 bytes
SEQ_BLOCK = 1000  # job numbers a broker reserves at a time, at least (its gap if it stops)
SEQ_BLOCK_MAX = 50_000  # ... and at most (the loop reads 50,000 messages a socket a turn)
KNOWN_REQUESTS = 100_000  # request ids of unfinished jobs remembered (then all forgotten)
ROUND_TRIPS_WINDOW_S = 10.0  # round trips per job are reported over this long
_RESERVE = "SELECT nextval('job_seq') FROM generate_series(1, %s)"
# A turn's writes in one statement: its new jobs (each only if its request id is new:
# rows in request id order, so that two brokers inserting the same ids never wait on
# each other in a cycle), its outcomes (each only if the job is still running and this
# broker's: the fence of docs/deployment.md, "Several brokers"), and the bytes of what
# was written, added to the keys' totals (owners in order, likewise; every broker's
# writes add to the same rows). An outcome refused to a job this epoch had not already
# finished (a deposed broker) fails the statement with `DEPOSED` and the numbers. The
# jobs it finishes are NOTIFYd (`NOTIFY_SEQS` numbers a payload, made here: a finish
# it refuses is one already recorded, whose NOTIFY a reader only reads again), at its
# commit. It names the jobs it did not insert, and the outcomes it did not record, only
# when there are any (NULL: all were written).
# Its parameters travel in binary (`%b`): psycopg's text form of the arrays escaped
# every string and byte string in Python, which cost more than the rest of the store's
# work on a job; and it is prepared once per connection (`prepare=True`), not parsed
# and planned again every turn.
DEPOSED = "lss-deposed"
_WRITE = (
    "WITH new AS (SELECT * FROM unnest(%(seq)b::bigint[], %(request_id)b::text[],"
    " %(request)b::bytea[], %(status)b::text[], %(answer)b::bytea[], %(reason)b::text[],"
    " %(fingerprint)b::text[], %(created_s)b::float8[], %(finished_s)b::float8[],"
    " %(owner)b::text[], %(statistic)b::text[]) AS n(seq, request_id, request, status,"
    " answer, reason, fingerprint, created_s, finished_s, owner, statistic)),"
    " ins AS (INSERT INTO jobs (seq, request_id, request, status, answer, reason,"
    " fingerprint, created_s, finished_s, owner, statistic, broker_id, broker_epoch)"
    f" SELECT seq, request_id, request, coalesce(status, '{RUNNING}'), answer, reason,"
    " fingerprint, created_s, finished_s, owner, statistic, %(broker_id)b, %(epoch)b"
    " FROM new ORDER BY request_id"
    " ON CONFLICT (request_id) DO NOTHING RETURNING seq, status, owner, octet_length(request)"
    " + coalesce(octet_length(answer), 0) + coalesce(octet_length(reason), 0) AS size),"
    " v AS (SELECT * FROM unnest(%(f_seq)b::bigint[], %(f_status)b::text[],"
    " %(f_answer)b::bytea[], %(f_reason)b::text[], %(f_fingerprint)b::text[],"
    " %(f_finished_s)b::float8[]) AS v(seq, status, answer, reason, fingerprint, finished_s)),"
    " done AS (UPDATE jobs SET status = v.status, answer = v.answer, reason = v.reason,"
    " fingerprint = v.fingerprint, finished_s = v.finished_s FROM v"
    " WHERE jobs.seq = v.seq AND jobs.status = 'running' AND jobs.broker_epoch = %(epoch)b"
    " RETURNING jobs.seq, jobs.owner, jobs.status, coalesce(octet_length(v.answer), 0)"
    " + coalesce(octet_length(v.reason), 0) AS size),"
    " usage AS (INSERT INTO key_usage (owner, stored_bytes) SELECT owner, sum(size)"
    " FROM (SELECT owner, size FROM ins UNION ALL SELECT owner, size FROM done) w"
    " GROUP BY owner ORDER BY owner ON CONFLICT (owner) DO UPDATE"
    " SET stored_bytes = key_usage.stored_bytes + excluded.stored_bytes),"
    " counted AS (INSERT INTO job_counts (slot, status, n) SELECT %(slot)b, status, sum(n)"
    " FROM (SELECT status, 1 AS n FROM ins UNION ALL SELECT status, 1 FROM done"
    " UNION ALL SELECT 'running', -1 FROM done) m GROUP BY status ORDER BY status"
    " ON CONFLICT (slot, status) DO UPDATE SET n = job_counts.n + excluded.n),"
    " deposed AS (SELECT string_agg(v.seq::text, ',') AS seqs FROM v"
    " WHERE v.seq NOT IN (SELECT seq FROM done) AND NOT EXISTS (SELECT 1 FROM jobs j"
    " WHERE j.seq = v.seq AND j.status <> 'running' AND j.broker_epoch = %(epoch)b)),"
    " notified AS (SELECT pg_notify(%(channel)b, p) FROM unnest(%(notify)b::text[]) p)"
    " SELECT (SELECT CASE WHEN count(*) < %(adding)b THEN coalesce(array_agg(seq), '{}') END"
    " FROM ins), (SELECT CASE WHEN count(*) < %(finishing)b THEN coalesce(array_agg(seq), '{}')"
    " END FROM done),"
    f" (SELECT CASE WHEN seqs IS NOT NULL THEN ('{DEPOSED} ' || seqs)::int END FROM deposed),"
    " (SELECT count(*) FROM notified)"
)
# A job cancelled by any broker (PgStore.cancel): only while it runs (its holder's own
# finish is then refused as one already recorded); its reason's bytes go to its key's
# total and its number is NOTIFYd at commit, as a finish's are.
_CANCEL = (
    "WITH c AS (UPDATE jobs SET status = %(status)s, reason = %(reason)s,"
    " finished_s = %(finished_s)s WHERE seq = %(seq)s AND status = 'running'"
    " RETURNING seq, owner, octet_length(reason) AS size),"
    " usage AS (INSERT INTO key_usage (owner, stored_bytes) SELECT owner, size FROM c"
    " ON CONFLICT (owner) DO UPDATE SET stored_bytes = key_usage.stored_bytes"
    " + excluded.stored_bytes),"
    " counted AS (INSERT INTO job_counts (slot, status, n) SELECT %(slot)s, m.status, m.n"
    " FROM c, (VALUES ('cancelled', 1), ('running', -1)) AS m(status, n) ORDER BY 2"
    " ON CONFLICT (slot, status) DO UPDATE SET n = job_counts.n + excluded.n),"
    " notified AS (SELECT pg_notify(%(channel)s, seq::text) FROM c)"
    " SELECT owner, (SELECT count(*) FROM notified) FROM c"
)
_ROW_BYTES = (
    "octet_length(request) + coalesce(octet_length(answer), 0) + coalesce(octet_length(reason), 0)"
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


def _payloads(seqs: list[int]) -> list[str] | None:
    """The NOTIFY payloads naming `seqs`, in order, `NOTIFY_SEQS` a payload (None: none)."""
    seqs.sort()
    chunks = range(0, len(seqs), NOTIFY_SEQS)
    return [",".join(map(str, seqs[n : n + NOTIFY_SEQS])) for n in chunks] or None


def _column(values: list[Any]) -> list[Any] | None:
    """`values` as a parameter of `_WRITE`, or None (a NULL array) if they are all None:
    `unnest` pads a NULL array with NULLs, and psycopg need not convert the list."""
    return values if any(value is not None for value in values) else None


class NewJob(NamedTuple):
    """A job added in the open transaction and not written yet (with its outcome, if it
    finished before it was)."""

    request_id: str
    body: bytes
    created_s: float
    owner: str
    statistic: str
    outcome: Outcome | None = None
    finished_s: float | None = None

    def record(self, seq: int) -> JobRecord:
        outcome = self.outcome
        return JobRecord(
            seq, self.request_id, self.body, outcome.status if outcome else JobStatus.RUNNING,
            answer=outcome.answer if outcome else None,
            reason=outcome.reason if outcome else None,
            fingerprint=outcome.fingerprint if outcome else None,
            created_s=self.created_s, finished_s=self.finished_s, owner=self.owner,
        )  # fmt: skip

    @property
    def stored_bytes(self) -> int:
        outcome = self.outcome
        if outcome is None:
            return stored_bytes(self.body)
        return stored_bytes(self.body, outcome.answer, outcome.reason)


class PgStore(LeasedConnection):
    """A `Store` in a PostgreSQL database that several brokers share."""

    def __init__(self, url: str, broker_id: str, host: str = "") -> None:
        """Connect, create or migrate the schema (`SchemaTooNew` if it is newer), and
        register this broker. `StorageError` if the database cannot be reached."""
        super().__init__(url, broker_id, host)
        self._pending = PendingOutcomes()  # written by one statement, at commit at the latest
        self._added: dict[int, NewJob] = {}  # likewise: the turn's new jobs, by number
        self._numbers = NumberBlocks()
        self._added_in_turn = 0  # sizes the next block of numbers
        # Request ids of this broker's jobs, added and not finished (answered from
        # memory), and the jobs of the turn that the commit did not store.
        self._known: dict[str, int] = {}
        self._request_of: dict[int, str] = {}
        self._uncommitted: list[tuple[str, int]] = []  # the transaction's, written or not
        self._superseded: dict[int, int | str] = {}
        self._overruled: set[int] = set()
        # Stored bytes by key: as last read (with when, monotonic), and what this
        # broker's open transaction adds (written by one statement at commit).
        self._usage: dict[str, tuple[int, float]] = {}
        self._usage_delta: Counter[str] = Counter()
        self._issued = 0
        # Jobs by status: as last read from job_counts and committed (with this broker's
        # commits since); this broker's moves written into the open transaction (the
        # statement that wrote them added them to its rows of the counts, uncommitted);
        # and its moves not written yet.
        self._counted: Counter[str] = Counter()
        self._in_txn: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._counts_at = -COUNTS_MAX_AGE_S
        self._jobs_written = 0
        self._trips_seen: deque[tuple[float, int, int]] = deque()  # (when, trips, jobs)
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
        """The job for `request_id`: the one this broker knows it has (False), or a new
        one (True), numbered at once and written at commit, which finds a request id
        another broker (or an earlier turn) took: then `superseded()` names its job."""
        known = self._known.get(request_id)
        if known is not None:
            return known, False
        seq = self._numbers.take()
        if seq is None:
            self._reserve(min(SEQ_BLOCK_MAX, max(SEQ_BLOCK, 2 * self._added_in_turn)))
            seq = self._numbers.take()
            if seq is None:
                raise StorageError("add", "the database reserved no job number")
        self._added[seq] = NewJob(request_id, job_body, now_s, owner, statistic)
        self._added_in_turn += 1
        if len(self._known) >= KNOWN_REQUESTS:
            self._forget_known()
        self._known[request_id] = seq
        self._request_of[seq] = request_id
        self._uncommitted.append((request_id, seq))
        self._issued = max(self._issued, seq)
        self._counts[JobStatus.RUNNING] += 1
        self._usage_delta[owner] += stored_bytes(job_body)
        self._changed = True
        return seq, True

    def _reserve(self, count: int) -> None:
        """Reserve `count` more job numbers (one round trip)."""
        self._numbers.add([int(n) for (n,) in self._read(_RESERVE, (count,))])

    def _forget_known(self) -> None:
        """Forget the request ids of committed jobs (those of the turn's stay)."""
        self._known = {self._request_of[s]: s for s in self._added if s in self._request_of}
        self._request_of = {seq: rid for rid, seq in self._known.items()}

    def superseded(self) -> dict[int, int | str]:
        """The jobs `add`ed since the last call that the last commit did not store: each
        with the number of the job its request id already had, or why its row alone
        was refused."""
        superseded, self._superseded = self._superseded, {}
        return superseded

    def overruled(self) -> set[int]:
        """The jobs whose outcome the last commit did not record, as they had ended
        already (cancelled by another broker, or recorded by a commit whose success a
        lost connection hid)."""
        overruled, self._overruled = self._overruled, set()
        return overruled

    def round_trips(self) -> tuple[int, float | None]:
        """Round trips to the database since the start, and per job added over the last
        ROUND_TRIPS_WINDOW_S (None without any)."""
        total = self._sample_round_trips()
        _, trips, jobs = self._trips_seen[0]
        if self._jobs_written == jobs:
            return total, None
        return total, (total - trips) / (self._jobs_written - jobs)

    def _sample_round_trips(self) -> int:
        """Note the round trips and jobs so far (at each commit); the round trips."""
        total, seen = self._session.round_trips, self._trips_seen
        seen.append((time.monotonic(), total, self._jobs_written))
        while len(seen) > 2 and seen[1][0] < seen[-1][0] - ROUND_TRIPS_WINDOW_S:
            seen.popleft()
        return total

    @_op
    def find_request(self, request_id: str) -> int | None:
        known = self._known.get(request_id)
        if known is not None:
            return known
        row = self._read("SELECT seq FROM jobs WHERE request_id = %s", (request_id,)).fetchone()
        return int(row[0]) if row else None

    @_op
    def get(self, seq: int) -> JobRecord | None:
        new = self._added.get(seq)
        if new is not None:
            return new.record(seq)
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
        if seq in self._superseded:  # not stored (its request id had a job): moot
            return
        new = self._added.get(seq)
        if new is not None:  # not written yet: written finished
            self._added[seq] = new._replace(outcome=outcome, finished_s=now_s)
        else:
            self._pending.record(seq, outcome, now_s, owner)
        request_id = self._request_of.pop(seq, None)
        if request_id is not None:
            self._known.pop(request_id, None)
        self._usage_delta[owner] += stored_bytes(b"", outcome.answer, outcome.reason)
        self._counts[JobStatus.RUNNING] -= 1
        self._counts[outcome.status] += 1
        self._changed = True

    @_op
    def cancel(self, seq: int, reason: str, now_s: float) -> bool:
        """End job `seq` CANCELLED if it is still running, whichever broker holds it: in
        the turn's transaction, told to the others at commit as a finish is."""
        self._write_finished()  # this broker's outcome of it, if any, comes first
        params = {"status": JobStatus.CANCELLED.value, "reason": reason, "finished_s": now_s,
                  "seq": seq, "channel": FINISHED_CHANNEL,
                  "slot": count_slot(self.epoch)}  # fmt: skip
        row = self._write(_CANCEL, params)
        found = row.fetchone()
        if found is None:
            return False
        self._usage_delta[str(found[0])] += stored_bytes(b"", None, reason)
        self._in_txn.update({RUNNING: -1, JobStatus.CANCELLED.value: 1})  # counted by _CANCEL
        self._changed = True
        return True

    def _write_finished(self) -> None:
        """Write the jobs added and the outcomes recorded since the last call into the
        open transaction (one round trip), for a query that reads the table."""
        self._write_turn(commit=False)

    def _write_turn(self, *, commit: bool) -> None:
        """Write what the turn added and recorded (`_WRITE`), then (`commit`) commit it,
        with the next block of numbers if it is due: one pipeline, one round trip. With
        no transaction open (no other write in the turn), the statement is the
        transaction: autocommit. A row the batch cannot take fails only its own job:
        the rows are written again one by one, in a transaction (`_write_alone`)."""
        added, finished = list(self._added.items()), self._pending.take()
        self._added = {}
        in_transaction = self._session.in_transaction()
        if not (added or finished or (commit and in_transaction)):
            return
        db = self._session.conn()
        self._changed = True
        alone = commit and not in_transaction
        reserve = self._top_up() if commit else 0
        try:
            write, reserved = self._send(db, added, finished, commit=commit, reserve=reserve)
        except psycopg.Error as exc:
            self._refused_batch(db, exc, bool(added), alone)
            self._write_alone(db, added)
            self._pending_again(finished)
            self._write_turn(commit=commit)
            return
        if write is not None:
            self._written(write.fetchone(), added, finished)
        if reserved is not None:
            self._numbers.add([int(n) for (n,) in reserved.fetchall()])
        if not commit:  # the moves of what was written are in the transaction's counts
            self._in_txn.update(self._counts)
            self._counts.clear()

    def _send(
        self,
        db: Connection,
        added: list[tuple[int, NewJob]],
        finished: dict[int, Finish],
        *,
        commit: bool,
        reserve: int,
    ) -> tuple[Cursor | None, Cursor | None]:
        """One pipeline: `reserve` numbers; the batch, in the open transaction (in a
        savepoint if it adds jobs) or as one of its own; COMMIT if `commit` and a
        transaction is open. The cursors of the batch and of the numbers (None if not sent).
        A turn's usual write, the batch alone as its own transaction, is sent without a
        pipeline: the same one round trip, and half the broker's CPU of one."""
        write = reserved = None
        in_transaction = self._session.in_transaction()
        if commit and not in_transaction and not reserve and (added or finished):
            return db.execute(_WRITE, self._params(added, finished), prepare=True), None
        savepoint = bool(added) and (in_transaction or not commit)
        with db.pipeline():
            if reserve:
                reserved = db.execute(_RESERVE, (reserve,))
            if not in_transaction and not commit:
                db.execute("BEGIN")
            if savepoint:
                db.execute("SAVEPOINT batch")
            if added or finished:
                write = db.execute(_WRITE, self._params(added, finished), prepare=True)
            if savepoint:
                db.execute("RELEASE SAVEPOINT batch")
            if commit and in_transaction:
                db.execute("COMMIT")
        return write, reserved

    def _pending_again(self, finished: dict[int, Finish]) -> None:
        for seq, (outcome, finished_s, owner) in finished.items():
            self._pending.record(seq, outcome, finished_s, owner)

    def _refused_batch(self, db: Connection, exc: psycopg.Error, added: bool, alone: bool) -> None:
        """After `exc` failed the turn's batch: raise unless a row of it may be to blame
        (then a transaction is open, where the batch had not written anything)."""
        if DEPOSED in str(exc):
            self.deposed = True
            refused = str(exc).split(DEPOSED, 1)[1].strip(' "')
            raise StorageError(
                "finish", f"job(s) {refused[:200]} belong to another broker or expired, not to"
                f" this broker's epoch {self.epoch}: this broker was deposed",
            ) from exc  # fmt: skip
        if not added or db.closed or db.broken:
            raise exc
        if alone:  # the statement was its own transaction: nothing was written
            self._session.begin()
        elif not self._back_to(db, "batch"):
            raise exc

    @staticmethod
    def _back_to(db: Connection, savepoint: str) -> bool:
        """Take back what was done since `savepoint` (and end it); False if it cannot."""
        if db.closed or db.broken:
            return False
        try:
            db.execute(f"ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint}")
        except psycopg.Error:
            return False
        return True

    def _write_alone(self, db: Connection, added: list[tuple[int, NewJob]]) -> None:
        """Write each job of `added` in a savepoint of its own (a round trip each): one
        whose row is refused is superseded by the reason, and the others are written."""
        for seq, job in added:
            try:
                with db.pipeline():
                    db.execute("SAVEPOINT request")
                    write = db.execute(_WRITE, self._params([(seq, job)], {}))
                    db.execute("RELEASE SAVEPOINT request")
            except psycopg.Error as exc:
                if not self._back_to(db, "request"):
                    raise exc from None
                log.warning("%s refused by the store alone: %s", job_id(seq), reason(exc))
                self._drop_added(seq, job, f"add: {reason(exc)}")
                continue
            self._written(write.fetchone(), [(seq, job)], {})

    def _params(
        self, added: list[tuple[int, NewJob]], finished: dict[int, Finish]
    ) -> dict[str, Any]:
        """The parameters of `_WRITE`: one array per column (NULL for a column of NULLs)."""
        outcomes = [job.outcome for _, job in added]
        ended = finished.values()
        return {
            "seq": [seq for seq, _ in added],
            "request_id": [job.request_id for _, job in added],
            "request": [job.body for _, job in added],
            "status": _column([str(o.status) if o else None for o in outcomes]),
            "answer": _column([o.answer if o else None for o in outcomes]),
            "reason": _column([o.reason if o else None for o in outcomes]),
            "fingerprint": _column([o.fingerprint if o else None for o in outcomes]),
            "created_s": [job.created_s for _, job in added],
            "finished_s": _column([job.finished_s for _, job in added]),
            "owner": [job.owner for _, job in added],
            "statistic": [job.statistic for _, job in added],
            "broker_id": self.broker_id,
            "epoch": self.epoch,
            "f_seq": list(finished),
            "f_status": [str(o.status) for o, _, _ in ended],
            "f_answer": _column([o.answer for o, _, _ in ended]),
            "f_reason": _column([o.reason for o, _, _ in ended]),
            "f_fingerprint": _column([o.fingerprint for o, _, _ in ended]),
            "f_finished_s": [finished_s for _, finished_s, _ in ended],
            "channel": FINISHED_CHANNEL,
            "notify": _payloads(
                [*finished, *(seq for seq, job in added if job.outcome is not None)]
            ),
            "adding": len(added),
            "finishing": len(finished),
            "slot": count_slot(self.epoch),
        }

    def _written(
        self,
        row: tuple[Any, ...] | None,
        added: list[tuple[int, NewJob]],
        finished: dict[int, Finish],
    ) -> None:
        """Account for what `_WRITE` wrote (`row`): jobs whose request id was taken are
        superseded by that job; outcomes not written (recorded already by this epoch: a
        commit whose success a lost connection hid) do not count their bytes again."""
        if row is None:
            row = ((), ())
        inserted = None if row[0] is None else set(row[0])
        self._jobs_written += len(added) if inserted is None else len(inserted)
        taken = [] if inserted is None else [(s, job) for s, job in added if s not in inserted]
        if taken:
            existing, why = self._jobs_of([job.request_id for _, job in taken])
            for seq, job in taken:
                self._drop_added(seq, job, existing.get(job.request_id, why))
        for seq in () if row[1] is None else finished.keys() - set(row[1]):
            outcome, _, owner = finished[seq]
            log.info("%s was already recorded as finished", job_id(seq))
            self._usage_delta[owner] -= stored_bytes(b"", outcome.answer, outcome.reason)
            self._counts.subtract({RUNNING: -1, outcome.status: 1})  # nor is its move
            self._overruled.add(seq)

    def _jobs_of(self, request_ids: list[str]) -> tuple[dict[str, int], str]:
        """The jobs that `request_ids` name (one round trip), and why one has none."""
        try:
            had = self._read(
                "SELECT request_id, seq FROM jobs WHERE request_id = ANY(%s)", (request_ids,)
            ).fetchall()
        except (psycopg.Error, StorageError) as exc:  # after a commit: it stands
            return {}, f"add: its request id had a job, which could not be read: {reason(exc)}"
        return {str(rid): int(seq) for rid, seq in had}, "add: its request id's job vanished"

    def _drop_added(self, seq: int, job: NewJob, instead: int | str) -> None:
        """Forget job `seq` of the turn, not stored: `instead` is the job its request id
        has, or why its row was refused."""
        self._superseded[seq] = instead
        if self._known.get(job.request_id) == seq:
            del self._known[job.request_id]
        self._request_of.pop(seq, None)
        self._counts[job.outcome.status if job.outcome else JobStatus.RUNNING] -= 1
        self._usage_delta[job.owner] -= job.stored_bytes

    def _top_up(self) -> int:
        """How many numbers to reserve with this commit: enough for two turns like this
        one, at least SEQ_BLOCK, once fewer than half of that are left."""
        wanted = min(SEQ_BLOCK_MAX, max(SEQ_BLOCK, 2 * self._added_in_turn))
        return wanted - len(self._numbers) if len(self._numbers) < wanted // 2 else 0

    def _committed(self) -> None:
        self._sample_round_trips()
        self._uncommitted = []
        self._changed = False
        self._added_in_turn = 0
        for owner, delta in self._usage_delta.items():
            if owner in self._usage:
                known, read_at = self._usage[owner]
                self._usage[owner] = (known + delta, read_at)
        self._usage_delta.clear()
        self._counted.update(self._in_txn)
        self._counted.update(self._counts)
        self._in_txn.clear()
        self._counts.clear()

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

    @_op
    def add_attempt(self, seq: int) -> int:
        """One more lost worker for job `seq` (refused, unchanged, if another owns it)."""
        if seq in self._added:
            self._write_finished()  # its row first
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
        return self._counted[status] + self._in_txn[status] + self._counts[status]

    def _recount(self) -> None:
        try:
            rows = self._read(_COUNTS).fetchall()
        except (psycopg.Error, StorageError) as exc:
            log.debug("counts not refreshed: %s", exc)  # the last counts stand meanwhile
            return
        self._counted = Counter({str(status): int(n) for status, n in rows})
        self._counted.subtract(self._in_txn)  # read in the open transaction: not committed
        self._counts_at = time.monotonic()

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
        """The highest job number handed out by any broker on the store, as far as this
        one knows: numbers other brokers reserved and have not handed out yet count."""
        row = self._read(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM job_seq"
        ).fetchone()
        reserved = int(row[0]) if row else 0
        self._issued = max(self._issued, self._numbers.highest_told(reserved))
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
        """Write the turn and commit it, and tell other brokers which jobs it finished:
        one round trip (`_write_turn`). Jobs it did not store: `superseded()`."""
        db = self._session.conn()
        if db.info.transaction_status == pq.TransactionStatus.INERROR:
            raise StorageError("commit", "the transaction had failed; it must be rolled back")
        self._write_turn(commit=True)
        self._committed()

    def rollback(self) -> None:
        """Undo every write since the last commit (job numbers stay used)."""
        for request_id, seq in self._uncommitted:
            if self._known.get(request_id) == seq:
                del self._known[request_id]
            self._request_of.pop(seq, None)
        self._uncommitted = []
        self._added = {}
        self._added_in_turn = 0
        self._superseded.clear()
        self._overruled.clear()
        self._pending.clear()
        self._usage_delta.clear()
        self._usage.clear()  # figures read in the failed transaction may be gone
        self._counts.clear()
        self._in_txn.clear()
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
