"""Producers, priorities, deadlines and cancel on real processes (issue 19).

A raw DEALER speaks for each producer (one connection, one producer), so that these
tests need nothing of the client library but the wire: a cancelled queued job never
runs; a running one's waiter is told at once and its late answer is dropped; a job
whose deadline passes behind a backlog ends `cancelled`; one connection's job runs
before another's backlog; and, on PostgreSQL, a broker cancels another broker's job.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bench.harness import Service
from bench.service import wait_until
from protocol import messages as m

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"


class Peer:
    """One client connection (one producer) speaking the wire protocol."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.replies: dict[bytes, m.Message] = {}
        self._tags = itertools.count(1)

    def send(self, message: m.Message) -> bytes:
        tag = str(next(self._tags)).encode()
        self.sock.send_multipart(m.encode(message, tag))
        return tag

    def reply(self, tag: bytes, timeout_s: float = 10.0) -> m.Message:
        until = time.monotonic() + timeout_s
        while tag not in self.replies:
            left_ms = int((until - time.monotonic()) * 1000)
            assert left_ms > 0 and self.sock.poll(left_ms), f"no reply to {tag!r}"
            envelopes, errors = m.decode_all(self.sock.recv_multipart())
            assert not errors
            self.replies.update((env.tag, env.message) for env in envelopes)
        return self.replies.pop(tag)

    def ask(self, message: m.Message, timeout_s: float = 10.0) -> m.Message:
        return self.reply(self.send(message), timeout_s)

    def stats(self) -> dict[str, Any]:
        reply = self.ask(m.Stats())
        assert isinstance(reply, m.StatsReply), reply
        return reply.stats

    def submit(self, statistic: str, params: dict[str, Any], **fields: Any) -> str:
        reply = self.ask(m.Submit(f"r{time.monotonic_ns()}", statistic, params, **fields))
        assert isinstance(reply, m.Submitted), reply
        return reply.job_id


@pytest.fixture
def peers() -> Iterator[Callable[[Service], Peer]]:
    with zmq.Context() as context:
        made: list[Peer] = []

        def make(service: Service) -> Peer:
            made.append(Peer(context, service.client_endpoint))
            return made[-1]

        yield make
        for peer in made:
            peer.sock.close(linger=0)


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory, standin_csv: Path) -> Iterator[Service]:
    """A broker with one worker holding one job at a time (the rest queue at the broker),
    one per module: each test leaves it idle."""
    with Service(tmp_path_factory.mktemp("one_slot") / "state", standin_csv, workers=0) as svc:
        svc.start_workers(1, diagnostics=True, credit=1)
        yield svc


def _status(peer: Peer, job: str) -> m.Message:
    return peer.ask(m.Get(job))


def _cancelled(job: str) -> m.JobState:
    return m.JobState(job, "cancelled", "cancelled")


def _cancel_while_running(holder: Peer, canceller: Peer, waiter: Peer, within_s: float) -> str:
    """A 2 s job submitted through `holder`, cancelled through `canceller` once it runs;
    `waiter`, waiting for it, is told within `within_s`. Returns the job."""
    running = holder.submit("_sleep", {"seconds": 2.0})
    wait_until(lambda: holder.stats()["in_flight"] == 1, 10, "the job to run")
    waiting = waiter.send(m.Wait(running))
    started = time.monotonic()
    assert canceller.ask(m.Cancel(running)) == _cancelled(running)
    assert waiter.reply(waiting, within_s) == _cancelled(running)
    assert time.monotonic() - started < within_s
    return running


def _serves_again(peer: Peer) -> None:
    after = peer.submit("global_mean", {"question": OBESITY})
    assert isinstance(reply := peer.ask(m.Wait(after)), m.JobState) and reply.status == "done"


def test_a_cancelled_queued_job_never_runs(
    one_slot: Service, peers: Callable[[Service], Peer]
) -> None:
    peer = peers(one_slot)
    busy = peer.submit("_sleep", {"seconds": 0.5})
    queued = peer.submit("global_mean", {"question": OBESITY})
    cancelled = m.JobState(queued, "cancelled", "cancelled")
    assert peer.ask(m.Cancel(queued)) == cancelled
    assert peer.ask(m.Wait(busy)) == m.JobState(busy, "done", None, one_slot_fingerprint(peer))
    _serves_again(peer)
    assert _status(peer, queued) == cancelled
    assert peer.ask(m.Cancel(queued)) == cancelled, "idempotent"
    assert f"result for {queued}" not in one_slot.logs(), "it was sent to a worker"


def one_slot_fingerprint(peer: Peer) -> str:
    return str(peer.stats()["fingerprint"])


def test_a_running_job_cancelled_tells_its_waiter_at_once_and_its_answer_is_dropped(
    one_slot: Service, peers: Callable[[Service], Peer]
) -> None:
    owner, waiter = peers(one_slot), peers(one_slot)
    running = _cancel_while_running(owner, owner, waiter, within_s=1.0)
    wait_until(lambda: f"ignored a result for {running}" in one_slot.logs(), 10, "the answer")
    assert _status(owner, running) == _cancelled(running)
    _serves_again(owner)


def test_a_deadline_that_passes_behind_a_backlog_ends_the_job_cancelled(
    one_slot: Service, peers: Callable[[Service], Peer]
) -> None:
    peer = peers(one_slot)
    busy = peer.submit("_sleep", {"seconds": 1.5})
    late = peer.submit("global_mean", {"question": OBESITY}, deadline_ms=300)
    started = time.monotonic()
    assert peer.ask(m.Wait(late)) == m.JobState(late, "cancelled", "deadline passed")
    assert time.monotonic() - started < 1.2, "told when its deadline passed, not later"
    assert isinstance(reply := peer.ask(m.Wait(busy)), m.JobState) and reply.status == "done"


def test_one_connections_job_runs_before_anothers_backlog(
    one_slot: Service, peers: Callable[[Service], Peer]
) -> None:
    bulk, person = peers(one_slot), peers(one_slot)
    backlog = [bulk.submit("_sleep", {"seconds": 0.05}, priority=0) for _ in range(30)]
    mine = person.submit("global_mean", {"question": OBESITY}, priority=9)
    assert isinstance(reply := person.ask(m.Wait(mine)), m.JobState) and reply.status == "done"
    states = [bulk.ask(m.Get(job)) for job in backlog]
    unfinished = sum(isinstance(s, m.JobState) and s.status == "running" for s in states)
    assert unfinished >= 20, f"only {unfinished} of the backlog's 30 were still to run"
    producers = person.stats()["producers"]
    assert producers[0]["queued"] >= 20, "the busiest producer first: the backlog"
    assert all(p["producer"].startswith("conn-") for p in producers)


def test_a_broker_cancels_a_job_another_broker_runs_on_a_shared_store(
    service_factory: Callable[..., Service], pg_url: str, peers: Callable[[Service], Peer]
) -> None:
    a, b = (service_factory(store=pg_url, broker_lease_s=1.5) for _ in range(2))
    a.start_workers(1, diagnostics=True, credit=1)
    on_a, on_b = peers(a), peers(b)
    # A's waiter is pushed the state well before the job's 2 s end: not found at its answer.
    running = _cancel_while_running(on_a, on_b, on_a, within_s=1.5)
    wait_until(lambda: on_a.stats()["in_flight"] == 0, 10, "A's worker to answer")
    assert _status(on_a, running) == _cancelled(running)
    _serves_again(on_a)
