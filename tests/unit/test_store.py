"""One behaviour, three stores: every test taking `store` runs on MemoryStore, SqliteStore
and PgStore (a real PostgreSQL: skipped, with the reason, where none is installed)."""

from __future__ import annotations

from broker.store import Outcome, Store
from protocol.messages import JobStatus

DONE = Outcome(JobStatus.DONE, answer=b"\x81\xa1a\x01", fingerprint="f")
FAILED = Outcome(JobStatus.ERROR, reason="no data")


def test_numbers_start_at_one_and_increase(store: Store) -> None:
    assert [store.add(f"r{n}", b"req", 0.0) for n in range(3)] == [(1, True), (2, True), (3, True)]
    assert store.last_seq() == 3


def test_same_request_id_same_job(store: Store) -> None:
    first = store.add("r", b"req", 0.0)
    assert store.add("r", b"other", 1.0) == (first[0], False)
    assert store.find_request("r") == first[0]
    assert store.find_request("unknown") is None
    assert store.count(JobStatus.RUNNING) == 1


def test_finish_and_read_back(store: Store) -> None:
    a, _ = store.add("a", b"req-a", 1.0)
    b, _ = store.add("b", b"req-b", 1.0)
    store.finish(a, DONE, 2.0)
    store.finish(b, FAILED, 3.0)
    record_a, record_b = store.get(a), store.get(b)
    assert record_a is not None and record_b is not None
    assert (record_a.status, record_a.answer, record_a.fingerprint) == (
        JobStatus.DONE,
        DONE.answer,
        "f",
    )
    assert (record_b.status, record_b.reason, record_b.finished_s) == (
        JobStatus.ERROR,
        "no data",
        3.0,
    )
    assert [store.count(s) for s in JobStatus] == [0, 1, 1, 0]
    assert store.get(99) is None


def test_pages_and_unfinished(store: Store) -> None:
    for n in range(5):
        store.add(f"r{n}", b"req", 0.0)
    store.finish(2, DONE, 1.0)
    assert store.page(0, 2) == [(1, JobStatus.RUNNING), (2, JobStatus.DONE)]
    assert store.page(2, 10) == [
        (3, JobStatus.RUNNING),
        (4, JobStatus.RUNNING),
        (5, JobStatus.RUNNING),
    ]
    assert [r.seq for r in store.unfinished()] == [1, 3, 4, 5]


def test_attempts_are_counted(store: Store) -> None:
    seq, _ = store.add("r", b"req", 0.0)
    assert [store.add_attempt(seq) for _ in range(3)] == [1, 2, 3]


def test_expiry_forgets_old_results_but_never_reuses_numbers(store: Store) -> None:
    old, _ = store.add("old", b"req", 0.0)
    new, _ = store.add("new", b"req", 0.0)
    running, _ = store.add("running", b"req", 0.0)
    store.finish(old, DONE, 10.0)
    store.finish(new, DONE, 100.0)
    assert store.expire(finished_before_s=50.0) == 1
    assert store.get(old) is None and store.get(new) is not None and store.get(running) is not None
    assert store.count(JobStatus.DONE) == 1
    assert store.add("later", b"req", 200.0) == (4, True)


def test_a_rollback_undoes_every_write_but_never_a_number(store: Store) -> None:
    a, _ = store.add("a", b"req", 0.0)
    store.commit()
    b, _ = store.add("b", b"req", 1.0)
    store.finish(a, DONE, 1.0)
    assert store.has_changes()
    store.rollback()
    assert not store.has_changes()
    assert store.find_request("b") is None and store.get(b) is None
    record = store.get(a)
    assert record is not None and record.status is JobStatus.RUNNING
    assert [store.count(s) for s in JobStatus] == [1, 0, 0, 0]
    assert store.add("c", b"req", 2.0) == (b + 1, True)


def test_owners_are_stored_and_pages_filter_by_owner(store: Store) -> None:
    mine, _ = store.add("a", b"req", 0.0, "KEY-A")
    theirs, _ = store.add("b", b"req", 0.0, "KEY-B")
    open_job, _ = store.add("c", b"req", 0.0)
    store.finish(mine, DONE, 1.0)
    store.commit()
    record = store.get(mine)
    assert record is not None and record.owner == "KEY-A"
    assert store.page(0, 10, "KEY-A") == [(mine, JobStatus.DONE)]
    assert store.page(0, 10, "KEY-B") == [(theirs, JobStatus.RUNNING)]
    assert store.page(0, 10, "nobody") == []
    assert [seq for seq, _ in store.page(0, 10)] == [mine, theirs, open_job]
    assert [r.owner for r in store.unfinished()] == ["KEY-B", ""]


def test_recent_lists_the_newest_jobs_and_failures_without_answers(store: Store) -> None:
    for n in range(6):
        store.add(f"r{n}", f"req{n}".encode(), float(n))
    store.finish(2, FAILED, 10.0)
    store.finish(3, DONE, 11.0)
    store.finish(5, FAILED, 12.0)
    newest = store.recent(4)
    assert [r.seq for r in newest] == [6, 5, 4, 3]
    running, done, error = JobStatus.RUNNING, JobStatus.DONE, JobStatus.ERROR
    assert [r.status for r in newest] == [running, error, running, done]
    assert all(r.answer is None for r in newest) and newest[3].job_body == b"req2"
    failures = store.recent(10, JobStatus.ERROR)
    assert [(r.seq, r.reason, r.finished_s) for r in failures] == [
        (5, "no data", 12.0),
        (2, "no data", 10.0),
    ]


def test_stored_bytes_per_key_are_kept_on_every_write_and_expiry(store: Store) -> None:
    a, _ = store.add("a", b"body-a", 0.0, "KEY")
    b, _ = store.add("b", b"body-bb", 0.0, "KEY")
    store.add("c", b"other", 0.0)
    assert store.stored_bytes("KEY") == 13 and store.stored_bytes("") == 5
    store.finish(a, DONE, 10.0, "KEY")
    store.finish(b, FAILED, 100.0, "KEY")
    store.commit()
    expected = 13 + len(DONE.answer or b"") + len("no data")
    assert store.stored_bytes("KEY") == expected and store.stored_bytes("nobody") == 0
    store.add("d", b"void", 0.0, "KEY")
    store.rollback()
    assert store.stored_bytes("KEY") == expected
    assert store.expire(finished_before_s=50.0) == 1
    store.commit()
    assert store.stored_bytes("KEY") == len(b"body-bb") + len("no data")


def test_cancel_ends_a_running_job_only_and_is_a_final_state_everywhere(store: Store) -> None:
    running, _ = store.add("a", b"req", 1.0, "KEY-A")
    done, _ = store.add("b", b"req", 1.0)
    store.finish(done, DONE, 2.0)
    store.commit()
    assert store.cancel(running, "cancelled", 3.0)
    assert not store.cancel(running, "cancelled", 4.0), "a second cancel changes nothing"
    assert not store.cancel(done, "cancelled", 4.0), "a finished job is left as it is"
    store.commit()
    record = store.get(running)
    assert record is not None
    assert (record.status, record.reason, record.finished_s) == (
        JobStatus.CANCELLED,
        "cancelled",
        3.0,
    )
    assert [store.count(s) for s in JobStatus] == [0, 1, 0, 1]
    assert store.page(0, 10, status="cancelled") == [(running, JobStatus.CANCELLED)]
    assert store.unfinished() == []
    assert [r.seq for r in store.recent(10, JobStatus.CANCELLED)] == [running]


def test_a_rolled_back_cancel_leaves_the_job_running(store: Store) -> None:
    seq, _ = store.add("a", b"req", 1.0)
    store.commit()
    assert store.cancel(seq, "deadline passed", 2.0)
    store.rollback()
    record = store.get(seq)
    assert record is not None and record.status is JobStatus.RUNNING
    assert store.count(JobStatus.CANCELLED) == 0
