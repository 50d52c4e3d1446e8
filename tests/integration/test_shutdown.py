"""Graceful shutdown with jobs in flight: nothing lost, new work refused, clean exits."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from bench.harness import Service
from bench.reference import QUESTIONS
from bench.service import wait_until
from clients import RequestRefused
from protocol import config

pytestmark = pytest.mark.integration


def test_shutdown_finishes_accepted_jobs_then_everything_exits(service_factory) -> None:  # type: ignore[no-untyped-def]
    service: Service = service_factory()
    supervisor = service.start_supervisor(2, "--diagnostics")
    with service.client(timeout=30) as client:
        slow = [client.submit("_sleep", seconds=0.5) for _ in range(4)]
        quick = [client.submit("global_mean", question=q) for q in QUESTIONS * 20]
        pending = client.shutdown()
        assert pending > 0, "the shutdown should find jobs still to run"
        with pytest.raises(RequestRefused, match="shutting down"):
            client.submit("global_mean", question=QUESTIONS[0])
        answers = [client.wait(job, 30) for job in slow + quick]
    assert all(answer == {"slept_s": 0.5} for answer in answers[:4])
    assert all(set(answer) == {"global_mean"} for answer in answers[4:])
    assert service.broker is not None
    assert service.broker.wait(timeout=30) == 0
    assert supervisor.wait(timeout=30) == 0

    service.start_broker()  # answers stay readable after the service is gone
    with service.client() as client:
        assert client.get(slow[0]) == {"status": "done", "data": {"slept_s": 0.5}}
        assert client.get(quick[-1])["status"] == "done"
        assert client.num_jobs() == 0


def test_sigterm_drains_like_a_shutdown_request(service: Service) -> None:
    with service.client() as client:
        jobs = [client.submit("global_mean", question=q) for q in QUESTIONS * 10]
        assert service.broker is not None
        service.broker.terminate()
        answers = [client.wait(job, 30) for job in jobs]
    assert len(answers) == len(jobs)
    assert service.broker.wait(timeout=30) == 0
    wait_until(lambda: all(w.poll() == 0 for w in service.workers), 30, "workers to exit 0")


def test_a_second_sigterm_stops_a_worker_in_the_middle_of_a_long_job(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory()
    (worker,) = service.start_workers(1, diagnostics=True)
    with service.client() as client:
        client.submit("_sleep", seconds=600.0)
        wait_until(lambda: client.stats()["in_flight"] == 1, 30, "the job to start")
    worker.send_signal(signal.SIGTERM)  # drains: the job would take ten minutes
    wait_until(lambda: service.events("worker_draining"), 30, "the drain to begin")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == config.EXIT_INTERRUPTED
