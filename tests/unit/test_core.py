"""The broker's logic without sockets: BrokerCore fed with envelopes, on both stores."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.access import NOBODY, OPEN, Caller, Role
from broker.core import BrokerCore, CoreSettings
from broker.jobs import COMMIT_RETRY_MIN_S
from broker.store import StorageError, Store
from protocol import config
from protocol import messages as m

FP = "f" * 64
SETTINGS = CoreSettings(
    heartbeat_interval_s=0.5, heartbeat_liveness=5, job_timeout_s=60.0, max_attempts=3,
    max_queue=100, result_ttl_s=1000.0, max_message_bytes=1 << 20,
)  # fmt: skip


class Harness:
    """A core plus helpers to speak for clients and workers and read what it sends."""

    def __init__(self, store: Store, settings: CoreSettings = SETTINGS) -> None:
        self.core = BrokerCore(store, settings, FP)
        self.now = 1000.0  # one fake clock for both: timers and the store's dates
        self.core.wall_clock = lambda: self.now
        self.requests = 0

    def client(self, message: m.Message, who: bytes = b"c1", tag: bytes = b"1") -> None:
        self.core.on_client(m.Envelope(message, tag=tag, identity=who), self.now)

    def worker(
        self, message: m.Message, who: bytes, tag: bytes = b"", payload: bytes | None = None
    ) -> None:
        self.core.on_worker(m.Envelope(message, tag=tag, payload=payload, identity=who), self.now)

    def sent(self) -> tuple[list[m.Envelope], list[m.Envelope]]:
        self.core.dispatch(self.now)
        clients, workers = self.core.outbox.take()
        return [m.decode(f, routed=True) for f in clients], [
            m.decode(f, routed=True) for f in workers
        ]

    def jobs_to(self, worker_messages: list[m.Envelope]) -> list[tuple[bytes, bytes]]:
        return [(e.identity or b"", e.tag) for e in worker_messages if isinstance(e.message, m.Job)]

    def submit(self, n: int, request_ids: list[str] | None = None) -> list[str]:
        for i in range(n):
            self.requests += 1
            request = request_ids[i] if request_ids else f"r{self.requests}"
            self.client(m.Submit(request, "global_mean", {"question": "Q"}), tag=str(i).encode())
        replies, self.core.outbox.clients = self.core.outbox.clients, []  # leave jobs unsent
        clients = [m.decode(f, routed=True).message for f in replies]
        return [msg.job_id for msg in clients if isinstance(msg, m.Submitted)]

    def result(self, who: bytes, job: bytes, answer: object = None) -> None:
        self.worker(m.Result("done", FP), who, job, m.pack(answer or {"global_mean": 1.0}))


def test_least_recently_used_worker_gets_the_next_job(store: Store) -> None:
    h = Harness(store)
    for w in (b"w1", b"w2", b"w3"):
        h.worker(m.Ready(1, FP), w)
    h.submit(2)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w1", b"job_id_1"), (b"w2", b"job_id_2")]
    h.result(b"w1", b"job_id_1")
    h.submit(1)  # w3 has waited longest, then w1 (just freed); w2 is busy
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w3", b"job_id_3")]


def test_credit_bounds_jobs_per_worker_and_spreads_them(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w1")
    h.worker(m.Ready(2, FP), b"w2")
    h.submit(6)
    _, to_workers = h.sent()
    assert [w for w, _ in h.jobs_to(to_workers)] == [b"w1", b"w2", b"w1", b"w2"]
    assert h.core.stats(h.now)["queue_depth"] == 2


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


def test_only_the_assigned_worker_can_finish_a_job(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.worker(m.Ready(1, FP), b"w2")
    h.submit(1)
    h.sent()
    h.result(b"w2", b"job_id_1")  # not w2's job
    assert h.core.store.count(m.JobStatus.DONE) == 0
    h.result(b"w1", b"job_id_1")
    assert h.core.store.count(m.JobStatus.DONE) == 1


def test_silent_worker_is_dropped_and_its_job_requeued(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.now += 0.5 * 5 + 0.1
    h.worker(m.Ready(1, FP), b"w2")  # joined late, so not silent
    h.core.tick(h.now)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w2", b"job_id_1")]
    assert any(isinstance(e.message, m.Disconnect) and e.identity == b"w1" for e in to_workers)


def test_a_job_that_keeps_losing_workers_fails(store: Store) -> None:
    h = Harness(store)
    h.submit(1)
    for n in range(3):
        worker = f"w{n}".encode()
        h.worker(m.Ready(1, FP), worker)
        _, to_workers = h.sent()
        kinds = [type(e.message) for e in to_workers if isinstance(e.message, m.Job)]
        assert kinds == [m.SuspectJob if n == 2 else m.Job]  # a suspect after two losses
        if n == 2:
            h.worker(m.Started(), worker, b"job_id_1")  # it was running when its worker died
        h.core.lose_worker(worker, "died", h.now)
    state = h.core.store.get(1)
    assert state is not None and state.status is m.JobStatus.ERROR
    assert "lost 3 times" in (state.reason or "")


def suspect_job_on(h: Harness, worker: bytes) -> None:
    """Lose two workers under job 1, then register `worker`, which gets it as a suspect."""
    h.submit(1)
    for dead in (b"d0", b"d1"):
        h.worker(m.Ready(1, FP), dead)
        h.sent()
        h.core.lose_worker(dead, "died", h.now)
    h.worker(m.Ready(1, FP), worker)
    _, to_workers = h.sent()
    jobs = [(type(e.message), e.identity) for e in to_workers if isinstance(e.message, m.Job)]
    assert jobs == [(m.SuspectJob, worker)]


def test_a_suspect_is_not_blamed_for_a_death_before_its_start(store: Store) -> None:
    """A worker serving several brokers queues a suspect behind their jobs: a death
    while those ran is not the suspect's doing (the 3-broker soak lost jobs so)."""
    h = Harness(store)
    suspect_job_on(h, b"w2")
    h.core.lose_worker(b"w2", "died", h.now)  # never said STARTED
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.RUNNING
    h.worker(m.Ready(1, FP), b"w3")
    _, to_workers = h.sent()
    jobs = [(type(e.message), e.identity) for e in to_workers if isinstance(e.message, m.Job)]
    assert jobs == [(m.SuspectJob, b"w3")]
    h.worker(m.Started(), b"w3", b"job_id_1")
    h.core.lose_worker(b"w3", "died", h.now)
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.ERROR
    assert "lost 4 times" in (record.reason or "")


def test_the_broker_notes_a_started_suspect_and_its_lease_starts_then(store: Store) -> None:
    h = Harness(store)
    suspect_job_on(h, b"w2")
    h.now += SETTINGS.job_timeout_s - 1  # queued behind other brokers' jobs this long
    h.worker(m.Started(), b"w2", b"job_id_1")
    _, to_workers = h.sent()
    assert [(e.message, e.tag) for e in to_workers] == [(m.Started(), b"job_id_1")]
    h.now += 2
    h.worker(m.Heartbeat(), b"w2")
    h.core.tick(h.now)
    assert b"w2" in h.core.pool  # the lease counts from STARTED
    h.result(b"w2", b"job_id_1")
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.DONE


def test_started_for_a_job_that_is_no_suspect_gets_no_answer(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.worker(m.Started(), b"w1", b"job_id_1")  # an ordinary job
    h.worker(m.Started(), b"w1", b"job_id_99")  # not its job
    assert h.sent() == ([], [])
    worker = h.core.pool.get(b"w1")
    assert worker is not None and worker.started == set()


def test_a_suspect_that_never_says_started_fails_after_three_times_the_limit(
    store: Store,
) -> None:
    h = Harness(store)
    suspect_job_on(h, b"w2")
    limit = SETTINGS.max_attempts * 3
    for n in range(2, limit):
        record = h.core.store.get(1)
        assert record is not None and record.status is m.JobStatus.RUNNING
        worker = f"w{n}".encode()
        if n > 2:
            h.worker(m.Ready(1, FP), worker)
            h.sent()
        h.core.lose_worker(worker, "died", h.now)
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.ERROR
    assert f"lost {limit} times" in (record.reason or "")


def test_a_retried_job_runs_alone_so_its_neighbours_are_not_blamed(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w0")
    h.submit(2)  # job 1 is the poison, job 2 an innocent neighbour on the same worker
    h.sent()
    h.core.lose_worker(b"w0", "died", h.now)
    h.worker(m.Ready(2, FP), b"w1")  # after one loss, retried jobs fail over at once
    _, to_workers = h.sent()
    assert sorted(h.jobs_to(to_workers)) == [(b"w1", b"job_id_1"), (b"w1", b"job_id_2")]
    h.core.lose_worker(b"w1", "died", h.now)
    h.worker(m.Ready(2, FP), b"w2")  # after two, each runs alone
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w2", b"job_id_1")]
    h.worker(m.Started(), b"w2", b"job_id_1")
    h.core.lose_worker(b"w2", "died", h.now)
    h.worker(m.Ready(2, FP), b"w3")
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w3", b"job_id_2")]
    h.result(b"w3", b"job_id_2")
    poison, innocent = h.core.store.get(1), h.core.store.get(2)
    assert poison is not None and poison.status is m.JobStatus.ERROR
    assert innocent is not None and innocent.status is m.JobStatus.DONE


def test_lease_expiry_requeues_and_the_late_answer_is_ignored(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"slow")
    h.submit(1)
    h.sent()
    h.now += SETTINGS.job_timeout_s + 1
    h.worker(m.Heartbeat(), b"slow")  # alive, but stuck in the job
    h.worker(m.Ready(1, FP), b"fast")
    h.core.tick(h.now)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"fast", b"job_id_1")]
    h.result(b"slow", b"job_id_1", {"global_mean": 666.0})
    h.result(b"fast", b"job_id_1", {"global_mean": 1.0})
    record = h.core.store.get(1)
    assert record is not None and m.unpack(record.answer or b"") == {"global_mean": 1.0}


def test_wrong_fingerprint_is_refused(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, "0" * 64), b"odd")
    _, to_workers = h.sent()
    assert [e.message for e in to_workers] == [m.Disconnect("data fingerprint mismatch")]
    assert len(h.core.pool) == 0


@pytest.mark.parametrize(
    ("settings", "prepare", "reason"),
    [
        (SETTINGS.__class__(**{**SETTINGS.__dict__, "max_queue": 2}), "fill", "queue full"),
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


def test_shutdown_drains_then_releases_workers(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.client(m.Shutdown())
    assert not h.core.drained()
    h.result(b"w1", b"job_id_1")
    assert h.core.drained()
    h.core.release_workers(h.now)
    _, to_workers = h.sent()
    assert [e.message for e in to_workers] == [m.Disconnect("shutdown")]


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


def failing(monkeypatch: pytest.MonkeyPatch, store: Store, method: str) -> None:
    """Make `store.<method>` fail as a full disk does, until the monkeypatch is undone."""

    def full(*_args: object) -> None:
        raise StorageError(method, "database or disk is full")

    monkeypatch.setattr(store, method, full)


def commit_fails(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn's commit fails as on a full disk, and the core rolls back."""
    failing(monkeypatch, h.core.store, "commit")
    with pytest.raises(StorageError) as failure:
        h.core.commit()
    h.core.roll_back(failure.value, h.now)
    monkeypatch.undo()


def replies(clients: list[m.Envelope]) -> dict[bytes, m.Message]:
    return {e.tag: e.message for e in clients}


STORAGE_ERROR = m.ErrorReply("storage", "storage failed: commit: database or disk is full")


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

ALICE = Caller(Role.CLIENT, "A" * 40, "alice")
BOB = Caller(Role.CLIENT, "B" * 40, "bob")
ADMIN = Caller(Role.ADMIN, "C" * 40, "ops")


def ask(h: Harness, message: m.Message, caller: Caller, who: bytes = b"c1") -> m.Message:
    """One request from `caller`; its one reply."""
    h.core.on_client(m.Envelope(message, tag=b"t", identity=who), h.now, caller)
    (reply,) = h.sent()[0]
    return reply.message


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


WORKER = Caller(Role.WORKER, "D" * 40, "w1")


def test_the_worker_endpoint_takes_worker_keys_only_on_every_message(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Even if the ZAP handler admitted a stranger, it gets neither jobs nor data."""
    h = Harness(store)
    for n, caller in enumerate((ALICE, ADMIN, NOBODY)):
        for message in (m.Ready(1, FP), m.FetchData(0, 10), m.Result("done", FP)):
            h.core.on_worker(m.Envelope(message, tag=b"job_id_1", identity=b"x%d" % n), h.now,
                             caller)  # fmt: skip
    h.submit(1)
    _, to_workers = h.sent()
    assert {type(e.message) for e in to_workers} == {m.Disconnect}, to_workers
    assert all(e.message.reason.startswith("forbidden") for e in to_workers)  # type: ignore[attr-defined]
    assert h.core.stats(h.now)["workers"] == [] and h.core.stats(h.now)["queue_depth"] == 1
    assert "refused Ready on the worker endpoint from client key alice" in caplog.text
    for n, caller in enumerate((WORKER, OPEN)):
        h.core.on_worker(m.Envelope(m.Ready(1, FP), identity=b"w%d" % n), h.now, caller)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w0", b"job_id_1")]
    refused = ask(h, m.Ping(), WORKER)  # and a worker key may not ask on the client endpoint
    assert isinstance(refused, m.ErrorReply) and refused.code == "forbidden"


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


def test_a_large_job_or_request_id_is_refused_and_credit_is_capped(store: Store) -> None:
    h = Harness(store)
    big = ask(h, m.Submit("r", "global_mean", {"question": "x" * m.MAX_JOB_BYTES}), ALICE)
    long_id = ask(h, m.Submit("r" * 129, "global_mean", {"question": "Q"}), ALICE)
    assert [big.code, long_id.code] == ["too_large", "too_large"]  # type: ignore[attr-defined]
    h.worker(m.Ready(10**6, FP), b"w1")
    assert h.core.stats(h.now)["workers"][0]["credit"] == m.MAX_WORKER_CREDIT  # type: ignore[index]


def test_an_unreadable_result_from_the_holder_fails_its_job_only(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    (job,) = h.submit(1)
    h.sent()
    fail = h.core.fail_unreadable_result
    assert not fail(b"w2", job.encode(), "too_large: too big", h.now)  # not its job
    assert fail(b"w1", job.encode(), "too_large: too big", h.now)
    state = ask(h, m.Get(job), ADMIN)
    assert state == m.JobState(job, "error", "too_large: too big")
    assert h.core.pool.get(b"w1") is not None


def test_stats_carry_latency_per_phase_and_recent_reads_the_store(store: Store) -> None:
    h = Harness(store)
    job, failing = h.submit(2)
    h.now += 0.003  # queued 3 ms
    h.worker(m.Ready(2, FP), b"w1")
    h.sent()
    h.now += 0.02  # computed 20 ms
    h.result(b"w1", job.encode())
    h.worker(m.Result("error", FP, "no data"), b"w1", failing.encode())
    h.sent()
    h.client(m.Stats(), tag=b"s")
    h.client(m.Recent(5), tag=b"r")
    stats_reply, recent_reply = (e.message for e in h.sent()[0])
    assert isinstance(stats_reply, m.StatsReply) and isinstance(recent_reply, m.RecentJobs)
    latency = stats_reply.stats["latency"]["global_mean"]
    assert {phase: h["count"] for phase, h in latency.items()} == {
        "queue_wait": 2, "compute": 2, "end_to_end": 2,
    }  # fmt: skip
    assert abs(latency["compute"]["sum_s"] - 0.04) < 1e-6
    assert [(j["job_id"], j["status"]) for j in recent_reply.jobs] == [
        (failing, "error"), (job, "done"),
    ]  # fmt: skip
    assert recent_reply.jobs[1]["params"] == {"question": "Q"}
    assert [(j["job_id"], j["reason"]) for j in recent_reply.failures] == [(failing, "no data")]
    assert stats_reply.stats["workers"][0]["last_seen_s_ago"] == 0.0


def test_what_a_worker_sent_is_escaped_in_the_log_lines_about_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(store)
    h.core.fingerprint = None  # the first worker sets it, unless it is not text
    forged = "fp\n2026-01-01T00:00:00.000Z INFO    lss.broker[1] forged \x1b[2J"
    with caplog.at_level("DEBUG", logger="lss.broker"):
        h.worker(m.Ready(1, forged), b"w0")
        h.worker(m.Ready(1, FP), b"w1")
        (job,) = h.submit(1)
        h.sent()
        h.worker(m.Result("error", FP, reason=forged), b"w1", job.encode())
    lines = [record.getMessage() for record in caplog.records]
    assert h.core.fingerprint == FP and b"w0" not in h.core.pool
    assert sum("fp\\n2026" in line for line in lines) >= 1, lines  # the refused READY
    assert sum("forged" in line for line in lines) >= 1, lines  # the RESULT's reason
    assert not [line for line in lines if "\n" in line or "\x1b" in line], lines


def test_a_repeated_started_does_not_stretch_the_lease(store: Store) -> None:
    h = Harness(store)
    suspect_job_on(h, b"w2")
    h.worker(m.Started(), b"w2", b"job_id_1")
    h.now += SETTINGS.job_timeout_s - 1
    h.worker(m.Started(), b"w2", b"job_id_1")  # again, to keep the job longer
    h.now += 2
    h.worker(m.Heartbeat(), b"w2")
    h.core.tick(h.now)
    assert b"w2" not in h.core.pool  # hung in its job: lost, and the job blamed
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.ERROR


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


def test_an_unreadable_result_for_a_job_this_broker_gave_up_is_ignored(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.core.forget_jobs()  # deposed: another broker runs job 1 now
    assert not h.core.fail_unreadable_result(b"w1", b"job_id_1", "oversize", h.now)
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.RUNNING


def test_a_ready_past_max_workers_is_disconnected_with_the_reason(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(store, dataclasses.replace(SETTINGS, max_workers=2))
    with caplog.at_level("WARNING", logger="lss.broker"):
        for worker in (b"w1", b"w2", b"w3", b"w4"):
            h.worker(m.Ready(1, FP, pid=7, host="h"), worker)
    h.worker(m.Ready(1, FP), b"w1")  # a known worker may register again
    refused = [e for e in h.sent()[1] if isinstance(e.message, m.Disconnect)]
    why = "too many workers: this broker registers at most 2 (LSS_MAX_WORKERS)"
    assert [(e.identity, e.message) for e in refused] == [
        (b"w3", m.Disconnect(why)), (b"w4", m.Disconnect(why)),
    ]  # fmt: skip
    assert [w.identity for w in h.core.pool.all()] == [b"w2", b"w1"]
    lines = [r.getMessage() for r in caplog.records if "registered already" in r.getMessage()]
    assert lines == [
        f"worker {w} (pid 7 on h) refused: 2 workers registered already (LSS_MAX_WORKERS)"
        for w in ("w3", "w4")
    ]


def test_a_stats_reply_with_more_workers_than_it_lists_still_decodes(store: Store) -> None:
    many = m.MAX_STATS_WORKERS + 10
    h = Harness(store, dataclasses.replace(SETTINGS, max_workers=many))
    h.core.fingerprint = None  # the first worker's, at its longest
    fingerprint = "\U0001f600" * m.MAX_REASON_CHARS
    for n in range(many):  # each names itself and its host at their longest
        h.worker(m.Ready(1, fingerprint, host="\U0001f600" * m.MAX_REASON_CHARS), b"%0255d" % n)
    h.sent()
    h.client(m.Stats(), tag=b"s")
    h.core.dispatch(h.now)
    (frames,) = h.core.outbox.take()[0]
    assert sum(map(len, frames)) < 2 * config.MAX_MESSAGE_BYTES  # a client reads 4x
    reply = m.decode(frames, routed=True).message
    assert isinstance(reply, m.StatsReply)
    assert len(reply.stats["workers"]) == m.MAX_STATS_WORKERS
    assert reply.stats["workers_registered"] == many
