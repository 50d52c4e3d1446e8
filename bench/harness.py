"""Our service as real processes, for the tests, the bench and the soak: one launcher.

`Service` runs `python -m broker` and `python -m workers.worker` processes on loopback
ports the OS picks, with a private state directory, the way a user would; every wait is
a condition polled against a deadline, and `stop()` (also on leaving a `with` block)
terminates, waits, then kills. What the tests and the soak measure about the processes
comes from the `stats` operation and from structured events (`protocol.events`), never
from log text. Tests may import this module; it never imports the tests.

The processes die with the one that started them (`protocol.lifetime`): the death signal
follows the *thread* that spawned them, so start them from one that lives as long as
they should (the main thread, or an executor thread that outlives its use).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from bench import procstat
from bench.service import Processes, Target, read_json, wait_until
from broker.sockets import ENDPOINTS_FILE
from clients import Client
from protocol.events import read_events


@dataclass
class WorkerLoad:
    """How one of our workers came up: wall time to registration, its load time, memory."""

    pid: int
    ready_s: float
    load_s: float | None = None
    memory_mb: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayProcess:
    """A started HTTP gateway: its process, `host:port`, and the file that names them."""

    proc: subprocess.Popen[bytes]
    address: str
    address_file: Path


class Service(Processes):
    """A broker (flags from `broker_flags`, e.g. max_queue=5) plus `workers` workers.

    `with Service(...)` / `start()` starts both; tests may instead call `start_broker()`
    and `start_workers(n, **flags)` themselves, restart the broker on the same endpoints
    and state (`kill_broker()`, `start_broker()`), or add workers one at a time.
    """

    name = "ours"

    def __init__(
        self,
        state_dir: Path,
        data: Path,
        workers: int = 2,
        *,
        broker_prefix: list[str] | None = None,
        ready_timeout_s: float = 60.0,
        **broker_flags: Any,
    ) -> None:
        super().__init__(state_dir)
        self.data = data
        self.worker_count = workers
        self.broker_prefix = broker_prefix or []
        self.ready_timeout_s = ready_timeout_s
        self.broker_flags = broker_flags
        self.client_endpoint = self.worker_endpoint = "tcp://127.0.0.1:*"
        self.broker: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.loads: list[WorkerLoad] = []
        self.env["LSS_LOG_LEVEL"] = "INFO"

    def start(self) -> None:
        self.start_broker()
        self.start_workers(self.worker_count)

    def start_broker(self, **extra_flags: Any) -> None:
        """Start (or restart, on the same endpoints and state) the broker; wait for a ping."""
        endpoints = self.state_dir / ENDPOINTS_FILE
        endpoints.unlink(missing_ok=True)
        args = [*self.broker_prefix, "-m", "broker", f"--data={self.data}",
                f"--state-dir={self.state_dir}", f"--client-endpoint={self.client_endpoint}",
                f"--worker-endpoint={self.worker_endpoint}",
                *as_flags({**self.broker_flags, **extra_flags})]  # fmt: skip
        self.broker = self.spawn(args, "broker")

        def bound() -> dict[str, Any] | None:
            self.check_alive([self.broker] if self.broker else [])
            return read_json(endpoints)

        found = wait_until(bound, self.ready_timeout_s, "the broker's endpoints file")
        self.client_endpoint, self.worker_endpoint = found["client"], found["worker"]
        with self.client() as client:
            client.ping()

    def start_worker(self, **flags: Any) -> subprocess.Popen[bytes]:
        """Start one worker process (not supervised, not waited for)."""
        name = f"worker-{len(self.workers) + 1}"
        args = ["-m", "workers.worker", f"--connect={self.worker_endpoint}",
                f"--data={self.data}", f"--state-dir={self.state_dir}", f"--name={name}",
                *as_flags(flags)]  # fmt: skip
        proc = self.spawn(args, name)
        self.workers.append(proc)
        return proc

    def start_workers(self, count: int, **flags: Any) -> list[subprocess.Popen[bytes]]:
        """Start `count` workers; wait until the broker has registered every live one."""
        started_at = time.monotonic()
        started = [self.start_worker(**flags) for _ in range(count)]
        ready: dict[int, float] = {}
        with self.client() as client:

            def all_registered() -> bool:
                self.check_alive(started)
                for info in client.stats()["workers"]:
                    ready.setdefault(int(info["pid"]), time.monotonic() - started_at)
                return all(proc.pid in ready for proc in started)

            wait_until(all_registered, self.ready_timeout_s, f"{count} new worker(s)")
        self.loads += [self._load(proc.pid, ready[proc.pid]) for proc in started]
        return started

    def _load(self, pid: int, ready_s: float) -> WorkerLoad:
        loaded = [e for e in read_events(self.state_dir, "data_loaded") if e["pid"] == pid]
        load_s = loaded[-1]["load_s"] if loaded else None
        return WorkerLoad(pid, ready_s, load_s, procstat.memory_mb(pid))

    def start_supervisor(self, count: int, *flags: str) -> subprocess.Popen[bytes]:
        """Start `python -m workers -n count` (restarts crashed workers); wait for them."""
        args = ["-m", "workers", "-n", str(count), f"--connect={self.worker_endpoint}",
                f"--data={self.data}", f"--state-dir={self.state_dir}", *flags]  # fmt: skip
        proc = self.spawn(args, "supervisor")
        self.wait_workers(count)
        return proc

    def start_gateway(self, *flags: str) -> GatewayProcess:
        """Start `python -m clients.gateway` on a free loopback port; wait for its address."""
        name = f"gateway-{self.roles.count('gateway') + 1}"
        address_file = self.state_dir / name / "gateway.address"
        args = ["-m", "clients.gateway", "--listen=127.0.0.1:0",
                f"--endpoint={self.client_endpoint}", f"--state-dir={address_file.parent}",
                *flags]  # fmt: skip
        proc = self.spawn(args, name)

        def address() -> str | None:
            self.check_alive([proc])
            return address_file.read_text().strip() if address_file.exists() else None

        return GatewayProcess(proc, wait_until(address, self.ready_timeout_s, name), address_file)

    def wait_workers(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until exactly `count` workers are registered; return their descriptions."""
        workers: list[dict[str, Any]] = []
        with self.client(timeout=5) as client:

            def registered() -> bool:
                workers[:] = client.stats()["workers"]
                return len(workers) == count

            wait_until(registered, timeout_s, f"{count} registered worker(s)")
        return workers

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The structured events the service's processes recorded (see protocol.events)."""
        return read_events(self.state_dir, event)

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.client_endpoint, timeout=timeout)

    def kill_broker(self) -> None:
        """SIGKILL the broker (its workers stay, and reconnect to the next one)."""
        if self.broker is not None:
            self.broker.kill()
            self.broker.wait()

    def settle(self) -> None:
        with self.client() as client:
            wait_until(lambda: client.num_jobs() == 0, 60.0, "the broker to finish its jobs")

    def target(self) -> Target:
        return Target("ours", self.client_endpoint)


def as_flags(flags: dict[str, Any]) -> list[str]:
    """Command-line flags from keyword arguments: max_queue=5 -> --max-queue=5."""
    out = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out.append(f"{flag}={value}")
    return out


@contextlib.contextmanager
def raw_dealer(endpoint: str, *, receive_hwm: int | None = None) -> Iterator[zmq.Socket[bytes]]:
    """A DEALER on a context of its own, connected to `endpoint` and dropped at once on
    leaving (no linger): for the attacks that speak the wire protocol by hand."""
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        if receive_hwm is not None:
            sock.setsockopt(zmq.RCVHWM, receive_hwm)
        sock.connect(endpoint)
        yield sock
