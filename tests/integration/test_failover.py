"""Clients and workers with several broker endpoints, on real processes.

The brokers here are independent (each its own SQLite store), so a client that moves
to broker B has its pending requests run again there: B knows nothing of A's jobs, but
the requests carry the same request ids, which a shared store would deduplicate.
Broker A gets no worker when a test needs requests to be pending on it when it dies.
Answers are checked against bench/reference.py, the independent computation.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench.harness import Service
from bench.reference import QUESTIONS, Reference, assert_close, params_for
from bench.service import ROOT, wait_until
from clients import AsyncClient, Client, LssError
from protocol import config
from protocol.messages import STATE_STATISTICS, STATISTICS

pytestmark = pytest.mark.integration

WINDOW_S = config.HEARTBEAT_INTERVAL_MS / 1000 * config.HEARTBEAT_LIVENESS
Job = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def reference(standin_csv: Path) -> Reference:
    return Reference(standin_csv)


def every_statistic(reference: Reference) -> list[Job]:
    """One job per statistic, each on its own question."""
    jobs = []
    for number, statistic in enumerate(STATISTICS):
        question = QUESTIONS[number % len(QUESTIONS)]
        state = reference.states(question)[0]
        jobs.append((statistic, params_for(statistic, question, state)))
    return jobs


def check_answers(reference: Reference, jobs: list[Job], answers: list[Any]) -> None:
    assert len(answers) == len(jobs)
    for (statistic, params), answer in zip(jobs, answers, strict=True):
        expected = reference.answer(statistic, params["question"], params.get("state"))
        assert_close(answer, expected, statistic)


def two_brokers(make: Callable[..., Service]) -> tuple[Service, Service]:
    """Broker A without workers (what it accepts stays pending), broker B with one."""
    a, b = make(), make()
    b.start_workers(1)
    return a, b


def wait_accepted(broker: Service, count: int) -> None:
    """Until `broker` holds `count` unfinished jobs: the calls are pending there."""
    with broker.client(timeout=5) as client:
        wait_until(lambda: client.num_jobs() == count, 20, f"{count} jobs accepted")


def jobs_on(broker: Service) -> int:
    with broker.client(timeout=5) as client:
        return len(client.jobs())


# --- (a) the threaded Client ------------------------------------------------------------


def test_a_client_moves_to_the_next_broker_and_every_pending_call_completes(
    service_factory: Callable[..., Service], reference: Reference
) -> None:
    a, b = two_brokers(service_factory)
    jobs = every_statistic(reference)
    with Client(f"{a.client_endpoint},{b.client_endpoint}", timeout=30) as client:
        assert client.ping()["broker_id"]  # answered by A, the first endpoint
        with ThreadPoolExecutor(len(jobs)) as pool:
            calls = [pool.submit(_run, client, statistic, params) for statistic, params in jobs]
            wait_accepted(a, len(jobs))
            killed_at = time.monotonic()
            a.kill_broker()
            answers = [call.result(timeout=60) for call in calls]
            moved_s = min(finished for _, finished in answers) - killed_at
            done_s = max(finished for _, finished in answers) - killed_at
    check_answers(reference, jobs, [answer for answer, _ in answers])
    assert jobs_on(b) == len(jobs)  # B ran them all: their requests were resent
    print(f"client failover: first answer {moved_s:.2f} s, all {len(jobs)} {done_s:.2f} s")
    print(f"  after SIGKILL of broker A (heartbeat window {WINDOW_S:g} s)")
    assert done_s <= 2 * WINDOW_S


def _run(client: Client, statistic: str, params: dict[str, Any]) -> tuple[Any, float]:
    """A statistic called as users do (`client.state_mean(...)`), and when it returned."""
    answer = getattr(client, statistic)(**params)
    return answer, time.monotonic()


def test_a_client_whose_first_broker_is_down_starts_on_the_next(
    service_factory: Callable[..., Service], reference: Reference
) -> None:
    a, b = two_brokers(service_factory)
    a.kill_broker()
    (job,) = every_statistic(reference)[:1]
    with Client([a.client_endpoint, b.client_endpoint], timeout=30) as client:
        answer = client.run(job[0], **job[1])
        assert client.ping()["broker_id"] == _broker_id(b)
    check_answers(reference, [job], [answer])


def _broker_id(broker: Service) -> str:
    with broker.client(timeout=5) as client:
        return str(client.ping()["broker_id"])


# --- (b) a worker serving several brokers -----------------------------------------------


def test_a_worker_serves_every_broker_and_losing_one_does_not_stall_it(
    service_factory: Callable[..., Service], reference: Reference
) -> None:
    a, b = service_factory(), service_factory()
    worker = b.start_worker(connect=f"{a.worker_endpoint},{b.worker_endpoint}")
    a.wait_workers(1)
    b.wait_workers(1)
    jobs = distinct_jobs(reference)  # none answered from the worker's cache
    on_a, on_b = Stream(a, jobs[::2]), Stream(b, jobs[1::2])
    with ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(stream.run) for stream in (on_a, on_b)]
        try:
            wait_until(lambda: len(on_a.finished) > 20 and len(on_b.finished) > 20, 30, "streams")
            killed_at = time.monotonic()
            a.kill_broker()  # the worker holds some of A's jobs now

            def served_past_detection() -> bool:
                """The worker noticed A's loss, and B still had jobs done after it."""
                silent = b.events("broker_silent")  # the worker is b's
                lost_a = [e for e in silent if e["endpoint"] == a.worker_endpoint]
                return bool(lost_a) and on_b.finished[-1] > killed_at + 1.5 * WINDOW_S

            wait_until(served_past_detection, 20, "B served past the worker's detection")
        finally:
            on_a.stop.set()
            on_b.stop.set()
        for stream in streams:
            stream.result(timeout=60)
    after = [t for t in on_b.finished if t > killed_at]
    gap_s = max(later - earlier for earlier, later in zip([killed_at, *after], after, strict=False))
    print(f"worker on brokers A and B, A SIGKILLed: B finished {len(after)} jobs in the next")
    print(f"  {2 * WINDOW_S:g} s; longest gap between two of them {gap_s * 1000:.0f} ms")
    assert worker.poll() is None
    on_a.check(reference)
    on_b.check(reference)
    assert after[-1] > killed_at + 1.5 * WINDOW_S  # B was served past A's detection
    assert gap_s < WINDOW_S  # B never waited for the worker to notice that A had gone
    a.start_broker()  # on the same endpoints: the worker's link to A registers again
    a.wait_workers(1)


def distinct_jobs(reference: Reference) -> list[Job]:
    """Every per-state statistic of every state and question: a few thousand jobs."""
    return [
        (statistic, params_for(statistic, question, state))
        for question in QUESTIONS
        for state in reference.states(question)
        for statistic in sorted(STATE_STATISTICS)
    ]


class Stream:
    """One client running `jobs` one after another on `broker` until `stop` (or its
    broker is gone): the answers, and when each came."""

    def __init__(self, broker: Service, jobs: list[Job]) -> None:
        self.broker, self.jobs = broker, jobs
        self.stop = threading.Event()
        self.answers: list[Any] = []
        self.finished: list[float] = []

    def run(self) -> None:
        with self.broker.client(timeout=WINDOW_S) as client:
            while not self.stop.is_set():
                statistic, params = self.job(len(self.answers))
                try:
                    self.answers.append(client.run(statistic, **params))
                except LssError:
                    return  # its broker was killed
                self.finished.append(time.monotonic())

    def job(self, number: int) -> Job:
        return self.jobs[number % len(self.jobs)]  # a second round comes from the cache

    def check(self, reference: Reference) -> None:
        jobs = [self.job(number) for number in range(len(self.answers))]
        check_answers(reference, jobs, self.answers)


# --- (c) Client.map and AsyncClient ----------------------------------------------------


def test_client_map_moves_to_the_next_broker(
    service_factory: Callable[..., Service], reference: Reference
) -> None:
    a, b = two_brokers(service_factory)
    jobs = every_statistic(reference)
    endpoints = f"{a.client_endpoint},{b.client_endpoint}"
    with Client(endpoints, timeout=30) as client, ThreadPoolExecutor(1) as pool:
        mapped = pool.submit(lambda: list(client.map(jobs, window=len(jobs))))
        wait_accepted(a, len(jobs))
        a.kill_broker()
        answers = mapped.result(timeout=60)
    check_answers(reference, jobs, answers)
    assert jobs_on(b) == len(jobs)


def test_an_async_client_moves_off_a_stopped_broker(
    service_factory: Callable[..., Service], reference: Reference
) -> None:
    a, b = two_brokers(service_factory)
    jobs = every_statistic(reference)

    async def scenario() -> list[Any]:
        async with AsyncClient(f"{a.client_endpoint},{b.client_endpoint}", timeout=30) as client:
            calls = [asyncio.ensure_future(client.run(s, **p)) for s, p in jobs]
            await asyncio.to_thread(wait_accepted, a, len(jobs))
            assert a.broker is not None
            os.kill(a.broker.pid, signal.SIGSTOP)  # alive but silent: only liveness tells
            return list(await asyncio.gather(*calls))

    check_answers(reference, jobs, asyncio.run(scenario()))
    assert jobs_on(b) == len(jobs)


# --- the command line and the environment ------------------------------------------------


def test_lss_takes_a_list_of_endpoints_from_the_environment(
    service_factory: Callable[..., Service], reference: Reference
) -> None:
    a, b = two_brokers(service_factory)
    a.kill_broker()
    statistic, params = every_statistic(reference)[0]
    env = {**b.env, "LSS_CLIENT_ENDPOINT": f"{a.client_endpoint}, {b.client_endpoint}"}
    command = [sys.executable, "-m", "clients.cli", "submit", statistic, "--wait"]
    command += [f"--{name}={value}" for name, value in params.items()]
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    check_answers(reference, [(statistic, params)], [json.loads(done.stdout)])
    assert jobs_on(b) == 1  # A is dead: B answered
