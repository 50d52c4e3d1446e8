"""broker.core: BrokerCore as the shell sees it (shutdown, stats), on both stores."""

from __future__ import annotations

import dataclasses

from broker.store import Store
from protocol import config
from protocol import messages as m
from tests.unit.broker_harness import FP, SETTINGS, Harness


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
