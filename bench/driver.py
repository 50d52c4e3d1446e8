"""The load: P producer processes, each keeping W jobs in flight over a mix of statistics.

Every producer warms up, reports ready, and starts at one shared instant; it submits
jobs until the deadline, then waits for those in flight. The run's figures: jobs per
second over the wall time from the start to the last answer, latency percentiles over
every job of every producer, and CPU time per job of the service's processes (from
/proc) and of the producers themselves, plus the CPU the rest of the machine used.
"""

from __future__ import annotations

import array
import gc
import importlib
import math
import multiprocessing
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from bench import procstat
from bench.service import Processes, Target
from protocol.messages import STATE_STATISTICS, STATISTICS
from workers.standin import LOCATIONS, QUESTIONS

Job = tuple[str, dict[str, Any]]

SMALL_MIX = ("state_mean", "state_diff_from_mean", "global_mean", "best5", "worst5")
FULL_MIX = STATISTICS
MIXES = {"small": SMALL_MIX, "full": FULL_MIX}
PER_STATE = STATE_STATISTICS
QUESTION_TEXTS = tuple(question[-1] for question in QUESTIONS)
STATE_NAMES = tuple(location[1] for location in LOCATIONS)
READY_TIMEOUT_S = 120.0
START_DELAY_S = 0.05
PROJECT_PACKAGES = ("broker", "clients", "protocol", "workers")
QUIET_BUSY_SHARE = 0.15  # of all cores: a machine this busy between runs is still settling


@dataclass(frozen=True)
class Shape:
    """One run's load: how many producers, jobs in flight each, for how long, which mix."""

    producers: int
    window: int
    duration_s: float
    mix: str = "small"
    warmup_s: float = 0.5
    seed: int = 5
    style: str = "map"  # ours: "map" (Client.map) or "call" (one Client.run call at a time)


@dataclass
class RunResult:
    """The figures of one run (times in milliseconds unless named otherwise)."""

    jobs: int
    wall_s: float
    jobs_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    service_cpu_ms_per_job: float
    client_cpu_ms_per_job: float
    other_cpu_share: float  # of the machine's CPU, used by processes outside the run
    errors: int = 0
    cpu_ms_per_job_by_role: dict[str, float] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list, repr=False)

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "latencies_s"}


def jobs(mix: str, seed: int, deadline: float) -> Iterator[Job]:
    """Random jobs of `mix` (uniform over its statistics, questions and states) until `deadline`."""
    rng = random.Random(seed)
    statistics = MIXES[mix]
    while time.monotonic() < deadline:
        statistic = rng.choice(statistics)
        params = {"question": rng.choice(QUESTION_TEXTS)}
        if statistic in PER_STATE:
            params["state"] = rng.choice(STATE_NAMES)
        yield statistic, params


class Producer(Protocol):
    """One producer's connection: `run` returns latencies (s), or (latencies, errors)."""

    def run(self, jobs: Iterable[Job], window: int) -> Any: ...

    def close(self) -> None: ...


class OursProducer:
    """Our client: `Client.map(jobs, window)`, answers in order."""

    def __init__(self, address: str) -> None:
        from clients import Client

        self.client = Client(address, timeout=30.0)

    def run(self, todo: Iterable[Job], window: int) -> list[float]:
        submitted: list[float] = []
        latencies: list[float] = []

        def timed() -> Iterator[Job]:
            for job in todo:
                submitted.append(time.perf_counter())  # map takes a job just before sending it
                yield job

        for number, _answer in enumerate(self.client.map(timed(), window=window)):
            latencies.append(time.perf_counter() - submitted[number])
        return latencies

    def close(self) -> None:
        self.client.close()


class OursCallProducer(OursProducer):
    """Our client, one call at a time (`Client.run`, as `Client.state_mean(...)` does):
    submit and wait in one round trip, the latency a caller of the public API sees."""

    def run(self, todo: Iterable[Job], window: int) -> list[float]:
        latencies: list[float] = []
        for statistic, params in todo:
            started = time.perf_counter()
            self.client.run(statistic, **params)
            latencies.append(time.perf_counter() - started)
        return latencies


def _producer_for(kind: str, style: str = "map") -> Callable[[str], Producer]:
    if kind == "ours":
        return OursCallProducer if style == "call" else OursProducer
    if kind == "echo":
        from bench.echo import Producer as Echo

        return Echo
    if kind == "original":
        from bench.original import Producer as Original

        return Original
    from bench.celery_app import Producer as Celery

    return Celery


def _split(outcome: Any) -> tuple[list[float], int]:
    """Drivers return latencies, or (latencies, errors) when errors can happen."""
    return outcome if isinstance(outcome, tuple) else (outcome, 0)


def _producer(target: Target, shape: Shape, index: int, conn: Connection) -> None:
    """One producer process: warm up, say ready, start at the shared instant, report."""
    try:
        addresses = target.options.get("addresses") or [target.address]  # one per producer
        if "code_root" in target.options:
            import_code_of(target.options["code_root"])
        producer = _producer_for(target.kind, shape.style)(addresses[index % len(addresses)])
        try:
            seed = shape.seed * 1000 + index
            producer.run(jobs(shape.mix, seed, time.monotonic() + shape.warmup_s), 1)
            conn.send(("ready", None))
            go: float = conn.recv()
            time.sleep(max(0.0, go - time.monotonic()))
            before = _own_cpu_s()
            todo = jobs(shape.mix, seed + 1, go + shape.duration_s)
            latencies, errors = _split(producer.run(todo, shape.window))
            ended, cpu = time.monotonic(), _own_cpu_s() - before
        finally:
            producer.close()
        conn.send(("done", (array.array("d", latencies).tobytes(), errors, ended, cpu)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def import_code_of(root: str) -> None:
    """In a producer process only: import the project's packages (the client, the
    protocol) from the checkout at `root` from now on, not from this one.

    The process was forked from the driver, which holds this checkout's modules; they
    are forgotten here, so the producer speaks with the client code of the service it
    drives (`bench.ab` compares revisions). The driver's own modules are untouched."""
    for name in list(sys.modules):
        if name.split(".", 1)[0] in PROJECT_PACKAGES:
            del sys.modules[name]
    sys.path.insert(0, root)
    importlib.invalidate_caches()


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(
    busy_share: float = QUIET_BUSY_SHARE, window_s: float = 0.25, timeout_s: float = 10.0
) -> bool:
    """Wait (up to `timeout_s`) for a `window_s` in which the machine's CPUs were busy
    less than `busy_share` of the time, e.g. once a previous run's disk write-back is
    done; whether it came."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = _machine_busy_s()
        time.sleep(window_s)
        if (_machine_busy_s() - before) / (window_s * cores) < busy_share:
            return True
    return False


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / procstat.CLOCK_TICKS


def run(service: Processes, shape: Shape) -> RunResult:
    """One measured run of `shape` against a started `service`."""
    gc.collect()  # nothing of the parent's left for a child's garbage collector to finalise
    context = multiprocessing.get_context("fork")  # the parent holds no socket or thread here
    pipes, procs = [], []
    for index in range(shape.producers):
        ours, theirs = context.Pipe()
        proc = context.Process(target=_producer, args=(service.target(), shape, index, theirs))
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    try:
        for pipe in pipes:
            _expect(pipe, "ready", READY_TIMEOUT_S)
        cpu_before, busy_before = service.cpu_by_role(), _machine_busy_s()
        go = time.monotonic() + START_DELAY_S
        for pipe in pipes:
            pipe.send(go)
        finish_by = shape.duration_s + READY_TIMEOUT_S
        outcomes = [_expect(pipe, "done", finish_by) for pipe in pipes]
        cpu_after, busy = service.cpu_by_role(), _machine_busy_s() - busy_before
        service_cpu = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return _result(outcomes, go, service_cpu, busy)


def _expect(pipe: Connection, what: str, timeout_s: float) -> Any:
    if not pipe.poll(timeout_s):
        raise TimeoutError(f"a producer sent no '{what}' within {timeout_s:g} s")
    kind, value = pipe.recv()
    if kind != what:
        raise RuntimeError(f"a producer failed: {value}")
    return value


def _result(
    outcomes: list[Any], go: float, service_cpu: dict[str, float], busy_s: float
) -> RunResult:
    latencies: list[float] = []
    for packed, _errors, _ended, _cpu in outcomes:
        latencies.extend(array.array("d", packed))
    latencies.sort()
    count = len(latencies)
    wall = max(ended for _p, _e, ended, _c in outcomes) - go
    client_cpu = sum(cpu for _p, _e, _t, cpu in outcomes)
    service_cpu_s = sum(service_cpu.values())
    other = max(0.0, busy_s - service_cpu_s - client_cpu)
    per_job = 1000 / max(count, 1)
    return RunResult(
        jobs=count,
        wall_s=wall,
        jobs_per_s=count / wall if wall > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        p999_ms=percentile(latencies, 0.999) * 1000,
        service_cpu_ms_per_job=service_cpu_s * per_job,
        cpu_ms_per_job_by_role={role: cpu * per_job for role, cpu in service_cpu.items()},
        client_cpu_ms_per_job=client_cpu * per_job,
        other_cpu_share=other / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0,
        errors=sum(errors for _p, errors, _e, _c in outcomes),
        latencies_s=latencies,
    )


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0.0
    rank = math.ceil(q * len(ordered) - 1e-9)  # the smallest value with q of them at or below
    return ordered[min(len(ordered), max(rank, 1)) - 1]
