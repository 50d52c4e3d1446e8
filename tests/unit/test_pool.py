"""broker.pool: least-recently-used dispatch with credit, and each worker's front slot."""

from __future__ import annotations

from broker.pool import WorkerInfo, WorkerPool

LEASE_S = 60.0


def _pool(*credits: int) -> WorkerPool:
    pool = WorkerPool()
    for n, credit in enumerate(credits, start=1):
        pool.register(WorkerInfo(f"w{n}".encode(), credit, "fp", n, "host", 0.0, 0.0))
    return pool


def _given(pool: WorkerPool, seq: int, front: bool = False) -> bytes | None:
    """The identity of the worker `seq` went to (None: no slot)."""
    assign = pool.assign_front if front else pool.assign
    worker = assign(seq, 0.0, LEASE_S)
    return worker.identity if worker else None


def test_a_full_worker_takes_one_front_job_beyond_its_credit_and_no_more() -> None:
    pool = _pool(2)
    assert [_given(pool, 1), _given(pool, 2)] == [b"w1", b"w1"]
    assert not pool.has_free() and pool.has_front_slot()
    front = pool.assign_front(3, 0.0, LEASE_S)
    assert front is not None and list(front.jobs) == [1, 2, 3]
    assert front.jobs[3] == 3 * LEASE_S, "a lease for each job it holds"
    assert not pool.has_front_slot() and pool.assign_front(4, 0.0, LEASE_S) is None
    assert pool.release(b"w1", 1)
    assert not pool.has_free(), "its credit is taken still: the front slot came back only"
    assert pool.has_front_slot()
    assert pool.release(b"w1", 3) and pool.has_free()


def test_a_front_job_takes_a_free_slot_first_least_recently_used() -> None:
    pool = _pool(1, 1, 1)
    assert _given(pool, 1) == b"w1"
    assert _given(pool, 2, front=True) == b"w2"
    assert _given(pool, 3) == b"w3"
    assert _given(pool, 4, front=True) == b"w1", "then a full worker's front slot"


def test_a_worker_running_a_suspect_offers_no_front_slot() -> None:
    pool = _pool(1)
    assert pool.assign(1, 0.0, LEASE_S, suspect=True) is not None
    assert not pool.has_front_slot() and pool.assign_front(2, 0.0, LEASE_S) is None
    assert pool.release(b"w1", 1) and pool.has_free()
