"""bench.soak's verdicts: every job ends in exactly one final state, cancelled among them,
and that state agrees with what its producer was told (a cancel's reply, a deadline)."""

from __future__ import annotations

from bench.soak import Ledger, Spec, _judge_told

SPEC = Spec("global_mean", {"question": "Q"}, ("done", {"global_mean": 1.0}))
DONE = {"status": "done", "data": {"global_mean": 1.0}}
CANCELLED = {"status": "cancelled", "reason": "cancelled"}
DEADLINE = {"status": "cancelled", "reason": "deadline passed"}


def ledger(job: str = "job_id_1", cancel: str | None = None, deadline: bool = False) -> Ledger:
    book = Ledger()
    book.record("request", job, SPEC)
    if cancel is not None:
        book.cancelled(job, cancel)
    if deadline:
        book.deadline(job)
    return book


def test_a_cancelled_job_is_finished_when_its_producer_cancelled_it() -> None:
    assert _judge_told(CANCELLED, "job_id_1", ledger(cancel="cancelled")) == "cancelled"
    assert _judge_told(CANCELLED, "job_id_1", ledger(cancel="unconfirmed")) == "cancelled"
    assert _judge_told(DEADLINE, "job_id_1", ledger(deadline=True)) == "deadline_passed"


def test_a_cancelled_job_nobody_cancelled_is_wrong() -> None:
    assert _judge_told(CANCELLED, "job_id_1", ledger()) == "wrong"
    assert _judge_told(DEADLINE, "job_id_1", ledger()) == "wrong", "no deadline was set"
    assert _judge_told(CANCELLED, "job_id_1", ledger(cancel="done")) == "wrong"


def test_a_cancel_that_answered_cancelled_holds() -> None:
    assert _judge_told(DONE, "job_id_1", ledger(cancel="cancelled")) == "wrong"
    assert _judge_told(DONE, "job_id_1", ledger(cancel="done")) == "done"
    assert _judge_told(DONE, "job_id_1", ledger(cancel="error")) == "wrong"
    assert _judge_told(DONE, "job_id_1", ledger(cancel="unconfirmed")) == "done"


def test_an_unfinished_job_is_lost_whatever_it_was_told() -> None:
    assert _judge_told({"status": "running"}, "job_id_1", ledger(cancel="cancelled")) == "wrong"
    assert _judge_told({"status": "running"}, "job_id_1", ledger()) == "unfinished"
