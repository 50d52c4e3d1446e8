"""broker.store.pending: the overlay of outcomes the SQL stores have not written yet."""

from __future__ import annotations

from broker.store import JobRecord, Outcome
from broker.store.pending import PendingOutcomes, rows_of
from protocol.messages import JobStatus

DONE = Outcome(JobStatus.DONE, answer=b"\x01", fingerprint="f")
FAILED = Outcome(JobStatus.ERROR, reason="no data")


def running(seq: int) -> JobRecord:
    return JobRecord(seq, f"r{seq}", b"body", JobStatus.RUNNING, created_s=1.0, owner="KEY")


def test_a_job_reads_with_its_pending_outcome_and_others_as_stored() -> None:
    pending = PendingOutcomes()
    pending.record(2, FAILED, 5.0, "KEY")
    assert 2 in pending and 1 not in pending
    assert pending.overlay(running(1)) == running(1)
    read = pending.overlay(running(2))
    assert (read.status, read.reason, read.finished_s) == (JobStatus.ERROR, "no data", 5.0)
    assert (read.request_id, read.job_body, read.owner) == ("r2", b"body", "KEY")


def test_take_gives_every_outcome_once_in_the_order_recorded_and_rows_seq_first() -> None:
    pending = PendingOutcomes()
    pending.record(7, DONE, 3.0, "A")
    pending.record(4, FAILED, 4.0, "")
    assert pending
    taken = pending.take()
    assert taken == {7: (DONE, 3.0, "A"), 4: (FAILED, 4.0, "")} and list(taken) == [7, 4]
    assert rows_of(taken) == [
        (7, "done", b"\x01", None, "f", 3.0),
        (4, "error", None, "no data", None, 4.0),
    ]
    assert not pending and pending.take() == {}


def test_clear_forgets_every_pending_outcome() -> None:
    pending = PendingOutcomes()
    pending.record(1, DONE, 1.0, "")
    pending.record(2, FAILED, 1.0, "")
    pending.clear()
    assert not pending and 1 not in pending
