"""Several brokers across hosts (issue 12, measured), proven with network namespaces.

A private lab LAN (tests.netns) holds broker hosts a, b and c, a database host running a
real PostgreSQL that listens on its lab address (and trusts only the lab's subnet), two
worker hosts whose workers connect to all three brokers, and a producer host whose
client has all three endpoints. Each runs the real processes (`ip netns exec ...`).
The test reads the store itself over the database's Unix socket, outside the lab.

1. Cut broker host a's link mid-stream: every job of the stream is answered as
   bench/reference.py computes it, the store holds exactly one job per request, each
   finished, and a's unfinished jobs are adopted (times printed).
2. Cut the database host's link: submits are refused with `storage`; the jobs
   acknowledged before the cut all finish once the link is back, and new submits are
   accepted again. Run as root: `pytest -m netns -s` (it is skipped otherwise).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.reference import QUESTIONS, Reference, close_enough, params_for
from bench.service import ROOT, wait_until
from protocol import config
from protocol.messages import STATE_STATISTICS
from tests.integration.test_netns import clean_env
from tests.netns import SUBNET, Agent, AgentError, Lab, built, unavailable
from tests.postgres import PostgresServer, skip_reason

pytestmark = [pytest.mark.integration, pytest.mark.netns]

BROKERS = ("a", "b", "c")
HOSTS = {"a": 1, "b": 2, "c": 3, "db": 5, "w1": 11, "w2": 12, "prod": 21}
CLIENT_PORT, WORKER_PORT = 5555, 5556
LEASE_S = 2.0
WINDOW_S = config.HEARTBEAT_INTERVAL_MS / 1000 * config.HEARTBEAT_LIVENESS
Job = tuple[str, dict[str, Any]]


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = unavailable() or skip_reason()
    if reason:
        pytest.skip(reason)
    with built(HOSTS) as lab:
        yield lab


@pytest.fixture
def database(lab: Lab) -> Iterator[PostgresServer]:
    """PostgreSQL on the database host, listening on its lab address; always removed."""
    server = PostgresServer(
        listen=lab.address("db"), clients_from=f"{SUBNET}.0/24", netns=lab.ns("db")
    )
    try:
        server.start()
        yield server
    finally:
        server.remove()


class Hosts:
    """The brokers, workers and producers of the lab, started as docs/deployment.md says."""

    def __init__(self, lab: Lab, base: Path, data: Path, store: str) -> None:
        self.lab, self.base, self.data, self.store = lab, base, data, store
        self.env = clean_env()

    def endpoints(self, port: int) -> str:
        return ",".join(f"tcp://{self.lab.address(b)}:{port}" for b in BROKERS)

    def state(self, role: str) -> Path:
        path = self.base / role
        path.mkdir(exist_ok=True)
        return path

    def start_broker(self, role: str) -> None:
        address = self.lab.address(role)
        argv = ["-m", "broker", f"--data={self.data}", f"--state-dir={self.state(role)}",
                f"--store={self.store}", f"--broker-lease-s={LEASE_S}",
                f"--client-endpoint=tcp://{address}:{CLIENT_PORT}",
                f"--worker-endpoint=tcp://{address}:{WORKER_PORT}"]  # fmt: skip
        self._spawn(role, argv)
        endpoints = self.state(role) / "broker.endpoints.json"
        wait_until(endpoints.exists, 30, f"broker {role} to bind")

    def start_worker(self, role: str) -> None:
        argv = ["-m", "workers.worker", f"--connect={self.endpoints(WORKER_PORT)}",
                f"--data={self.data}", f"--state-dir={self.state(role)}", f"--name={role}",
                "--diagnostics"]  # fmt: skip
        self._spawn(role, argv)

    def agent(self, name: str, timeout_s: float) -> Agent:
        argv = ["-m", "tests.netns", "agent", self.endpoints(CLIENT_PORT),
                f"--timeout={timeout_s}"]  # fmt: skip
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        return Agent(self._spawn("prod", argv, name, **pipes))

    def _spawn(self, role: str, argv: list[str], name: str = "", **popen: Any) -> Any:
        log = self.base / f"{name or role}.stderr"
        return self.lab.spawn(role, [sys.executable, *argv], log, self.env, cwd=ROOT, **popen)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.base.glob("*.stderr")))


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql, args).fetchall()


def stream(reference: Reference) -> list[Job]:
    """Each per-state statistic of every state, on two questions: a few hundred jobs."""
    return [
        (statistic, params_for(statistic, question, state))
        for question in QUESTIONS[:2]
        for state in reference.states(question)
        for statistic in sorted(STATE_STATISTICS)
    ]


def test_brokers_on_three_hosts_survive_a_cut_broker_and_a_cut_database(
    lab: Lab, database: PostgresServer, tmp_path: Path, standin_csv: Path
) -> None:
    name = database.create_database()
    hosts = Hosts(lab, tmp_path, standin_csv, database.tcp_url(name))
    try:
        for role in BROKERS:
            hosts.start_broker(role)
        for role in ("w1", "w2"):
            hosts.start_worker(role)
        producer = hosts.agent("producer", timeout_s=60)
        wait_until(lambda: len(producer.call("stats")["workers"]) == 2, 40, "both workers on a")
        cut_a_mid_stream(lab, producer, database.url(name), Reference(standin_csv))
        cut_the_database(lab, hosts, producer, database.url(name))
    except BaseException:
        print(f"--- logs ---\n{hosts.logs()[-30000:]}")
        raise


def cut_a_mid_stream(lab: Lab, producer: Agent, url: str, reference: Reference) -> None:
    jobs = stream(reference)
    a_epoch = producer.call("stats")["cluster"]["broker_epoch"]  # it talks to a, the first
    producer.send("map", jobs=jobs)
    done = "SELECT count(*) FROM jobs WHERE status = 'done'"
    wait_until(lambda: query(url, done)[0][0] >= len(jobs) // 3, 60, "a third of the stream")
    cut = time.monotonic()
    lab.set_link("a", up=False)
    running = "SELECT count(*) FROM jobs WHERE status = 'running' AND broker_epoch = %s"
    left = query(url, running, a_epoch)[0][0]
    wait_until(lambda: query(url, running, a_epoch)[0][0] == 0, 30, "a's jobs to be adopted")
    adopted_s = time.monotonic() - cut
    answers = producer.receive(timeout_s=120)
    finished_s = time.monotonic() - cut
    print(f"\nbroker host a cut after a third of {len(jobs)} jobs: its {left} unfinished jobs"
          f" adopted after {adopted_s:.2f} s (lease {LEASE_S:g} s); the stream finished"
          f" {finished_s:.2f} s after the cut (window {WINDOW_S:g} s)")  # fmt: skip
    assert len(answers) == len(jobs)
    for (statistic, params), answer in zip(jobs, answers, strict=True):
        assert close_enough(answer, reference.answer(statistic, **params)), (statistic, params)
    rows = query(url, "SELECT count(*), count(DISTINCT request_id), count(*) FILTER"
                      " (WHERE status = 'done' AND finished_s IS NOT NULL) FROM jobs")  # fmt: skip
    assert rows == [(len(jobs), len(jobs), len(jobs))]  # none lost, none twice


def cut_the_database(lab: Lab, hosts: Hosts, producer: Agent, url: str) -> None:
    """Acknowledged jobs survive the database's absence; submits are refused meanwhile."""
    acknowledged = [
        producer.call("submit", statistic="_sleep", params={"seconds": 0.5}) for _ in range(4)
    ]
    lab.set_link("db", up=False)
    cut = time.monotonic()
    impatient = hosts.agent("impatient", timeout_s=3)
    before: list[str] = []  # the other errors met first (no broker answering in time)

    def refused() -> str | None:
        try:
            impatient.call("submit", statistic="_sleep", params={"seconds": 0.1}, timeout_s=30)
        except AgentError as exc:
            if "storage" in str(exc):
                return exc.name
            before.append(exc.name)
            return None
        raise AssertionError("a submit was accepted while the database was unreachable")

    assert wait_until(refused, 50, "a storage refusal") == "RequestRefused"
    refused_s = time.monotonic() - cut
    lab.set_link("db", up=True)
    back = time.monotonic()
    job = producer.call("submit", statistic="_sleep", params={"seconds": 0.1}, timeout_s=90)
    resumed_s = time.monotonic() - back
    for waited in [*acknowledged, job]:
        assert producer.call("wait", job=waited, timeout=60, timeout_s=90)["slept_s"] > 0
    print(f"database host cut: submits refused with `storage` {refused_s:.2f} s after the"
          f" cut; accepted again {resumed_s:.2f} s after the link came back;"
          f" {len(acknowledged)} acknowledged jobs finished; met first: {before}")  # fmt: skip
    statuses = query(url, "SELECT DISTINCT status FROM jobs")
    assert statuses == [("done",)]
