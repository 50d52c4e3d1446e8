"""broker.state: the acts both sides of the broker take on their shared CoreState."""

from __future__ import annotations

from broker.state import CoreState
from broker.store import MemoryStore, Outcome
from protocol import messages as m
from protocol.messages import ErrorCode, JobStatus
from tests.unit.broker_harness import FP, SETTINGS


def _sent(state: CoreState) -> list[m.Message]:
    clients, _ = state.outbox.take()
    return [m.decode(frames, routed=True).message for frames in clients]


def test_only_a_refusal_that_may_pass_says_when_to_try_again() -> None:
    state = CoreState(MemoryStore(), SETTINGS, FP, None)
    state.retry_refused_ms = 500
    state.refuse(b"c1", b"1", ErrorCode.STORAGE, "storage failed")
    state.refuse(b"c1", b"2", ErrorCode.FORBIDDEN, "no")
    assert _sent(state) == [
        m.ErrorReply("storage", "storage failed", 500),
        m.ErrorReply("forbidden", "no", 0),
    ]


def test_finish_records_the_outcome_answers_the_waiters_and_journals_the_job() -> None:
    store = MemoryStore()
    state = CoreState(store, SETTINGS, FP, None)
    seq, _ = store.add("r1", b"body", 0.0, "alice")
    state.jobs.add(seq, b"body", "alice")
    state.waiters.add(seq, b"c1", b"7")
    state.finish(seq, Outcome(JobStatus.ERROR, reason="bad"), now_s=1.0)
    assert _sent(state) == [m.JobState(m.job_id(seq), "error", "bad", None)]
    record = store.get(seq)
    assert record is not None and record.status is JobStatus.ERROR
    assert seq not in state.jobs and state.jobs.running("alice") == 0
    assert state.jobs.roll_back(now_s=2.0).restored == {}  # added in the same turn
