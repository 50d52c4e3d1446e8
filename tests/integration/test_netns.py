"""Several hosts, proven with Linux network namespaces: CURVE on, links cut, wrong keys.

A private lab LAN (tests.netns; 10.203.0.0/24, reachable from nowhere else) holds a broker
host, two worker hosts, a producer host and a rogue host, each running the real processes
(`ip netns exec ... python -m ...`). The broker binds the broker host's address; workers
and producers hold authorized keys, except the rogue host's, whose key pair is unknown.
Worker host w2 has no data file: it fetches the data set from the broker over CURVE.

The test shows, in order: answers agree with an independent computation (bench.reference,
plain Python sharing no code with the workers); the rogue host gets nothing and is
logged; unplugging w1 while it runs a long `_sleep` job moves that job to w2 within the
heartbeat window (the failover time is printed); plugging w1 back in makes its worker
register again. Run as root: `pytest -m netns -s` (it is skipped otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.reference import Reference, assert_close
from bench.service import ROOT, wait_until
from protocol import config
from protocol.curve import generate_keys, load_public_key
from protocol.events import read_events
from protocol.messages import STATE_STATISTICS, STATISTICS
from tests.netns import Agent, AgentError, Lab, built, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.netns]

HOSTS = {"broker": 1, "w1": 11, "w2": 12, "prod": 21, "rogue": 31}
CLIENT_PORT, WORKER_PORT = 5555, 5556
OBESITY = "Percent of adults aged 18 years and older who have obesity"
INACTIVE = "Percent of adults who engage in no leisure-time physical activity"
JOBS: list[tuple[str, dict[str, Any]]] = [
    (stat, {"question": q})
    for q in (OBESITY, INACTIVE)
    for stat in STATISTICS
    if stat not in STATE_STATISTICS
] + [
    (stat, {"question": OBESITY, "state": state})
    for state in ("Ohio", "Texas")
    for stat in STATISTICS
    if stat in STATE_STATISTICS
]
SLEEP_S = 4.0
HEARTBEAT_WINDOW_S = config.HEARTBEAT_INTERVAL_MS / 1000 * config.HEARTBEAT_LIVENESS


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with built(HOSTS) as lab:
        yield lab


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSS_")}
    return {**env, "PYTHONPATH": str(ROOT), "LSS_LOG_LEVEL": "INFO"}


class Deployment:
    """The processes of the lab, started the way docs/deployment.md says."""

    def __init__(self, lab: Lab, base: Path, data: Path) -> None:
        self.lab, self.base, self.data = lab, base, data
        self.keys, self.rogue_keys = base / "keys", base / "rogue-keys"
        generate_keys(self.keys, ["worker", "client"])
        generate_keys(self.rogue_keys, ["worker:rogue"])
        self.env = clean_env()
        broker = lab.address("broker")
        self.client_endpoint = f"tcp://{broker}:{CLIENT_PORT}"
        self.worker_endpoint = f"tcp://{broker}:{WORKER_PORT}"
        self.pids: dict[str, int] = {}

    def state(self, role: str) -> Path:
        path = self.base / role
        path.mkdir(exist_ok=True)
        return path

    def start_broker(self) -> None:
        argv = [sys.executable, "-m", "broker", f"--data={self.data}",
                f"--state-dir={self.state('broker')}", f"--curve-dir={self.keys}",
                f"--client-endpoint={self.client_endpoint}",
                f"--worker-endpoint={self.worker_endpoint}"]  # fmt: skip
        self.pids["broker"] = self._spawn("broker", argv).pid
        endpoints = self.state("broker") / "broker.endpoints.json"
        wait_until(endpoints.exists, 20, "the broker to bind")

    def start_worker(self, role: str, secret: Path, *flags: str) -> None:
        argv = [sys.executable, "-m", "workers.worker", f"--connect={self.worker_endpoint}",
                f"--state-dir={self.state(role)}", f"--name={role}", "--credit=2",
                "--diagnostics", f"--curve-server-key={self.keys / 'broker.key'}",
                f"--curve-secret={secret}", *flags]  # fmt: skip
        self.pids[role] = self._spawn(role, argv).pid

    def agent(self, role: str, secret: Path, timeout_s: float) -> Agent:
        argv = [sys.executable, "-m", "tests.netns", "agent", self.client_endpoint,
                f"--server-key={self.keys / 'broker.key'}", f"--secret={secret}",
                f"--timeout={timeout_s}"]  # fmt: skip
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        return Agent(self._spawn(f"{role}-agent", argv, role, **pipes))

    def _spawn(
        self, name: str, argv: list[str], role: str | None = None, **popen: Any
    ) -> subprocess.Popen[bytes]:
        log = self.base / f"{name}.stderr"
        return self.lab.spawn(role or name, argv, log, self.env, cwd=ROOT, **popen)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.base.glob("*.stderr")))


def expected_answers(data: Path) -> list[dict[str, Any]]:
    """The answers to JOBS by bench.reference: plain Python over the CSV, sharing no code
    with the workers under test."""
    reference = Reference(data)
    return [
        reference.answer(stat, params["question"], params.get("state")) for stat, params in JOBS
    ]


def workers_by_pid(agent: Agent) -> dict[int, dict[str, Any]]:
    return {w["pid"]: w for w in agent.call("stats")["workers"]}


def test_distributed_secure_service(lab: Lab, tmp_path: Path, standin_csv: Path) -> None:
    assert all(
        line.split()[0] != "default" and ("10.203.0." in line or not line)
        for table in lab.routes().values()
        for line in table
    ), f"a route leads out of the lab: {lab.routes()}"
    expected = expected_answers(standin_csv)
    world = Deployment(lab, tmp_path, standin_csv)
    try:
        run_scenario(world, expected)
    except BaseException:
        print(f"--- logs ---\n{world.logs()[-30000:]}")
        raise


def run_scenario(world: Deployment, expected: list[dict[str, Any]]) -> None:
    world.start_broker()
    keys, rogue = world.keys, world.rogue_keys
    world.start_worker("w1", keys / "worker.key_secret", f"--data={world.data}")
    world.start_worker("w2", keys / "worker.key_secret", "--fetch-data",
                       f"--data={world.base / 'no-such-dir' / world.data.name}")  # fmt: skip
    world.start_worker("rogue", rogue / "rogue.key_secret", f"--data={world.data}")
    producer = world.agent("prod", keys / "client.key_secret", timeout_s=10)
    outsider = world.agent("rogue", rogue / "rogue.key_secret", timeout_s=1.5)
    for op in ("ping", "submit", "get"):  # answered in the background, checked below
        outsider.send(op, statistic="global_mean", params={"question": OBESITY}, job="job_id_1")
    wait_until(
        lambda: set(workers_by_pid(producer)) == {world.pids["w1"], world.pids["w2"]},
        40, "the workers of w1 and w2 to register",
    )  # fmt: skip

    answers = producer.call("map", jobs=JOBS)
    assert len(answers) == len(expected)
    for (statistic, params), answer, want in zip(JOBS, answers, expected, strict=True):
        assert_close(answer, want, f"{statistic} {params}")

    check_rogue_refused(world, producer, outsider)
    failover_s = unplug_w1_mid_job(world, producer)
    rejoin_s = plug_w1_back(world, producer)
    print(f"\nfailover {failover_s:.2f} s (heartbeat window {HEARTBEAT_WINDOW_S:g} s); "
          f"rejoin {rejoin_s:.2f} s after the link came back")  # fmt: skip
    stats = producer.call("stats")
    assert stats["jobs"]["error"] == 0
    assert stats["jobs"]["done"] == len(JOBS) + 2
    assert world.pids["rogue"] not in workers_by_pid(producer)


def in_flight(agent: Agent) -> dict[int, int]:
    """Jobs held by each registered worker, by pid."""
    return {pid: w["in_flight"] for pid, w in workers_by_pid(agent).items()}


def check_rogue_refused(world: Deployment, producer: Agent, outsider: Agent) -> None:
    """The rogue producer got no answer at all; its worker got no job; both were logged."""
    for _ in range(3):
        with pytest.raises(AgentError) as refused:
            outsider.receive(timeout_s=20)
        assert refused.value.name == "BrokerUnavailable"
    rogue_key = load_public_key(world.rogue_keys / "rogue.key").decode()
    line = f"refused {world.lab.address('rogue')} with key {rogue_key}"
    wait_until(lambda: line in world.logs(), 10, "the broker to log the rogue host")
    assert world.pids["rogue"] not in workers_by_pid(producer)


def unplug_w1_mid_job(world: Deployment, producer: Agent) -> float:
    """Cut w1's link while both hosts run a long job; return the seconds until w2 holds both."""
    w1, w2 = world.pids["w1"], world.pids["w2"]
    jobs = [producer.call("submit", statistic="_sleep", params={"seconds": SLEEP_S})
            for _ in range(2)]  # fmt: skip
    wait_until(
        lambda: in_flight(producer) == {w1: 1, w2: 1},
        10, "one long job on each worker host",
    )  # fmt: skip
    cut, cut_wall = time.monotonic(), time.time()
    world.lab.set_link("w1", up=False)
    wait_until(lambda: in_flight(producer) == {w2: 2}, HEARTBEAT_WINDOW_S * 3, "w1's job on w2")
    failover_s = time.monotonic() - cut
    print(f"\nbroker detected the loss {lost_at(world, w1) - cut_wall:.2f} s after the cut")
    for job in jobs:
        assert producer.call("wait", job=job, timeout=3 * SLEEP_S) == {"slept_s": SLEEP_S}
    assert HEARTBEAT_WINDOW_S * 0.5 < failover_s < HEARTBEAT_WINDOW_S + 1.0, failover_s
    return failover_s


def lost_at(world: Deployment, pid: int) -> float:
    """When (epoch seconds) the broker recorded losing the worker with `pid`."""
    lost = read_events(world.state("broker"), "worker_lost")
    return float(next(event["t"] for event in lost if event["worker_pid"] == pid))


def plug_w1_back(world: Deployment, producer: Agent) -> float:
    """Restore w1's link; return the seconds until its worker is registered again."""
    plugged = time.monotonic()
    world.lab.set_link("w1", up=True)
    wait_until(lambda: world.pids["w1"] in workers_by_pid(producer), 30, "w1 to rejoin")
    return time.monotonic() - plugged
