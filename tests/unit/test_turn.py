"""broker.turn: a failed commit rolls the turn back, through BrokerCore on both
stores."""

from __future__ import annotations

import pytest

from broker.jobs import COMMIT_RETRY_MIN_S
from broker.store import StorageError, Store
from protocol import messages as m
from tests.unit.broker_harness import (
    FP,
    STORAGE_ERROR,
    Harness,
    commit_fails,
    failing,
    replies,
    suspect_job_on,
)


def test_a_failed_commit_takes_back_every_id_and_answer_of_the_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w1")
    (first,) = h.submit(1)
    h.core.commit()
    h.sent()  # job 1 to w1
    h.client(m.Wait(first), who=b"waiter", tag=b"w")
    h.result(b"w1", first.encode(), {"global_mean": 2.5})
    h.client(m.Submit("plain", "global_mean", {"question": "Q"}), tag=b"p")
    h.client(m.Submit("notify", "global_mean", {"question": "Q"}, notify=True), tag=b"n")
    h.client(m.Get(first), who=b"reader", tag=b"g")
    h.core.dispatch(h.now)
    sent_before_commit = h.core.outbox.workers  # jobs leave before the commit
    h.core.outbox.workers = []
    assert h.jobs_to([m.decode(f, routed=True) for f in sent_before_commit]) == [
        (b"w1", b"job_id_2"),
        (b"w1", b"job_id_3"),
    ]
    commit_fails(h, monkeypatch)
    clients, to_workers = h.sent()
    # No id and no answer of the failed transaction leaves; the waiter still waits.
    assert replies(clients) == {b"p": STORAGE_ERROR, b"n": STORAGE_ERROR, b"g": STORAGE_ERROR}
    assert h.jobs_to(to_workers) == []  # w1's slots stay taken by the void jobs 2 and 3
    assert h.core.store.find_request("plain") is None
    # The late answer to a void job is ignored and frees its slot; job 1 runs again,
    # once its backoff after the failed commit is over.
    h.result(b"w1", b"job_id_2")
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == []
    h.now += COMMIT_RETRY_MIN_S
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w1", first.encode())]
    # Numbers are never reused: the next job is 4, not 2.
    assert h.submit(1) == ["job_id_4"]
    h.result(b"w1", first.encode(), {"global_mean": 2.5})
    h.core.commit()
    clients, _ = h.sent()
    assert [(e.identity, e.tag, e.message) for e in clients] == [
        (b"waiter", b"w", m.JobState(first, "done", None, FP))
    ]
    assert store.count(m.JobStatus.DONE) == 1 and store.get(2) is None
    assert h.core.stats(h.now)["storage_failures"] == {"commit": 1}


def test_a_failed_insert_voids_the_transaction_and_refuses_submits_meanwhile(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(store)
    h.client(m.Submit("early", "global_mean", {"question": "Q"}), tag=b"e")
    failing(monkeypatch, store, "add")
    with pytest.raises(StorageError) as failure:
        h.client(m.Submit("late", "global_mean", {"question": "Q"}), tag=b"l")
    h.core.roll_back(failure.value, h.now)
    monkeypatch.undo()
    h.core.refuse_submits("storage failed: add: database or disk is full")
    h.client(m.Submit("meanwhile", "global_mean", {"question": "Q"}), tag=b"m")
    clients, to_workers = h.sent()
    assert [e.message.code for e in clients] == ["storage", "storage"]  # type: ignore[attr-defined]
    assert [e.tag for e in clients] == [b"e", b"m"]
    assert to_workers == [] and h.core.stats(h.now)["queue_depth"] == 0
    assert store.find_request("early") is None
    h.core.refuse_submits(None)
    assert h.submit(1, ["early"]) == ["job_id_2"]  # job_id_1 was never told: not reused


def test_a_failed_commit_takes_its_jobs_out_of_recent_replies(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(store)
    h.submit(1, ["kept"])
    h.core.commit()
    h.client(m.Submit("void", "global_mean", {"question": "Q"}), tag=b"s")
    h.client(m.Recent(10), who=b"dashboard", tag=b"r")
    commit_fails(h, monkeypatch)
    got = replies(h.sent()[0])
    # job_id_2 was never committed: no reply may name it, RECENT's listing included.
    assert got[b"s"] == STORAGE_ERROR
    recent = got[b"r"]
    assert isinstance(recent, m.RecentJobs)
    assert [job["job_id"] for job in recent.jobs] == ["job_id_1"] and recent.failures == []


# --- roles and caps -----------------------------------------------------------------


def test_a_suspect_whose_answer_is_rolled_back_is_still_a_suspect(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(store)
    suspect_job_on(h, b"w2")
    h.core.commit()
    h.worker(m.Started(), b"w2", b"job_id_1")
    h.result(b"w2", b"job_id_1")
    commit_fails(h, monkeypatch)
    h.now += COMMIT_RETRY_MIN_S  # it runs again after its backoff
    _, to_workers = h.sent()
    jobs = [(type(e.message), e.tag) for e in to_workers if isinstance(e.message, m.Job)]
    assert jobs == [(m.SuspectJob, b"job_id_1")]  # alone again, and watched
