"""broker.outbox: the per-peer and per-turn budgets of answers, through BrokerCore on
both stores."""

from __future__ import annotations

from typing import Any

import pytest

from broker.store import Store
from protocol import messages as m
from tests.unit.broker_harness import FP, Harness


def test_answers_per_peer_and_turn_are_capped(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.outbox.PEER_ANSWER_BYTES_PER_TURN", 1000)
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    (job,) = h.submit(1)
    h.sent()
    h.result(b"w1", job.encode(), {"x": "y" * 300})
    h.sent()
    for n in range(5):
        h.client(m.Get(job), tag=b"%d" % n)
    replies, _ = h.sent()
    kinds = [type(r.message).__name__ for r in replies]
    assert kinds == ["JobState"] * 3 + ["ErrorReply"] * 2, kinds
    h.client(m.Get(job))  # a new turn, a new budget
    assert isinstance(h.sent()[0][0].message, m.JobState)


def test_recent_and_list_replies_count_against_the_answer_budget(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RECENT is ~20 bytes and its reply up to ~100 KB: a BATCH of them must not make
    a turn's replies (or its work) grow past the per-peer budget."""
    monkeypatch.setattr("broker.outbox.PEER_ANSWER_BYTES_PER_TURN", 3000)
    h = Harness(store)
    h.submit(5)
    h.core.commit()
    h.sent()
    queries: list[int] = []
    real_recent = store.recent

    def recent(*args: Any, **kwargs: Any) -> Any:
        queries.append(1)
        return real_recent(*args, **kwargs)

    monkeypatch.setattr(store, "recent", recent)
    for n in range(50):
        h.client(m.Recent(100), tag=b"r%d" % n)
        h.client(m.ListJobs(0, 100), tag=b"l%d" % n)
    replies, _ = h.sent()
    kinds = [type(r.message).__name__ for r in replies]
    assert kinds.count("ErrorReply") > 90 and {"RecentJobs", "JobList"} <= set(kinds), kinds
    assert sum(len(m.encode(r.message, r.tag)[1]) for r in replies) < 3000 + 100 * 200
    assert len(queries) <= 12  # each RECENT queries twice; the refused ones not at all
    h.client(m.Recent(100), tag=b"next")  # a new turn, a new budget
    assert isinstance(h.sent()[0][0].message, m.RecentJobs)
