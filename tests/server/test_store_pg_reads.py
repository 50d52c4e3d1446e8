"""What growth asks of the PostgreSQL store (issue 20, item 3): counts by status kept as
running totals by every broker, never counted over the jobs; expiry in batches that two
brokers run at once without waiting on each other; many jobs read in one query."""

from __future__ import annotations

from typing import cast

import psycopg
import pytest

from broker.store import Outcome
from broker.store.postgres import PgStore
from protocol.messages import JobStatus
from tests.postgres import statements_run

DONE = Outcome(JobStatus.DONE, answer=b"\x81\xa1a\x01", fingerprint="f")
FAILED = Outcome(JobStatus.ERROR, reason="no data")
STATUSES = ("running", "done", "error")


@pytest.fixture
def brokers(
    brokers: tuple[PgStore, PgStore], monkeypatch: pytest.MonkeyPatch
) -> tuple[PgStore, PgStore]:
    """conftest's two stores, reading the counts each time they are asked."""
    monkeypatch.setattr("broker.store.postgres.COUNTS_MAX_AGE_S", 0.0)
    return brokers


def counts(store: PgStore) -> dict[str, int]:
    return {status: store.count(status) for status in STATUSES}


def counted_over_the_jobs(url: str) -> dict[str, int]:
    """The truth, by a scan (through libpq itself: `statements_run` does not see it)."""
    with psycopg.connect(url) as conn:
        result = conn.pgconn.exec_(b"SELECT status, count(*) FROM jobs GROUP BY status")
        rows = {
            bytes(result.get_value(row, 0) or b"").decode(): int(result.get_value(row, 1) or 0)
            for row in range(result.ntuples)
        }
    return {status: rows.get(status, 0) for status in STATUSES}


def test_counts_are_kept_exact_by_two_brokers_without_counting_the_jobs(
    brokers: tuple[PgStore, PgStore], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = brokers
    run = statements_run(monkeypatch)
    a_jobs = [a.add(f"a{n}", b"q", 0.0)[0] for n in range(3)]
    b_jobs = [b.add(f"b{n}", b"q", 0.0)[0] for n in range(2)]
    a.finish(a_jobs[0], DONE, 1.0)
    b.finish(b_jobs[0], FAILED, 1.0)
    a.commit()
    b.commit()
    expected = {"running": 3, "done": 1, "error": 1}
    assert counts(a) == counts(b) == expected == counted_over_the_jobs(pg_url)
    a.finish(a_jobs[0], FAILED, 2.0)  # as after a retried turn: the first record stands
    a.commit()
    assert counts(a) == counts(b) == expected
    a.add("taken back", b"q", 2.0)
    a.finish(a_jobs[1], DONE, 2.0)
    assert counts(a) == {"running": 3, "done": 2, "error": 1}  # its own moves at once
    a.rollback()
    assert counts(a) == counts(b) == expected == counted_over_the_jobs(pg_url)
    assert b.expire(finished_before_s=5.0) == 2
    assert counts(b) == {"running": 3, "done": 0, "error": 0}  # before its commit too
    b.commit()
    assert counts(a) == counts(b) == {"running": 3, "done": 0, "error": 0}
    assert counted_over_the_jobs(pg_url) == counts(a)
    assert not [sql for sql in run if "count(*) FROM jobs" in sql]  # never a scan


def test_a_status_the_broker_does_not_know_yet_is_counted_too(
    brokers: tuple[PgStore, PgStore],
) -> None:
    """A `cancelled` job (issue 19) counts as any other status does."""
    a, b = brokers
    seq, _ = a.add("r", b"q", 0.0)
    a.finish(seq, Outcome(cast(JobStatus, "cancelled"), reason="cancelled"), 1.0)
    a.commit()
    assert b.count("cancelled") == 1 and b.count("running") == 0


def test_expiry_deletes_a_batch_a_call_and_frees_each_job_once(
    brokers: tuple[PgStore, PgStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.store.postgres.EXPIRE_BATCH", 2)
    a, _ = brokers
    seqs = [a.add(f"r{n}", b"body", 0.0, "KEY")[0] for n in range(5)]
    for n, seq in enumerate(seqs):
        a.finish(seq, DONE, 1.0 + n, "KEY")
    a.commit()
    assert [a.expire(finished_before_s=10.0) for _ in range(4)] == [2, 2, 1, 0]
    a.commit()
    assert a.stored_bytes("KEY") == 0 and counts(a) == {"running": 0, "done": 0, "error": 0}


def test_two_brokers_expire_at_once_without_waiting_for_each_other(
    brokers: tuple[PgStore, PgStore], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each deletes a batch the other has not locked (keys apart: a key's total of stored
    bytes is one row, which two transactions do write one after the other)."""
    monkeypatch.setattr("broker.store.postgres.EXPIRE_BATCH", 2)
    a, b = brokers
    for n, owner in enumerate(["A", "A", "B", "B"]):
        seq, _ = a.add(f"r{n}", b"body", 0.0, owner)
        a.finish(seq, DONE, 1.0 + n, owner)
    a.commit()
    assert a.expire(finished_before_s=10.0) == 2  # its rows stay locked until its commit
    assert b.expire(finished_before_s=10.0) == 2  # the other two, not a wait on a's
    a.commit()
    b.commit()
    assert a.stored_bytes("A") == b.stored_bytes("B") == 0
    assert counts(a) == counted_over_the_jobs(pg_url) == {"running": 0, "done": 0, "error": 0}


def test_get_many_reads_as_get_does_in_one_query(
    brokers: tuple[PgStore, PgStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = brokers
    seqs = [a.add(f"r{n}", b"q", 0.0, "KEY")[0] for n in range(3)]
    a.finish(seqs[0], DONE, 1.0, "KEY")
    a.commit()
    a.finish(seqs[1], FAILED, 2.0, "KEY")  # recorded, not written yet: read as finished
    wanted = [*seqs, 999]
    run = statements_run(monkeypatch)
    many = a.get_many(wanted)
    assert len(run) == 1
    assert many == {seq: record for seq in wanted if (record := a.get(seq)) is not None}
    assert sorted(many) == seqs and many[seqs[1]].status is JobStatus.ERROR
    assert b.get_many([seqs[1]])[seqs[1]].status is JobStatus.RUNNING  # not committed
