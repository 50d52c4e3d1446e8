"""`./run.sh bench producers` (python -m bench.producers): issue 19's figures.

Each section runs on a fresh service (a broker and `--workers` workers, the stand-in of
`--rows` rows) in a private state directory, and prints its figures as JSON; times are
medians over `--reps` repetitions where a section repeats, and every ratio uses a
baseline measured in the same run.

- `one-call`: B makes one-call requests (`Client.state_mean`) one at a time, alone and
  while A keeps `--window` jobs in flight through `Client.outcomes` (a bulk export);
  A's throughput alone and beside B. Goal: B's p50 at most 3 x alone, A's throughput
  at least 0.9 x alone.
- `weights`: three producers with CURVE keys weighted 1:1:2 (`--producer-weights`),
  each saturating; each one's share of the jobs finished over the measured window.
  Goal: within +-10 % of 25/25/50 %.
- `deadlines`: one producer queues a backlog of 10 ms jobs, then 2,000 more at priority
  0 with a 0.3 s deadline, faster than the workers run them; how many of them ran after
  their deadline, judged from the store (a job that ran finished after it was created
  by at most its deadline plus its run and commit).
- `cancel`: 5,000 jobs queued while no worker is registered, each cancelled (the p50
  of a cancel); then workers start and run a sentinel job; how many of the cancelled
  jobs reached a worker (its DEBUG log names every job it receives). Goal 0.

Producers run in processes of their own (a producer's CPU must not slow another's
measurements through the GIL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.data import dataset
from bench.driver import QUESTION_TEXTS, STATE_NAMES, Job, percentile
from bench.harness import Service
from bench.plan import BASE_ROWS
from bench.service import wait_until
from clients import Client, Security
from protocol.curve import generate_keys

QUESTION = QUESTION_TEXTS[0]
SECTIONS = ("one-call", "weights", "deadlines", "cancel")
WEIGHTS = {"alice": 1, "bob": 1, "carol": 2}
DEADLINE_S = 0.3
DEADLINE_JOBS = 2_000
SLEEP_S = 0.01  # each job of the deadlines section: a worker sleeps this long
COMPUTE_ALLOWANCE_S = 0.05  # a job's run (SLEEP_S) and its commit; generous
CANCEL_JOBS = 5_000
READY_TIMEOUT_S = 60.0


def say(text: str) -> None:
    print(f"[producers] {text}", file=sys.stderr, flush=True)


def bulk_jobs(seed: int) -> Iterator[Job]:
    """Distinct jobs forever (per-state means over every question and state), so that a
    worker's cache of identical answers does not make the backlog free."""
    number = seed
    while True:
        question = QUESTION_TEXTS[number % len(QUESTION_TEXTS)]
        state = STATE_NAMES[(number // len(QUESTION_TEXTS)) % len(STATE_NAMES)]
        yield "state_mean", {"question": question, "state": state}
        number += 1


# --- producer processes ----------------------------------------------------------------


def _saturate(endpoint: str, security: Security | None, window: int, conn: Connection) -> None:
    """Keep `window` jobs in flight until told to stop; report the monotonic times at
    which answers came (the parent counts those inside its measured window)."""
    finished: list[float] = []
    with Client(endpoint, timeout=300.0, security=security) as client:

        def until_told() -> Iterator[Job]:
            for job in bulk_jobs(seed=len(endpoint)):
                if conn.poll():
                    return
                yield job

        conn.send("started")
        for _ in client.outcomes(until_told(), window=window):
            finished.append(time.monotonic())
    conn.send(finished)


class Saturating:
    """A saturating producer in its own process (`with`: started; `stop()`: the times)."""

    def __init__(self, endpoint: str, window: int, security: Security | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_saturate, args=(endpoint, security, window, child))

    def __enter__(self) -> Saturating:
        self._proc.start()
        if not self._conn.poll(READY_TIMEOUT_S):
            raise RuntimeError("a producer did not start")
        self._conn.recv()
        return self

    def stop(self) -> list[float]:
        self._conn.send("stop")
        times: list[float] = self._conn.recv()
        return times

    def __exit__(self, *_exc: object) -> None:
        self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """`values` in this process's environment inside the block only."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _count_between(times: list[float], start: float, end: float) -> int:
    return sum(1 for t in times if start <= t < end)


def one_calls(endpoint: str, count: int, until: float = 0.0) -> list[float]:
    """One-call requests one after another, at least `count` and until monotonic time
    `until`; their latencies in milliseconds."""
    latencies: list[float] = []
    with Client(endpoint, timeout=120.0) as client:
        client.state_mean(QUESTION, "Ohio")  # connect before timing
        while len(latencies) < count or time.monotonic() < until:
            started = time.perf_counter()
            client.state_mean(QUESTION, "Ohio")
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def _ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(percentile(ordered, 0.5), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
    }


# --- sections ---------------------------------------------------------------------------


def one_call(work: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        with Service(work / f"one-call-{rep}", data, args.workers) as service:
            endpoint = service.client_endpoint
            alone = one_calls(endpoint, args.calls)
            a_alone = _throughput(service, args)
            with Saturating(endpoint, args.window) as bulk:
                time.sleep(args.warmup_s)  # the backlog builds: a measurement, not a test
                started = time.monotonic()
                beside = one_calls(endpoint, args.calls, until=started + args.seconds)
                ended = time.monotonic()
                a_times = bulk.stop()
            a_beside = _count_between(a_times, started, ended) / (ended - started)
            service.settle()
        run = {
            "b_alone": _ms(alone),
            "b_beside_a": _ms(beside),
            "a_alone_jobs_per_s": round(a_alone, 1),
            "a_beside_b_jobs_per_s": round(a_beside, 1),
        }
        say(f"one-call run {rep + 1}: {run}")
        runs.append(run)
    b_alone = statistics.median(r["b_alone"]["p50_ms"] for r in runs)
    b_beside = statistics.median(r["b_beside_a"]["p50_ms"] for r in runs)
    a_alone = statistics.median(r["a_alone_jobs_per_s"] for r in runs)
    a_beside = statistics.median(r["a_beside_b_jobs_per_s"] for r in runs)
    return {
        "runs": runs,
        "b_p50_ms_alone": b_alone,
        "b_p50_ms_beside_a": b_beside,
        "b_p99_ms_alone": statistics.median(r["b_alone"]["p99_ms"] for r in runs),
        "b_p99_ms_beside_a": statistics.median(r["b_beside_a"]["p99_ms"] for r in runs),
        "b_p50_ratio": round(b_beside / b_alone, 2),
        "a_throughput_ratio": round(a_beside / a_alone, 3),
    }


def _throughput(service: Service, args: argparse.Namespace) -> float:
    """A alone: jobs/s over `--seconds` after the warm-up."""
    with Saturating(service.client_endpoint, args.window) as bulk:
        time.sleep(args.warmup_s)  # a measurement window, not synchronisation
        started = time.monotonic()
        time.sleep(args.seconds)
        ended = time.monotonic()
        times = bulk.stop()
    service.settle()
    return _count_between(times, started, ended) / (ended - started)


def weights(work: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    keys = work / "keys"
    generate_keys(keys, ["worker:worker", *(f"client:{name}" for name in WEIGHTS)])
    weight_flag = ",".join(f"{name}={weight}" for name, weight in WEIGHTS.items())
    service = Service(work / "weights", data, 0, curve_dir=keys, producer_weights=weight_flag)
    # This process's own client (the service's pings and stats) holds a client key.
    curve = {"LSS_CURVE_SERVER_KEY": str(keys / "broker.key"),
             "LSS_CURVE_SECRET": str(keys / f"{next(iter(WEIGHTS))}.key_secret")}  # fmt: skip
    with patched_env(curve), service:
        service.start_workers(
            args.workers,
            curve_server_key=keys / "broker.key",
            curve_secret=keys / "worker.key_secret",
        )
        producers = {
            name: Saturating(
                service.client_endpoint,
                args.window,
                Security(str(keys / "broker.key"), str(keys / f"{name}.key_secret")),
            )
            for name in WEIGHTS
        }
        with contextlib.ExitStack() as running:
            for producer in producers.values():
                running.enter_context(producer)
            time.sleep(args.warmup_s)  # a measurement window, not synchronisation
            started = time.monotonic()
            time.sleep(args.seconds)
            ended = time.monotonic()
            counts = {
                name: _count_between(p.stop(), started, ended) for name, p in producers.items()
            }
    total = sum(counts.values()) or 1
    shares = {name: round(100 * count / total, 1) for name, count in counts.items()}
    goal = {name: 100 * w / sum(WEIGHTS.values()) for name, w in WEIGHTS.items()}
    return {
        "weights": WEIGHTS,
        "finished": counts,
        "share_percent": shares,
        "worst_relative_error": round(max(abs(shares[n] - goal[n]) / goal[n] for n in goal), 3),
    }


def deadlines(work: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One connection (one producer): a backlog of `--backlog` jobs of SLEEP_S each, then
    DEADLINE_JOBS at priority 0 with a DEADLINE_S deadline, submitted faster than the
    workers run them: some start in time, the rest must end cancelled, never run late."""
    service = Service(work / "deadlines", data, 0)
    with service, service.client() as client:
        service.start_workers(args.workers, diagnostics=True)
        for _ in range(args.backlog):
            client.submit("_sleep", seconds=SLEEP_S)
        ids = [
            client.submit("_sleep", seconds=SLEEP_S, priority=0, deadline=DEADLINE_S)
            for _ in range(DEADLINE_JOBS)
        ]
        wait_until(lambda: client.num_jobs() == 0, 600.0, "the backlog to drain")
    return _judge_deadlines(service.state_dir, ids)


def _judge_deadlines(state_dir: Path, ids: list[str]) -> dict[str, Any]:
    """From the store: each deadline job's final status and how long after its creation it
    finished; one that ran must have finished within its deadline plus its compute."""
    seqs = [int(job_id.rsplit("_", 1)[1]) for job_id in ids]
    database = state_dir / "jobs.sqlite3"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        marks = ",".join("?" * len(seqs))
        query = f"SELECT status, finished_s - created_s FROM jobs WHERE seq IN ({marks})"
        rows = db.execute(query, seqs).fetchall()
    ran = [age for status, age in rows if status in ("done", "error")]
    late = [age for age in ran if age > DEADLINE_S + COMPUTE_ALLOWANCE_S]
    by_status: dict[str, int] = {}
    for status, _age in rows:
        by_status[status] = by_status.get(status, 0) + 1
    return {
        "jobs": len(ids),
        "by_status": by_status,
        "ran_after_deadline": len(late),
        "slowest_run_s": round(max(ran), 3) if ran else None,
    }


def cancel(work: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    service = Service(work / "cancel", data, 0)
    service.env["LSS_LOG_LEVEL"] = "DEBUG"
    with service, service.client() as client:
        ids = [
            client.submit("state_mean", question=QUESTION, state="Ohio") for _ in range(CANCEL_JOBS)
        ]
        took_ms, replies = [], {}
        for job_id in ids:
            started = time.perf_counter()
            replies[job_id] = client.cancel(job_id)
            took_ms.append((time.perf_counter() - started) * 1000)
        service.start_workers(args.workers)
        sentinel = client.submit("state_mean", question=QUESTION, state="Texas")
        client.wait(sentinel)  # runs after anything queued before it
        logs = service.logs()
    if f"{sentinel} received" not in logs:
        raise RuntimeError("the workers' DEBUG log does not name the jobs they receive")
    received = sum(1 for job_id in ids if f"{job_id} received" in logs)
    statuses: dict[str, int] = {}
    for status in replies.values():
        statuses[status] = statuses.get(status, 0) + 1
    ordered = sorted(took_ms)
    return {
        "jobs": CANCEL_JOBS,
        "replies": statuses,
        "reached_a_worker": received,
        "cancel_p50_ms": round(percentile(ordered, 0.5), 3),
        "cancel_p99_ms": round(percentile(ordered, 0.99), 3),
    }


RUNNERS = {"one-call": one_call, "weights": weights, "deadlines": deadlines, "cancel": cancel}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.producers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=", ".join(SECTIONS))
    parser.add_argument("--rows", type=int, default=BASE_ROWS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=int, default=8_000, help="A's jobs in flight")
    parser.add_argument("--calls", type=int, default=200, help="B's one-call requests per run")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--backlog", type=int, default=2_000, help="deadlines: jobs ahead")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
    data = dataset(args.rows)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lss-producers-") as tmp:
        for section in args.sections or SECTIONS:
            say(f"{section} ...")
            figures[section] = RUNNERS[section](Path(tmp), data, args)
            say(f"{section}: {json.dumps(figures[section])}")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
