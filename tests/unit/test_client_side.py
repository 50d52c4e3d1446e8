"""broker.client_side: submits, reads, waits, listings and who may see a job, through
BrokerCore on both stores."""

from __future__ import annotations

import pytest

from broker.core import CoreSettings
from broker.store import Store
from protocol import messages as m
from tests.unit.broker_harness import ADMIN, ALICE, BOB, FP, SETTINGS, Harness, ask


def test_results_reach_waiters_and_gets(store: Store) -> None:
    h = Harness(store)
    (job,) = h.submit(1)
    h.client(m.Wait(job), who=b"waiter", tag=b"w")
    h.client(m.Get(job), who=b"reader", tag=b"g")
    clients, _ = h.sent()
    assert [e.message for e in clients] == [m.JobState(job, "running")]
    h.worker(m.Ready(1, FP), b"w1")
    h.sent()
    h.result(b"w1", job.encode(), {"global_mean": 2.5})
    clients, _ = h.sent()
    assert [(e.identity, e.message.status) for e in clients] == [(b"waiter", "done")]  # type: ignore[attr-defined]
    assert m.unpack(clients[0].payload or b"") == {"global_mean": 2.5}


def test_submit_with_notify_is_answered_once_by_the_final_state(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.client(m.Submit("r", "global_mean", {"question": "Q"}, notify=True), tag=b"n")
    clients, to_workers = h.sent()
    assert clients == []
    h.result(b"w1", to_workers[0].tag)
    clients, _ = h.sent()
    assert [(e.tag, e.message) for e in clients] == [
        (b"n", m.JobState("job_id_1", "done", None, FP))
    ]


def test_duplicate_request_id_gets_the_same_job(store: Store) -> None:
    h = Harness(store)
    first = h.submit(1, ["same"])
    again = h.submit(1, ["same"])
    assert first == again == ["job_id_1"]


@pytest.mark.parametrize(
    ("settings", "prepare", "reason"),
    [
        (
            SETTINGS.__class__(**{**SETTINGS.__dict__, "max_queue": 2, "producer_reserve": 2}),
            "fill",
            "queue full",
        ),
        (SETTINGS, "shutdown", "shutting down"),
    ],
)
def test_submits_refused_when_full_or_shutting_down(
    store: Store, settings: CoreSettings, prepare: str, reason: str
) -> None:
    h = Harness(store, settings)
    if prepare == "fill":
        h.submit(2)
    else:
        h.core.begin_shutdown("test")
    h.client(m.Submit("extra", "global_mean", {"question": "Q"}))
    clients, _ = h.sent()
    assert isinstance(clients[-1].message, m.ErrorReply)
    assert clients[-1].message.reason.startswith(reason)


def test_expired_and_invalid_ids_differ(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.result(b"w1", b"job_id_1")
    h.now += SETTINGS.result_ttl_s + 1
    assert h.core.expire_results() == 1
    h.client(m.Get("job_id_1"))
    h.client(m.Get("job_id_2"))
    clients, _ = h.sent()
    assert [e.message for e in clients] == [
        m.ErrorReply("expired", "expired"),
        m.ErrorReply("invalid_job_id", "Invalid job_id"),
    ]


def test_job_list_pages_and_counts(store: Store) -> None:
    h = Harness(store)
    h.submit(3)
    h.client(m.ListJobs(after=1, limit=1))
    h.client(m.NumJobs())
    clients, _ = h.sent()
    assert [e.message for e in clients] == [
        m.JobList([["job_id_2", "running"]], next_after=2),
        m.JobCount(3),
    ]


# --- storage failures (docs/protocol.md, "Durability") ---------------------------------


def test_a_client_key_sees_only_its_own_jobs_and_an_admin_all(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w1")
    mine = ask(h, m.Submit("ra", "global_mean", {"question": "Q"}), ALICE)
    theirs = ask(h, m.Submit("rb", "global_mean", {"question": "Q"}), BOB)
    assert isinstance(mine, m.Submitted) and isinstance(theirs, m.Submitted)
    unknown = ask(h, m.Get("job_id_99"), ALICE)
    assert unknown == m.ErrorReply("invalid_job_id", "Invalid job_id")
    for read in (m.Get(theirs.job_id), m.Wait(theirs.job_id)):
        assert ask(h, read, ALICE) == unknown  # running
    h.result(b"w1", theirs.job_id.encode())
    h.sent()
    assert ask(h, m.Get(theirs.job_id), ALICE) == unknown  # done
    assert ask(h, m.ListJobs(), ALICE) == m.JobList([[mine.job_id, "running"]])
    assert ask(h, m.NumJobs(), ALICE) == m.JobCount(1) and ask(h, m.NumJobs(), BOB) == m.JobCount(0)
    assert ask(h, m.ListJobs(), ADMIN) == m.JobList(
        [[mine.job_id, "running"], [theirs.job_id, "done"]]
    )
    stolen = ask(h, m.Submit("rb", "global_mean", {"question": "Q"}), ALICE)
    assert isinstance(stolen, m.ErrorReply) and stolen.code == "forbidden"


def test_only_admins_and_open_peers_may_shut_down(store: Store) -> None:
    h = Harness(store)
    refused = ask(h, m.Shutdown(), ALICE)
    assert isinstance(refused, m.ErrorReply) and refused.code == "forbidden"
    assert not h.core.shutting_down
    assert isinstance(ask(h, m.Shutdown(), ADMIN), m.ShuttingDown) and h.core.shutting_down


def test_waiters_per_peer_are_capped(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.state.MAX_WAITERS_PER_PEER", 3)
    h = Harness(store)
    (job,) = h.submit(1)
    for n in range(5):
        h.client(m.Wait(job), tag=b"%d" % n)
    replies, _ = h.sent()
    assert [r.message.code for r in replies if isinstance(r.message, m.ErrorReply)] == [
        "over_limit", "over_limit"
    ]  # fmt: skip
    assert all("3 per peer" in r.message.reason for r in replies)  # type: ignore[attr-defined]
    h.client(m.Wait(job), who=b"c2")  # another peer has its own share
    assert h.sent()[0] == [] and h.core.stats(h.now)["waiters"] == 4


def test_peers_filling_every_wait_lock_no_one_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.state.MAX_WAITERS", 4)
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    stuck, job = h.submit(2)  # w1 runs `stuck`; `job` waits for w1
    h.sent()
    for n in range(5):  # one peer fills the total, and a fifth wait is refused
        h.client(m.Wait(stuck), who=b"hog", tag=b"%d" % n)
    (refused,) = h.sent()[0]
    assert refused.tag == b"4" and "4 in all" in refused.message.reason  # type: ignore[attr-defined]
    h.client(m.Wait(job), who=b"c2", tag=b"mine")
    (displaced,) = h.sent()[0]  # the hog's oldest wait made room
    assert (displaced.identity, displaced.tag) == (b"hog", b"0")
    assert displaced.message.code == "over_limit"  # type: ignore[attr-defined]
    assert "held the most" in displaced.message.reason  # type: ignore[attr-defined]
    h.result(b"w1", stuck.encode())
    answered, _ = h.sent()
    assert sorted(e.tag for e in answered if isinstance(e.message, m.JobState)) == [
        b"1", b"2", b"3"
    ]  # fmt: skip
    h.result(b"w1", job.encode())
    (mine,) = h.sent()[0]
    assert (mine.identity, mine.tag, mine.message.status) == (b"c2", b"mine", "done")  # type: ignore[attr-defined]
    assert h.core.stats(h.now)["waiters"] == 0
