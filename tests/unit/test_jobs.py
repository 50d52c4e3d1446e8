"""broker.jobs: the table of unfinished jobs, its queue and its journal of a turn."""

from __future__ import annotations

from broker.jobs import COMMIT_RETRY_MAX_S, COMMIT_RETRY_MIN_S, SUSPECT_AFTER_LOSSES, JobTable
from broker.store import JobRecord
from protocol.messages import JobStatus


def _record(seq: int, attempts: int = 0, owner: str = "") -> JobRecord:
    return JobRecord(seq, f"r{seq}", b"body", JobStatus.RUNNING, attempts, owner=owner)


def _queue(table: JobTable, now_s: float = 0.0) -> list[int]:
    """The queue's order, taken off the table."""
    order = []
    while (job := table.next(now_s)) is not None:
        order.append(job.seq)
        table.take(job)
    return order


def test_jobs_are_queued_in_order_and_a_lost_one_goes_to_the_front() -> None:
    table = JobTable()
    for seq in (1, 2, 3, 4):
        table.add(seq, b"body", "")
    assert _queue(table)[:1] == [1]  # a worker holds them all
    table.requeue_unheld({1, 2, 3, 4})
    table.lost(3, attempts=1)
    table.lost(1, attempts=1)
    table.add(5, b"body", "")
    assert _queue(table) == [1, 3, 5]
    assert len(table) == 5


def test_a_job_lost_often_enough_is_a_suspect_and_adopted_ones_keep_it() -> None:
    table = JobTable()
    table.add(1, b"body", "")
    table.lost(1, attempts=SUSPECT_AFTER_LOSSES - 1)
    job = table.get(1)
    assert job is not None and not job.suspect
    table.lost(1, attempts=SUSPECT_AFTER_LOSSES)
    assert job.suspect
    adopted = JobTable()
    assert adopted.adopt([_record(7, SUSPECT_AFTER_LOSSES), _record(8)], 0.0, 0.0) == 2
    assert adopted.adopt([_record(7)], 0.0, 0.0) == 0  # known already
    assert [job.suspect for job in adopted] == [True, False]


def test_owners_count_running_jobs_and_a_job_without_one_has_none() -> None:
    table = JobTable()
    table.add(1, b"body", "alice")
    table.add(2, b"body", "alice")
    table.add(3, b"body", "")
    assert (table.running("alice"), table.owner_of(1), table.owner_of(3)) == (2, "alice", None)
    table.finish(1, set())
    assert table.running("alice") == 1


def test_roll_back_forgets_the_added_and_restores_the_finished_after_a_backoff() -> None:
    table = JobTable()
    table.add(1, b"body", "alice")
    table.commit()
    _queue(table)  # a worker holds job 1
    table.finish(1, {(b"client", b"tag")})
    table.add(2, b"body", "alice")
    added, restored = table.roll_back(now_s=100.0)
    assert added == {2} and restored == {1: {(b"client", b"tag")}}
    assert 2 not in table and table.running("alice") == 1
    table.requeue_unheld(set())
    assert table.retrying() == 1
    assert table.next(100.0 + COMMIT_RETRY_MIN_S * 0.9) is None, "ran before its backoff"
    job = table.next(100.0 + COMMIT_RETRY_MIN_S)
    assert job is not None and job.seq == 1 and table.retrying() == 0


def test_the_backoff_doubles_at_each_failed_commit_in_a_row_up_to_the_maximum() -> None:
    table = JobTable()
    table.add(1, b"body", "")
    table.commit()
    waits = []
    for _ in range(8):
        table.finish(1, set())
        table.roll_back(now_s=0.0)
        job = table.get(1)
        assert job is not None and job.retry_at_s is not None
        waits.append(job.retry_at_s)
    assert waits[:3] == [COMMIT_RETRY_MIN_S, 2 * COMMIT_RETRY_MIN_S, 4 * COMMIT_RETRY_MIN_S]
    assert waits[-1] == COMMIT_RETRY_MAX_S


def test_a_commit_empties_the_journal() -> None:
    table = JobTable()
    table.add(1, b"body", "")
    table.commit()
    assert table.roll_back(now_s=0.0) == (set(), {})
    assert 1 in table


def test_requeue_unheld_queues_exactly_the_jobs_no_worker_holds() -> None:
    table = JobTable()
    for seq in (1, 2, 3, 4):
        table.add(seq, b"body", "")
    _queue(table)  # all four sent out
    table.requeue_unheld({2})  # the worker holding 1, 3 and 4 got them back
    assert _queue(table) == [1, 3, 4]


def test_clear_drops_every_job() -> None:
    table = JobTable()
    table.add(1, b"body", "alice")
    assert table.clear() == [1]
    assert (len(table), table.next(0.0), table.running("alice")) == (0, None, 0)
