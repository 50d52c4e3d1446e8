"""The Celery + Redis baseline: the same statistics as a Celery task, Redis as broker and backend.

Used only when `redis-server` is on PATH and celery and redis are importable; the bench
installs nothing. The task computes with our own `workers.statistics.Statistics`
(precomputed once, before the pool forks), so the comparison is of the job machinery, not of pandas.
Its pool has as many processes as our service has workers, and prefetches as many jobs
as our workers hold (credit).

    LSS_BENCH_REDIS=redis://127.0.0.1:P LSS_BENCH_DATA=CSV \\
        python -m celery -A bench.celery_app worker --pool=prefork --concurrency=2
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.service import Processes, Target, wait_until
from protocol.config import WORKER_CREDIT

TASK = "lss.compute"
PREFETCH = WORKER_CREDIT  # as our workers' credit
RESULT_TIMEOUT_S = 30.0
Job = tuple[str, dict[str, Any]]


def missing() -> str | None:
    """Why this baseline cannot run here, or None when it can."""
    if shutil.which("redis-server") is None:
        return "redis-server not found (apt-get install redis-server; pip install celery redis)"
    absent = [name for name in ("celery", "redis") if importlib.util.find_spec(name) is None]
    if absent:
        return f"{' and '.join(absent)} not importable (pip install celery redis)"
    return None


def make_app(redis_url: str) -> Any:
    """A Celery app on `redis_url` (broker on db 0, results on db 1)."""
    from celery import Celery  # type: ignore[import-not-found, unused-ignore]

    app = Celery("lss_bench", broker=f"{redis_url}/0", backend=f"{redis_url}/1")
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=PREFETCH,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


def _worker_app() -> Any:
    app = make_app(os.environ.get("LSS_BENCH_REDIS", "redis://127.0.0.1:6379"))
    statistics = _load_statistics()

    @app.task(name=TASK)  # type: ignore[untyped-decorator]
    def compute(statistic: str, params: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = statistics.compute(statistic, params)
        return answer

    return app


def _load_statistics() -> Any:
    """Loaded once in the worker's main process: the prefork children inherit it."""
    from workers.statistics import Statistics

    return Statistics.from_csv(os.environ["LSS_BENCH_DATA"])


if os.environ.get("LSS_BENCH_CELERY_WORKER") == "1":
    app = _worker_app()  # what `celery -A bench.celery_app worker` finds


# --- producer side ----------------------------------------------------------------------


class Producer:
    """Tasks sent with `send_task`, `window` in flight, results read in order."""

    def __init__(self, address: str) -> None:
        self.app = make_app(address)

    def run(self, jobs: Iterable[Job], window: int) -> list[float]:
        """Latencies in seconds."""
        in_flight: deque[tuple[Any, float]] = deque()
        latencies: list[float] = []
        for statistic, params in jobs:
            sent = self.app.send_task(TASK, args=(statistic, params))
            in_flight.append((sent, time.perf_counter()))
            if len(in_flight) >= window:
                _collect(in_flight, latencies)
        while in_flight:
            _collect(in_flight, latencies)
        return latencies

    def close(self) -> None:
        self.app.close()


def _collect(in_flight: deque[tuple[Any, float]], latencies: list[float]) -> None:
    result, started = in_flight.popleft()
    result.get(timeout=RESULT_TIMEOUT_S)
    latencies.append(time.perf_counter() - started)
    result.forget()  # as a client that read its answer: keep the backend small


# --- the service, as the bench starts it --------------------------------------------------


class CeleryService(Processes):
    """A private redis-server on a free loopback port and one Celery worker (prefork pool)."""

    name = "celery"

    def __init__(self, state_dir: Path, data: Path, workers: int = 2) -> None:
        super().__init__(state_dir)
        self.data = data
        self.worker_count = workers
        self.redis_url = ""

    def start(self) -> None:
        port = _free_port()
        self.redis_url = f"redis://127.0.0.1:{port}"
        self.spawn(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.state_dir),
            ],
            "redis",
            python=False,
        )
        self.env.update(
            LSS_BENCH_REDIS=self.redis_url,
            LSS_BENCH_DATA=str(self.data),
            LSS_BENCH_CELERY_WORKER="1",
        )
        self.spawn(
            [
                "-m",
                "celery",
                "-A",
                "bench.celery_app",
                "worker",
                "--pool=prefork",
                f"--concurrency={self.worker_count}",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            "celery",
        )
        wait_until(self._answers, 60.0, "the Celery worker to answer a task")

    def _answers(self) -> bool:
        """One task answered, asked from a child process: no Celery state stays in ours,
        where forked producers would inherit it (and its reconnecting `__del__`)."""
        self.check_alive()
        ask = f"from bench.celery_app import ping; ping({self.redis_url!r})"
        try:
            done = subprocess.run([sys.executable, "-c", ask], env=self.env, timeout=30.0,
                                  capture_output=True, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def target(self) -> Target:
        return Target("celery", self.redis_url)


def ping(redis_url: str) -> None:
    """Run one job through Celery (raises if it cannot)."""
    producer = Producer(redis_url)
    try:
        producer.run([("global_mean", {"question": _ANY_QUESTION})], 1)
    finally:
        producer.close()


_ANY_QUESTION = "Percent of adults aged 18 years and older who have obesity"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
