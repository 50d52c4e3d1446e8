"""Issue 12, measured: a broker of three SIGKILLed mid-stream, on loopback.

Three brokers on one real PostgreSQL, two workers connected to all three, four producer
threads each with a `Client` given all three endpoints (producer N starting at broker
N mod 3) submitting a few thousand jobs under request ids of their own (`submit_as`,
then `wait_all`). Broker A is SIGKILLed once a third of the jobs are done. Then: no job
lost or duplicated (each request id is one job id, each job one request id, the store
holds exactly these jobs, each finished), every answer equal to bench/reference.py,
every producer's completions resumed within two heartbeat windows, and A's unfinished
jobs adopted by a live broker within the lease time. The figures are printed (run with
`-s`) and quoted in README.md, "Several brokers".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.cluster import BrokerGroup
from bench.harness import Service
from bench.reference import QUESTIONS, Reference, close_enough, params_for
from bench.service import wait_until
from clients import Client
from protocol import config
from protocol import messages as m
from protocol.messages import STATE_STATISTICS
from tests.postgres import postgres_or_skip

pytestmark = pytest.mark.integration

LEASE_S = 2.0
WINDOW_S = config.HEARTBEAT_INTERVAL_MS / 1000 * config.HEARTBEAT_LIVENESS
PRODUCERS, BATCH = 4, 20
Job = tuple[str, dict[str, Any]]


@dataclass
class Producer:
    """One producer's jobs, the job id each request id got, and when batches finished."""

    number: int
    jobs: list[Job]
    job_of: dict[str, str] = field(default_factory=dict)  # request id -> job id
    answers: dict[str, Any] = field(default_factory=dict)  # job id -> final state
    finished: list[float] = field(default_factory=list)  # one time per finished batch
    done_jobs: int = 0

    def run(self, endpoints: str) -> None:
        with Client(endpoints, timeout=60) as client:
            for start in range(0, len(self.jobs), BATCH):
                batch = {
                    f"p{self.number}-{n}": self.jobs[n]
                    for n in range(start, min(start + BATCH, len(self.jobs)))
                }
                ids = [client.submit_as(rid, s, p) for rid, (s, p) in batch.items()]
                self.job_of.update(zip(batch, ids, strict=True))
                self.answers.update(client.wait_all(ids, timeout=60))
                self.finished.append(time.monotonic())
                self.done_jobs += len(batch)

    def longest_gap_after(self, instant: float) -> float:
        after = [t for t in self.finished if t > instant]
        return max((b - a for a, b in zip([instant, *after], after, strict=False)), default=0.0)


def jobs_for(reference: Reference, rounds: int = 2) -> list[Job]:
    """Every per-state statistic of every state and question, `rounds` times: a few
    thousand jobs (a second round's answers may come from the workers' cache)."""
    return rounds * [
        (statistic, params_for(statistic, question, state))
        for question in QUESTIONS
        for state in reference.states(question)
        for statistic in sorted(STATE_STATISTICS)
    ]


def running_of(url: str, epoch: int) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'running' AND broker_epoch = %s", (epoch,)
        ).fetchone()
    return int(row[0]) if row else 0


def store_summary(url: str) -> tuple[int, int, int, set[str]]:
    """Rows, distinct request ids, rows finished (done, with a finish time), request ids."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT request_id, status, finished_s FROM jobs").fetchall()
    finished = sum(1 for _, status, at in rows if status == "done" and at is not None)
    return len(rows), len({r[0] for r in rows}), finished, {str(r[0]) for r in rows}


def epoch_of(svc: Service) -> int:
    with svc.client(timeout=10) as client:
        return int(client.stats()["cluster"]["broker_epoch"])


def test_a_broker_of_three_killed_mid_stream_loses_and_duplicates_nothing(
    service_factory: Callable[..., Service], pg_url: str, standin_csv: Path
) -> None:
    reference = Reference(standin_csv)
    cluster = BrokerGroup.of([service_factory(store=pg_url, broker_lease_s=LEASE_S) for _ in "abc"])
    cluster.start_workers(2, diagnostics=True)
    jobs = jobs_for(reference)
    producers = [Producer(n, jobs[n::PRODUCERS]) for n in range(PRODUCERS)]
    a = cluster.services[0]
    a_epoch = epoch_of(a)
    with ThreadPoolExecutor(PRODUCERS) as pool:
        runs = [pool.submit(p.run, cluster.client_endpoints(p.number)) for p in producers]

        def done() -> int:
            return sum(p.done_jobs for p in producers)

        wait_until(lambda: done() >= len(jobs) // 3 or any(r.done() for r in runs), 120, "a third")
        killed_at, killed_after = time.monotonic(), done()
        cluster.kill_broker(0)
        left_at_kill = running_of(pg_url, a_epoch)
        wait_until(lambda: running_of(pg_url, a_epoch) == 0, 30, "A's jobs to be adopted")
        adopted_s = time.monotonic() - killed_at
        for run in runs:
            run.result(timeout=240)
    gap_s = max(p.longest_gap_after(killed_at) for p in producers)
    print(f"\n{len(jobs)} jobs, {PRODUCERS} producers, 3 brokers on PostgreSQL, 2 workers;")
    print(f"  broker A SIGKILLed after {killed_after} jobs had finished:")
    print(f"  its {left_at_kill} unfinished jobs adopted after {adopted_s:.2f} s"
          f" (lease {LEASE_S:g} s)")  # fmt: skip
    print(f"  longest pause of a producer after the kill {gap_s:.2f} s (window {WINDOW_S:g} s)")
    check_no_loss_no_duplicate(producers, pg_url, len(jobs))
    check_answers(producers, reference)
    assert gap_s < 2 * WINDOW_S
    assert adopted_s < 2 * LEASE_S  # last renewal <= lease/3 before the kill: room for CI


def check_no_loss_no_duplicate(producers: list[Producer], url: str, total: int) -> None:
    job_of = {rid: job for p in producers for rid, job in p.job_of.items()}
    assert len(job_of) == total  # every request got a job id ...
    assert len(set(job_of.values())) == total  # ... its own
    rows, distinct, finished, request_ids = store_summary(url)
    assert (rows, distinct, finished) == (total, total, total)
    assert request_ids == set(job_of)  # the store holds exactly these, each finished


def check_answers(producers: list[Producer], reference: Reference) -> None:
    expected: dict[str, Any] = {}  # the reference computes each distinct job once
    for producer in producers:
        for number, (rid, job) in enumerate(producer.job_of.items()):
            statistic, params = producer.jobs[number]
            assert rid == f"p{producer.number}-{number}"
            key = repr((statistic, params))
            if key not in expected:
                expected[key] = reference.answer(statistic, **params)
            state = producer.answers[job]
            assert state["status"] == "done", (rid, job, state)
            assert close_enough(state["data"], expected[key]), (statistic, params, state)


# --- refusals a client of several brokers gets past (ErrorReply.retry_after_ms) -----------

OBESITY = QUESTIONS[0]


def test_a_client_moves_off_a_broker_that_is_shutting_down(
    service_factory: Callable[..., Service], pg_url: str, standin_csv: Path
) -> None:
    a, b = (service_factory(store=pg_url, broker_lease_s=LEASE_S) for _ in "ab")
    a.start_workers(1, diagnostics=True)  # `_sleep` is a diagnostic
    b.start_workers(1)
    with Client(f"{a.client_endpoint},{b.client_endpoint}", timeout=30) as client:
        client.submit("_sleep", seconds=3.0)  # A drains it: A refuses submits meanwhile
        wait_until(lambda: a_in_flight(a), 10, "A's worker to hold the job")
        assert client.shutdown() == 1  # scope: this broker only
        answer = client.run("global_mean", question=OBESITY)
        assert client.ping()["broker_id"] == broker_id(b)
    assert close_enough(answer, Reference(standin_csv).answer("global_mean", OBESITY))


def refused_again(caplog: pytest.LogCaptureFixture) -> bool:
    return any("(storage); sending it again" in r.getMessage() for r in caplog.records)


def a_in_flight(svc: Service) -> bool:
    with svc.client(timeout=10) as client:
        return bool(client.stats()["in_flight"])


def broker_id(svc: Service) -> str:
    with svc.client(timeout=10) as client:
        return str(client.ping()["broker_id"])


def test_a_submit_during_a_database_outage_is_sent_again_until_it_is_back(
    service_factory: Callable[..., Service], standin_csv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker says a `storage` refusal may be sent again; the client does so."""
    caplog.set_level(logging.DEBUG, "lss.client")
    with postgres_or_skip() as server:
        svc = service_factory(store=server.database(), broker_lease_s=LEASE_S)
        svc.start_workers(1)
        with svc.client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
            server.stop()
            submitting = pool.submit(client.run, "global_mean", question=OBESITY)
            wait_until(lambda: refused_again(caplog), 20, "a refused submit")
            assert not submitting.done()
            server.start()
            answer = submitting.result(timeout=60)
    assert close_enough(answer, Reference(standin_csv).answer("global_mean", OBESITY))


def test_a_worker_of_every_broker_drains_and_exits_on_a_shutdown_of_all(
    service_factory: Callable[..., Service], pg_url: str
) -> None:
    cluster = BrokerGroup.of([service_factory(store=pg_url, broker_lease_s=LEASE_S) for _ in "ab"])
    (worker,) = cluster.start_workers(1)
    with cluster.services[1].client(timeout=30) as client:
        client.shutdown(scope=m.SHUTDOWN_ALL)
    for svc in cluster.services:
        assert svc.broker is not None and svc.broker.wait(timeout=30) == config.EXIT_OK
    assert worker.wait(timeout=30) == config.EXIT_OK
