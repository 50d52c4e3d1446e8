"""Deadlines and cancels at the edges a review found: a job back from a lost worker after
its deadline, a resubmit the store did not keep that ends in the same turn, a cancel on
one broker crossing a finish on another, the deadline heap after many finished jobs."""

from __future__ import annotations

from typing import Any

import pytest

from broker.jobs import DEADLINES_SLACK
from broker.store import Outcome, Store
from protocol import messages as m
from tests.unit.broker_harness import FP, Harness, replies
from tests.unit.conftest import pg_store
from tests.unit.test_cancel import _submit

WEEK_MS = 7 * 24 * 3600 * 1000


def test_a_job_lost_after_its_deadline_is_not_sent_again(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    job = _submit(h, "r1", deadline_ms=500)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w1", job.encode())]
    h.client(m.Wait(job), who=b"waiter", tag=b"w")
    h.now += 0.6  # the deadline passes while w1 holds it, prefetched and not started
    h.sent()
    h.core.lose_worker(b"w1", "died", h.now)
    h.worker(m.Ready(1, FP), b"w2")
    clients, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [], "never sent again past its deadline"
    assert replies(clients)[b"w"] == m.JobState(job, "cancelled", m.REASON_DEADLINE)


def test_a_resubmit_not_stored_that_ends_in_its_turn_does_not_depose(store: Store) -> None:
    """PostgreSQL: a request id whose job finished is sent again; a read writes the turn
    (the row conflicts: not stored), then the new number's deadline passes. The commit
    must answer with the first job, not record an outcome for a row that is not there
    (which read as this broker being deposed)."""
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    job = _submit(h, "r1")
    h.sent()
    h.core.commit()
    h.result(b"w1", job.encode())
    h.sent()
    h.core.commit()
    h.worker(m.Ready(1, FP), b"w2")
    h.core.commit()
    h.sent()
    h.client(m.Submit("r1", "global_mean", {"question": "Q"}, deadline_ms=1), tag=b"again")
    h.client(m.ListJobs(), tag=b"list")
    h.now += 0.01
    h.core.dispatch(h.now)
    h.core.commit()
    assert not getattr(store, "deposed", False)
    clients, _ = h.sent()
    assert replies(clients)[b"again"] == m.Submitted(job)


def test_a_cancel_on_one_broker_crossing_a_finish_on_another(postgres: Any) -> None:
    """Broker A cancels B's running job and commits; B's worker answers before B hears
    of it. B's outcome is refused (the job ended), and B's waiter is told what the store
    holds: cancelled, not done."""
    url = postgres.database()
    store_a, store_b = pg_store(url, "broker-a"), pg_store(url, "broker-b")
    try:
        a, b = Harness(store_a), Harness(store_b)
        b.worker(m.Ready(1, FP), b"w1")
        job = _submit(b, "r1")
        b.sent()
        b.core.commit()
        b.client(m.Wait(job), who=b"waiter", tag=b"w")
        a.client(m.Cancel(job), tag=b"cancel")
        a.core.commit()
        assert replies(a.sent()[0])[b"cancel"] == m.JobState(job, "cancelled", "cancelled")
        b.result(b"w1", job.encode())
        b.core.commit()
        assert replies(b.sent()[0])[b"w"] == m.JobState(job, "cancelled", "cancelled")
        record = store_b.get(1)
        assert record is not None and record.status is m.JobStatus.CANCELLED
    finally:
        store_a.close()
        store_b.close()


def test_the_deadline_heap_keeps_no_more_than_twice_the_jobs(store: Store) -> None:
    if type(store).__name__ != "MemoryStore":
        pytest.skip("the job table's concern: one store is enough")
    h = Harness(store)
    h.worker(m.Ready(100, FP), b"w1")
    for n in range(DEADLINES_SLACK + 500):
        job = _submit(h, f"d{n}", deadline_ms=WEEK_MS)
        h.sent()
        h.result(b"w1", job.encode())
        h.sent()
    assert len(h.core.jobs) == 0
    assert len(h.core.jobs._deadlines) <= DEADLINES_SLACK  # was one per job finished


def test_request_ids_are_forgotten_after_a_job_added_and_ended_in_its_turn(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.store import postgres as pg

    store = pg_store(postgres.database())
    try:
        monkeypatch.setattr(pg, "KNOWN_REQUESTS", 2)
        store.add("k1", b"x", 1.0)
        seq, _ = store.add("k2", b"x", 1.0)
        store.finish(seq, Outcome(m.JobStatus.CANCELLED, reason="cancelled"), 1.0)
        store.add("k3", b"x", 1.0)
        store.add("k4", b"x", 1.0)  # past KNOWN_REQUESTS: the committed ones are forgotten
        store.commit()
        assert store.count(m.JobStatus.RUNNING) == 3
    finally:
        store.close()
