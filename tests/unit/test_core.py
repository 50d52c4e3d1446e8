"""The broker's logic without sockets: BrokerCore fed with envelopes, on a MemoryStore."""

from __future__ import annotations

import pytest

from broker.core import BrokerCore, CoreSettings
from broker.store import MemoryStore
from protocol import messages as m

FP = "f" * 64
SETTINGS = CoreSettings(
    heartbeat_interval_s=0.5, heartbeat_liveness=5, job_timeout_s=60.0, max_attempts=3,
    max_queue=100, result_ttl_s=1000.0, max_message_bytes=1 << 20,
)  # fmt: skip


class Harness:
    """A core plus helpers to speak for clients and workers and read what it sends."""

    def __init__(self, settings: CoreSettings = SETTINGS) -> None:
        self.core = BrokerCore(MemoryStore(), settings, FP)
        self.now = 1000.0
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


def test_least_recently_used_worker_gets_the_next_job() -> None:
    h = Harness()
    for w in (b"w1", b"w2", b"w3"):
        h.worker(m.Ready(1, FP), w)
    h.submit(2)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w1", b"job_id_1"), (b"w2", b"job_id_2")]
    h.result(b"w1", b"job_id_1")
    h.submit(1)  # w3 has waited longest, then w1 (just freed); w2 is busy
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w3", b"job_id_3")]


def test_credit_bounds_jobs_per_worker_and_spreads_them() -> None:
    h = Harness()
    h.worker(m.Ready(2, FP), b"w1")
    h.worker(m.Ready(2, FP), b"w2")
    h.submit(6)
    _, to_workers = h.sent()
    assert [w for w, _ in h.jobs_to(to_workers)] == [b"w1", b"w2", b"w1", b"w2"]
    assert h.core.stats(h.now)["queue_depth"] == 2


def test_results_reach_waiters_and_gets() -> None:
    h = Harness()
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


def test_submit_with_notify_is_answered_once_by_the_final_state() -> None:
    h = Harness()
    h.worker(m.Ready(1, FP), b"w1")
    h.client(m.Submit("r", "global_mean", {"question": "Q"}, notify=True), tag=b"n")
    clients, to_workers = h.sent()
    assert clients == []
    h.result(b"w1", to_workers[0].tag)
    clients, _ = h.sent()
    assert [(e.tag, e.message) for e in clients] == [
        (b"n", m.JobState("job_id_1", "done", None, FP))
    ]


def test_duplicate_request_id_gets_the_same_job() -> None:
    h = Harness()
    first = h.submit(1, ["same"])
    again = h.submit(1, ["same"])
    assert first == again == ["job_id_1"]


def test_only_the_assigned_worker_can_finish_a_job() -> None:
    h = Harness()
    h.worker(m.Ready(1, FP), b"w1")
    h.worker(m.Ready(1, FP), b"w2")
    h.submit(1)
    h.sent()
    h.result(b"w2", b"job_id_1")  # not w2's job
    assert h.core.store.count(m.JobStatus.DONE) == 0
    h.result(b"w1", b"job_id_1")
    assert h.core.store.count(m.JobStatus.DONE) == 1


def test_silent_worker_is_dropped_and_its_job_requeued() -> None:
    h = Harness()
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.now += 0.5 * 5 + 0.1
    h.worker(m.Ready(1, FP), b"w2")  # joined late, so not silent
    h.core.tick(h.now)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w2", b"job_id_1")]
    assert any(isinstance(e.message, m.Disconnect) and e.identity == b"w1" for e in to_workers)


def test_a_job_that_keeps_losing_workers_fails() -> None:
    h = Harness()
    h.submit(1)
    for n in range(3):
        worker = f"w{n}".encode()
        h.worker(m.Ready(1, FP), worker)
        h.sent()
        h.core.lose_worker(worker, "died", h.now)
    state = h.core.store.get(1)
    assert state is not None and state.status is m.JobStatus.ERROR
    assert "lost 3 times" in (state.reason or "")


def test_a_retried_job_runs_alone_so_its_neighbours_are_not_blamed() -> None:
    h = Harness()
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
    h.core.lose_worker(b"w2", "died", h.now)
    h.worker(m.Ready(2, FP), b"w3")
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w3", b"job_id_2")]
    h.result(b"w3", b"job_id_2")
    poison, innocent = h.core.store.get(1), h.core.store.get(2)
    assert poison is not None and poison.status is m.JobStatus.ERROR
    assert innocent is not None and innocent.status is m.JobStatus.DONE


def test_lease_expiry_requeues_and_the_late_answer_is_ignored() -> None:
    h = Harness()
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


def test_wrong_fingerprint_is_refused() -> None:
    h = Harness()
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
    settings: CoreSettings, prepare: str, reason: str
) -> None:
    h = Harness(settings)
    if prepare == "fill":
        h.submit(2)
    else:
        h.core.begin_shutdown("test")
    h.client(m.Submit("extra", "global_mean", {"question": "Q"}))
    clients, _ = h.sent()
    assert isinstance(clients[-1].message, m.ErrorReply)
    assert clients[-1].message.reason.startswith(reason)


def test_expired_and_invalid_ids_differ() -> None:
    h = Harness()
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.result(b"w1", b"job_id_1")
    h.now += SETTINGS.result_ttl_s + 1
    assert h.core.expire_results(h.now) == 1
    h.client(m.Get("job_id_1"))
    h.client(m.Get("job_id_2"))
    clients, _ = h.sent()
    assert [e.message for e in clients] == [
        m.ErrorReply("expired", "expired"),
        m.ErrorReply("invalid_job_id", "Invalid job_id"),
    ]


def test_shutdown_drains_then_releases_workers() -> None:
    h = Harness()
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


def test_job_list_pages_and_counts() -> None:
    h = Harness()
    h.submit(3)
    h.client(m.ListJobs(after=1, limit=1))
    h.client(m.NumJobs())
    clients, _ = h.sent()
    assert [e.message for e in clients] == [
        m.JobList([["job_id_2", "running"]], next_after=2),
        m.JobCount(3),
    ]


def test_stats_carry_latency_per_phase_and_recent_reads_the_store() -> None:
    h = Harness()
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
