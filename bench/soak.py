"""Random-kill soak (issue 3): no accepted job is lost or duplicated, whatever dies.

`python -m bench.soak --minutes N` (`./run.sh soak --minutes N`) starts a broker and
workers on loopback ports the OS picks, runs producer threads that submit jobs through
`clients.Client` and record every job id they are given, and meanwhile SIGKILLs a random
worker or the broker every few seconds and starts a replacement. Then it waits for every
recorded id and prints jobs submitted, finished, lost (an id returned that never
finished, or whose answer is wrong or unreadable) and duplicated (two ids for one request,
one id for two requests, or more jobs in the broker than requests), with the detection
and recovery times it saw. Exit status 0 only if lost and duplicated are both 0.

With `--brokers N` (issue 12) it runs N brokers on one store (`--store URL`, or a
throwaway PostgreSQL it starts and removes), workers connected to all of them, and
producers given every broker's endpoint (producer P starting at broker P mod N); a
broker kill picks one at random and restarts it on its endpoints. Job numbers then come
from a database sequence, which a killed broker's unfinished transaction may skip: ids
must be unique, not contiguous.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import shutil
import signal
import statistics as stats
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench.cluster import BrokerGroup
from bench.postgres import postgres_server
from bench.reference import QUESTIONS, Reference, close_enough
from clients import Client
from protocol import config
from protocol import messages as m
from protocol.errors import BrokerUnavailable, JobFailed, JobTimeout, LssError, RequestRefused
from protocol.lifetime import die_with_parent
from protocol.logs import FORMAT
from protocol.messages import STATE_STATISTICS, STATISTICS

SUBMIT_TIMEOUT_S = 10.0  # then the same request is sent again (same request id)
WAIT_TIMEOUT_S = 60.0
SETTLE_S = 40.0  # after the chaos, how long every recorded job may take to finish
NO_SUCH_STATE = "Atlantis"  # a state the data set does not have
SLEEP_SHARE, RESUBMIT_SHARE, WAIT_SHARE = 0.05, 0.1, 0.05
RUN_SHARE, PUBLIC_SHARE = 0.1, 0.4  # Client.run, Client.submit; the rest: chosen request ids


@dataclass(frozen=True)
class SoakConfig:
    """What to run: `minutes` of chaos with a kill every `kill_every_s` (min, max)."""

    minutes: float = 1.0
    workers: int = 3
    producers: int = 4
    rate_per_producer: float = 25.0  # jobs per second
    kill_every_s: tuple[float, float] = (2.0, 5.0)
    broker_share: float = 0.25  # of the kills
    max_broker_down_s: float = 1.5
    seed: int = 1
    data: Path | None = None
    brokers: int = 1
    store: str | None = None  # None: SQLite (one broker); else a postgresql:// URL
    lease_s: float = 2.0  # each broker's lease on a shared store


@dataclass(frozen=True)
class Spec:
    """A job to submit and the outcome it must have: ("done", answer) or ("error", text
    its reason must contain)."""

    statistic: str
    params: dict[str, Any]
    expected: tuple[str, Any]


@dataclass
class Ledger:
    """Every job id handed out, to whom, and what the producers saw (thread-safe)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_request: dict[str, str] = field(default_factory=dict)
    by_job: dict[str, str] = field(default_factory=dict)
    specs: dict[str, Spec] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def record(self, request: str, job: str, spec: Spec) -> None:
        with self.lock:
            if self.by_request.setdefault(request, job) != job:
                self.counts["duplicated"] += 1  # one request, two ids
            if self.by_job.setdefault(job, request) != request:
                self.counts["duplicated"] += 1  # one id, two requests
                self.counts["ids_reused"] += 1
            self.specs[job] = spec

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


@dataclass
class Times:
    """What the chaos measured, in seconds."""

    worker_kills: list[tuple[float, int]] = field(default_factory=list)  # (epoch, pid)
    broker_serving: list[float] = field(default_factory=list)
    broker_restart: list[float] = field(default_factory=list)  # start -> serving
    broker_recovered: list[float] = field(default_factory=list)


class Soak:
    """One soak run on its own service; `run()` returns the report as a dict."""

    def __init__(self, cfg: SoakConfig, cluster: BrokerGroup, menu: list[Spec]) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.menu = [s for s in menu if not s.statistic.startswith("_")]
        self.sleeps = [s for s in menu if s.statistic.startswith("_")]
        self.ledger = Ledger()
        self.times = Times()
        self.stop = threading.Event()
        self.rng = random.Random(cfg.seed)

    def run(self) -> dict[str, Any]:
        self.cluster.start_brokers()
        self.cluster.start_workers(self.cfg.workers, diagnostics=True)
        producers = [
            threading.Thread(target=self._produce, args=(n,), name=f"producer-{n}")
            for n in range(self.cfg.producers)
        ]
        for thread in producers:
            thread.start()
        try:
            self._chaos(time.monotonic() + self.cfg.minutes * 60)
        finally:
            self.stop.set()
            for thread in producers:
                thread.join()
        return self._verdict()

    # --- producers ------------------------------------------------------------------

    def _produce(self, number: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + number)
        with Client(self.cluster.client_endpoints(number), timeout=WAIT_TIMEOUT_S) as client:
            while not self.stop.is_set():
                spec = rng.choice(self.sleeps if rng.random() < SLEEP_SHARE else self.menu)
                self._one_job(client, spec, rng)
                self.stop.wait(rng.expovariate(self.cfg.rate_per_producer))

    def _one_job(self, client: Client, spec: Spec, rng: random.Random) -> None:
        mode = rng.random()
        if mode < RUN_SHARE:
            self._run(client, spec)
            return
        if mode < RUN_SHARE + PUBLIC_SHARE:
            job = self._public_submit(client, spec)
        else:
            job = self._submit_with_retries(client, spec, rng)
        if job is not None and rng.random() < WAIT_SHARE:
            self._wait_now(client, job)

    def _run(self, client: Client, spec: Spec) -> None:
        """Submit-and-wait in one call: no job id to record, so judge the answer now."""
        self.ledger.count("run_requests")
        try:
            answer: Any = client.run(spec.statistic, **spec.params)
        except JobFailed as exc:
            self.ledger.count("run:" + _judge_error(str(exc), spec))
        except (JobTimeout, BrokerUnavailable):
            self.ledger.count("run:unfinished")
        else:
            self.ledger.count("run:" + _judge_answer(answer, spec))

    def _public_submit(self, client: Client, spec: Spec) -> str | None:
        try:
            job = client.submit(spec.statistic, **spec.params)
        except BrokerUnavailable:
            self.ledger.count("unconfirmed")  # may or may not have become a job
            return None
        self.ledger.record(uuid.uuid4().hex, job, spec)
        return job

    def _submit_with_retries(self, client: Client, spec: Spec, rng: random.Random) -> str | None:
        request = uuid.uuid4().hex
        job = _submit_until_answered(client, request, spec, self.ledger)
        if job is not None:
            self.ledger.record(request, job, spec)
            if rng.random() < RESUBMIT_SHARE:
                again = _submit_until_answered(client, request, spec, self.ledger)
                if again is not None:
                    self.ledger.record(request, again, spec)
        return job

    def _wait_now(self, client: Client, job: str) -> None:
        try:
            client.wait(job, timeout=WAIT_TIMEOUT_S)
        except JobFailed:
            pass  # judged at the end, like every other job
        except LssError:  # JobTimeout, BrokerUnavailable, UnknownJob
            self.ledger.count("waits_failed")
            return
        self.ledger.count("waits_ok")

    # --- chaos ----------------------------------------------------------------------

    def _chaos(self, deadline: float) -> None:
        low, high = self.cfg.kill_every_s
        while time.monotonic() < deadline:
            if self.stop.wait(min(self.rng.uniform(low, high), deadline - time.monotonic())):
                return
            if time.monotonic() >= deadline:
                return
            kills = len(self.times.worker_kills) + len(self.times.broker_serving)
            if kills == 1 or (kills > 1 and self.rng.random() < self.cfg.broker_share):
                self._kill_broker()  # the first kill is a worker, the second the broker
            else:
                self._kill_worker()

    def _kill_worker(self) -> None:
        live = [w for w in self.cluster.workers if w.poll() is None]
        victim = self.rng.choice(live)
        self.times.worker_kills.append((time.time(), victim.pid))
        victim.kill()
        victim.wait()
        self.cluster.start_worker(diagnostics=True)

    def _kill_broker(self) -> None:
        number = self.rng.randrange(len(self.cluster.services))
        killed = time.monotonic()
        self.cluster.kill_broker(number)
        self.stop.wait(self.rng.uniform(0, self.cfg.max_broker_down_s))
        restarted = time.monotonic()
        self.cluster.start_broker(number)
        self.times.broker_restart.append(time.monotonic() - restarted)
        self.times.broker_serving.append(time.monotonic() - killed)
        self.cluster.wait_workers(self.cluster.live_workers())
        self.times.broker_recovered.append(time.monotonic() - killed)

    # --- the verdict ----------------------------------------------------------------

    def _verdict(self) -> dict[str, Any]:
        with Client(self.cluster.client_endpoints(), timeout=WAIT_TIMEOUT_S) as client:
            outcomes = _judge_all(client, self.ledger.specs, time.monotonic() + SETTLE_S)
            listing = client.jobs()
        counts = self.ledger.counts
        outcomes.update({k[4:]: n for k, n in counts.items() if k.startswith("run:")})
        requests = len(self.ledger.by_request) + counts["run_requests"]
        extra_jobs = max(0, len(listing) - requests - counts["unconfirmed"])
        seqs = sorted(m.job_seq(job) or 0 for job in listing)
        kills = {"worker": len(self.times.worker_kills), "broker": len(self.times.broker_serving)}
        return {
            "submitted": requests,
            "finished": outcomes.total() - outcomes["unfinished"],
            "lost": outcomes["unfinished"] + outcomes["wrong"] + outcomes["gave_up"],
            "duplicated": counts["duplicated"] + extra_jobs,
            "outcomes": dict(outcomes),
            "runs": counts["run_requests"],
            "unconfirmed_submits": counts["unconfirmed"],
            "submit_retries": counts["submit_retries"],
            "broker_jobs": len(listing),
            "ids_contiguous": seqs == list(range(1, len(seqs) + 1)),
            "ids_unique": counts["ids_reused"] == 0 and len(set(seqs)) == len(seqs),
            "brokers": len(self.cluster.services),
            "waits_during_chaos": {"ok": counts["waits_ok"], "failed": counts["waits_failed"]},
            "kills": kills,
            "detection_s": _summary(_detections(self.cluster, self.times.worker_kills)),
            "broker_serving_s": _summary(self.times.broker_serving),
            "broker_restart_s": _summary(self.times.broker_restart),
            "broker_recovered_s": _summary(self.times.broker_recovered),
        }


def _submit_until_answered(client: Client, request: str, spec: Spec, ledger: Ledger) -> str | None:
    """Submit under `request` until the broker answers (the same id each time it is asked)."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S + SETTLE_S
    while time.monotonic() < deadline:
        try:
            return client.submit_as(request, spec.statistic, spec.params, SUBMIT_TIMEOUT_S)
        except BrokerUnavailable:
            ledger.count("submit_retries")
        except RequestRefused as exc:
            ledger.count(f"refused: {exc.reason}")
            return None
    ledger.count("unconfirmed")
    return None


def _judge_all(client: Client, specs: dict[str, Spec], deadline: float) -> Counter[str]:
    """Wait for every job (pipelined) and compare its outcome with its spec."""
    verdicts: Counter[str] = Counter()
    jobs = list(specs)
    for start in range(0, len(jobs), 500):
        batch = jobs[start : start + 500]
        states = client.wait_all(batch, timeout=max(0.1, deadline - time.monotonic()))
        for job in batch:
            verdicts[_judge(states[job], specs[job])] += 1
    return verdicts


def _judge(state: dict[str, Any], spec: Spec) -> str:
    if state["status"] == m.JobStatus.RUNNING.value:
        return "unfinished"
    if state["status"] == m.JobStatus.ERROR.value:
        return _judge_error(state["reason"], spec)  # "Invalid job_id" or "expired": "wrong"
    if state["status"] == m.JobStatus.CANCELLED.value:
        return "cancelled"  # a final state: cancelled, or its deadline passed
    return _judge_answer(state["data"], spec)


def _judge_error(reason: str, spec: Spec) -> str:
    want_status, named = spec.expected
    if want_status == "error" and named in reason:
        return "error"
    return "gave_up" if "was lost 3 times" in reason else "wrong"


def _judge_answer(answer: Any, spec: Spec) -> str:
    want_status, want = spec.expected
    return "done" if want_status == "done" and close_enough(answer, want) else "wrong"


def _detections(cluster: BrokerGroup, kills: list[tuple[float, int]]) -> list[float]:
    """Seconds from each worker SIGKILL to the first broker's worker_lost event for it."""
    lost = [(e["t"], e["worker_pid"]) for e in cluster.events("worker_lost")]
    found = []
    for killed_at, pid in kills:
        times = [t for t, p in lost if p == pid and t >= killed_at - 0.001]
        if times:  # none when the broker restarted before it noticed
            found.append(min(times) - killed_at)
    return found


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "median": round(stats.median(values), 3),
        "max": round(max(values), 3),
    }


def build_menu(data: Path) -> list[Spec]:
    """The jobs producers draw from, with the answers of bench.reference: plain Python
    over the CSV, sharing no code with the workers under test. A state without data
    (NO_SUCH_STATE) must end as an error that names it."""
    reference = Reference(data)
    questions = [question for question in QUESTIONS if reference.rows.get(question)][:3]
    common = set.intersection(*(set(reference.states(question)) for question in questions))
    states = sorted(common)[:3]
    menu = []
    for question, name in ((q, n) for q in questions for n in STATISTICS):
        if name not in STATE_STATISTICS:
            menu.append(
                Spec(name, {"question": question}, ("done", reference.answer(name, question)))
            )
            continue
        for state in states:
            answer = reference.answer(name, question, state)
            menu.append(Spec(name, {"question": question, "state": state}, ("done", answer)))
        menu.append(
            Spec(name, {"question": question, "state": NO_SUCH_STATE}, ("error", NO_SUCH_STATE))
        )
    sleeps = [Spec("_sleep", {"seconds": s}, ("done", {"slept_s": s})) for s in (0.05, 0.1, 0.3)]
    return menu + sleeps


def print_report(report: dict[str, Any], cfg: SoakConfig, out: Callable[[str], None]) -> None:
    store = f"{cfg.brokers} broker(s) on {'PostgreSQL' if cfg.store else 'SQLite'}"
    shape = f"{store}, {cfg.workers} workers, {cfg.producers} producers, seed {cfg.seed}"
    out(f"soak: {cfg.minutes:g} min, {shape}")
    for key in ("submitted", "finished", "lost", "duplicated"):
        out(f"  {key:<11} {report[key]}")
    out(f"  kills       {report['kills']}")
    out(f"  detection   worker SIGKILL -> broker's worker_lost event: {report['detection_s']}")
    out(f"  recovery    broker SIGKILL -> serving: {report['broker_serving_s']}")
    out(f"              (of which restart -> serving: {report['broker_restart_s']})")
    out(f"              broker SIGKILL -> all workers back: {report['broker_recovered_s']}")
    out("SOAK_RESULT " + json.dumps(report, sort_keys=True))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0, help="length of the chaos (default 1)")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--rate", type=float, default=25.0, help="jobs per second per producer")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    p.add_argument("--data", type=Path, help="CSV file (default: a generated stand-in)")
    p.add_argument("--state-dir", type=Path, help="kept afterwards (default: a temp dir)")
    p.add_argument("--brokers", type=int, default=1, help="brokers on one store (default 1)")
    p.add_argument("--store", help="the brokers' postgresql:// URL (default with --brokers > 1:"
                   " a throwaway PostgreSQL)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    args = parse_args(argv)
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="lss-soak-"))
    state.mkdir(parents=True, exist_ok=True)
    cfg = SoakConfig(
        minutes=args.minutes, workers=args.workers, producers=args.producers,
        rate_per_producer=args.rate, seed=args.seed, data=args.data, brokers=args.brokers,
        store=args.store,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(filename=state / "soak.log", level=logging.INFO, format=FORMAT)
    data = cfg.data or _standin(state)
    with contextlib.ExitStack() as stack:
        if cfg.brokers > 1 and not cfg.store:
            cfg = replace(cfg, store=stack.enter_context(postgres_server()).database())
        report = soak(cfg, state, data)
    print_report(report, cfg, print)
    ok = report["lost"] == 0 and report["duplicated"] == 0
    if ok and args.state_dir is None:
        shutil.rmtree(state, ignore_errors=True)
    elif not ok:
        print(f"logs kept in {state}", file=sys.stderr)
    return config.EXIT_OK if ok else config.EXIT_FAILURE


def soak(cfg: SoakConfig, state: Path, data: Path) -> dict[str, Any]:
    """One soak on a cluster of its own, stopped afterwards (also on failure)."""
    lease = {"broker_lease_s": cfg.lease_s} if cfg.store else {}
    cluster = BrokerGroup(state / "service", data, cfg.brokers, store=cfg.store, **lease)
    try:
        return Soak(cfg, cluster, build_menu(data)).run()
    finally:
        cluster.stop()


def _standin(state: Path) -> Path:
    from workers.standin import generate

    path = state / "standin.csv"
    generate(path, rows=18_000)
    return path


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)  # runs the `finally` that stops all


if __name__ == "__main__":
    sys.exit(main())
