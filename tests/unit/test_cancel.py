"""Cancel, deadlines, producers and priorities through BrokerCore, on every store."""

from __future__ import annotations

import dataclasses

import pytest

from broker.store import Store
from protocol import messages as m
from tests.unit.broker_harness import (
    ADMIN,
    ALICE,
    BOB,
    FP,
    SETTINGS,
    STORAGE_ERROR,
    Harness,
    ask,
    commit_fails,
    replies,
)

Q = {"question": "Q"}


def _submit(
    h: Harness, rid: str, who: bytes = b"c1", priority: int = 4, deadline_ms: int = 0
) -> str:
    submit = m.Submit(rid, "global_mean", Q, priority=priority, deadline_ms=deadline_ms)
    h.client(submit, who=who, tag=rid.encode())
    clients, h.core.outbox.clients = h.core.outbox.clients, []
    (reply,) = [m.decode(f, routed=True).message for f in clients]
    assert isinstance(reply, m.Submitted), reply
    return reply.job_id


def _to_workers(h: Harness) -> list[tuple[type[m.Message], bytes]]:
    """What the next dispatch sends to workers: each message's type and tag."""
    return [(type(e.message), e.tag) for e in h.sent()[1]]


def _cancel(h: Harness, job: str) -> m.Message:
    h.client(m.Cancel(job), tag=b"cancel")
    clients, _ = h.sent()
    return replies(clients)[b"cancel"]


def test_a_queued_job_cancelled_never_runs_and_its_waiter_is_told(store: Store) -> None:
    h = Harness(store)
    job = _submit(h, "r1")
    h.client(m.Wait(job), who=b"waiter", tag=b"w")
    assert _cancel(h, job) == m.JobState(job, "cancelled", "cancelled")
    h.sent()
    h.worker(m.Ready(4, FP), b"w1")
    _, to_workers = h.sent()
    assert to_workers == []
    record = store.get(1)
    assert record is not None and record.status is m.JobStatus.CANCELLED
    assert _cancel(h, job) == m.JobState(job, "cancelled", "cancelled"), "idempotent"
    assert h.core.stats(h.now)["jobs"] == {"running": 0, "done": 0, "error": 0, "cancelled": 1}


def test_a_running_job_cancelled_tells_its_worker_and_its_answer_is_dropped(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    job = _submit(h, "r1")
    h.sent()
    h.client(m.Wait(job), who=b"waiter", tag=b"w")
    h.client(m.Cancel(job), tag=b"cancel")
    clients, to_workers = h.sent()
    assert replies(clients) == {
        b"w": m.JobState(job, "cancelled", "cancelled"),
        b"cancel": m.JobState(job, "cancelled", "cancelled"),
    }
    assert [(type(e.message), e.tag) for e in to_workers] == [(m.CancelJob, job.encode())]
    _submit(h, "r2")  # c1 has nothing running: the worker's front slot (broker.pool)
    assert h.jobs_to(h.sent()[1]) == [(b"w1", b"job_id_2")]
    _submit(h, "r3")
    assert h.sent()[1] == [], "the worker's slot stays taken until it answers"
    h.result(b"w1", job.encode())  # it had started: its answer comes, and is dropped
    worker = h.core.pool.get(b"w1")
    assert worker is not None and list(worker.jobs) == [2], "the cancelled job's slot came back"
    h.result(b"w1", b"job_id_2")
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w1", b"job_id_3")], "the credit came back"
    record = store.get(1)
    assert record is not None and (record.status, record.answer) == (m.JobStatus.CANCELLED, None)


def test_a_finished_job_is_left_as_it_is(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    job = _submit(h, "r1")
    h.sent()
    h.result(b"w1", job.encode())
    h.sent()
    assert _cancel(h, job) == m.JobState(job, "done", None, FP)


def test_an_unknown_id_is_refused_and_never_cancels_the_job_that_later_gets_it(
    store: Store,
) -> None:
    h = Harness(store)
    invalid = m.ErrorReply("invalid_job_id", "Invalid job_id")
    assert _cancel(h, "job_id_1") == invalid
    assert _cancel(h, "nonsense") == invalid
    job = _submit(h, "r1")
    assert job == "job_id_1"
    h.client(m.Get(job), tag=b"g")
    assert replies(h.sent()[0])[b"g"] == m.JobState(job, "running")


def test_only_the_owner_or_an_admin_cancels_and_another_key_sees_an_unknown_id(
    store: Store,
) -> None:
    h = Harness(store)
    h.core.on_client(m.Envelope(m.Submit("r1", "global_mean", Q), b"s", identity=b"c1"),
                     h.now, ALICE)  # fmt: skip
    h.sent()
    assert ask(h, m.Cancel("job_id_1"), BOB) == m.ErrorReply("invalid_job_id", "Invalid job_id")
    record = store.get(1)
    assert record is not None and record.status is m.JobStatus.RUNNING
    assert ask(h, m.Cancel("job_id_1"), ADMIN) == m.JobState("job_id_1", "cancelled", "cancelled")
    assert ask(h, m.Cancel("job_id_1"), BOB) == m.ErrorReply("invalid_job_id", "Invalid job_id")


def test_a_job_not_started_by_its_deadline_ends_cancelled_and_never_runs(store: Store) -> None:
    h = Harness(store)
    late = _submit(h, "r1", deadline_ms=500)
    soon = _submit(h, "r2", deadline_ms=2000)
    h.client(m.Wait(late), who=b"waiter", tag=b"w")
    h.now += 0.6
    clients, _ = h.sent()
    assert replies(clients) == {b"w": m.JobState(late, "cancelled", "deadline passed")}
    h.worker(m.Ready(4, FP), b"w1")
    _, to_workers = h.sent()
    assert [(e.tag, e.message) for e in to_workers] == [
        (soon.encode(), m.Job("global_mean", Q, deadline_ms=1400))  # the time left
    ]
    h.worker(m.Result("cancelled", FP, "deadline passed"), b"w1", soon.encode())
    h.sent()
    record = store.get(2)
    assert record is not None and (record.status, record.reason) == (
        m.JobStatus.CANCELLED,
        "deadline passed",
    )


def test_one_connections_job_runs_before_anothers_backlog_and_priorities_stay_within(
    store: Store,
) -> None:
    h = Harness(store)
    for i in range(5):
        _submit(h, f"a{i}", who=b"A", priority=0)
    _submit(h, "b0", who=b"B", priority=9)
    h.worker(m.Ready(2, FP), b"w1")
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w1", b"job_id_1"), (b"w1", b"job_id_6")]
    producers = h.core.stats(h.now)["producers"]
    assert isinstance(producers, list)
    assert [(p["queued"], p["running"]) for p in producers] == [(4, 1), (0, 1)]
    assert all(str(p["producer"]).startswith("conn-") for p in producers)


def test_a_cancel_rolled_back_leaves_the_running_job_to_its_worker(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    job = _submit(h, "r1")
    h.sent()
    h.core.commit()
    h.worker(m.Ready(1, FP), b"w2")
    h.client(m.Cancel(job), tag=b"cancel")
    commit_fails(h, monkeypatch)
    clients, to_workers = h.sent()
    assert replies(clients)[b"cancel"] == STORAGE_ERROR
    assert h.jobs_to(to_workers) == [], "w1 still holds it: it is not sent again"
    h.now += 60  # past any backoff
    assert h.jobs_to(h.sent()[1]) == []
    h.worker(m.Result("cancelled", FP, "cancelled"), b"w1", job.encode())  # it had not started
    h.sent()
    record = store.get(1)
    assert record is not None and record.status is m.JobStatus.CANCELLED


def test_keys_are_producers_served_by_their_weights_and_named_in_stats(store: Store) -> None:
    settings = dataclasses.replace(SETTINGS, producer_weights=(("alice", 2.0),))
    h = Harness(store, settings)
    for n in range(6):
        for caller in (ALICE, BOB):
            submit = m.Submit(f"{caller.name}{n}", "global_mean", Q)
            h.core.on_client(m.Envelope(submit, b"s", identity=b"c1"), h.now, caller)
    h.worker(m.Ready(6, FP), b"w1")
    _, to_workers = h.sent()
    owners = [
        h.core.jobs.owner_of(m.job_seq(tag.decode()) or 0) for _, tag in h.jobs_to(to_workers)
    ]
    newcomers = [ALICE.key, BOB.key]  # each key's first job: it had nothing running
    assert owners == [*newcomers, ALICE.key, ALICE.key, BOB.key, ALICE.key], "then 2:1"
    producers = h.core.stats(h.now)["producers"]
    rows = sorted((p["producer"], p["weight"], p["queued"]) for p in producers)  # type: ignore[attr-defined]
    assert rows == [("alice", 2.0, 2), ("bob", 1.0, 4)]


def test_a_lone_job_goes_to_a_busy_worker_as_a_front_job(store: Store) -> None:
    """A producer with nothing else running (a one-call) gets FRONT_JOB on a worker that
    holds a bulk producer's jobs, so that it runs before them; a job of a producer that
    has another running stays a plain job."""
    h = Harness(store)
    h.worker(m.Ready(4, FP), b"w1")
    for n in range(3):
        _submit(h, f"bulk{n}", who=b"bulk")
    h.sent()
    _submit(h, "one", who=b"person")
    _, to_workers = h.sent()
    assert [(type(e.message), e.tag) for e in to_workers] == [(m.FrontJob, b"job_id_4")]
    _submit(h, "two", who=b"person")
    assert h.sent()[1] == [], "the worker is full"
    h.result(b"w1", b"job_id_1")
    _, to_workers = h.sent()
    assert [(type(e.message), e.tag) for e in to_workers] == [(m.Job, b"job_id_5")], (
        "the person's first job still runs: the second waits its turn on the worker"
    )


def test_a_newcomers_job_takes_a_full_workers_front_slot_at_once(store: Store) -> None:
    """A producer with nothing running gets its job sent at once, into the front slot
    of a worker whose credit a bulk producer holds; the slot is one job, no more."""
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w1")
    for n in range(4):
        _submit(h, f"bulk{n}", who=b"bulk")
    assert h.jobs_to(h.sent()[1]) == [(b"w1", b"job_id_1"), (b"w1", b"job_id_2")]
    _submit(h, "one", who=b"person")
    assert _to_workers(h) == [(m.FrontJob, b"job_id_5")]
    _submit(h, "other", who=b"another person")
    _submit(h, "two", who=b"person")
    assert _to_workers(h) == [], "the front slot is taken, and the person has a job running"
    h.result(b"w1", b"job_id_1")
    assert _to_workers(h) == [(m.FrontJob, b"job_id_6")], (
        "the worker holds its credit (2 and 5): its front slot takes the other newcomer"
    )
    h.result(b"w1", b"job_id_5")
    assert _to_workers(h) == [], "its credit is taken again (2 and 6)"


def test_a_lone_job_on_an_idle_worker_is_a_plain_job(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(4, FP), b"w1")
    _submit(h, "one", who=b"person")
    _, to_workers = h.sent()
    assert [(type(e.message), e.tag) for e in to_workers] == [(m.Job, b"job_id_1")]
