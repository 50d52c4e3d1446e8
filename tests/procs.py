"""Real broker and worker processes for tests: start, wait until ready, stop for sure.

`Service` runs `python -m broker` and worker processes on loopback ports the OS picks,
with its own state directory. Every wait is a condition polled against a deadline;
`stop()` terminates, waits, then kills, and is safe to call twice. The waiting helpers
are the bench's (bench.service), re-exported for the tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.service import ROOT, STOP_TIMEOUT_S, read_json, wait_until
from clients import Client

__all__ = ["ROOT", "STOP_TIMEOUT_S", "Service", "running", "stop_process", "wait_until"]


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal, wait up to STOP_TIMEOUT_S, then kill; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=STOP_TIMEOUT_S)


class Service:
    """A broker plus workers on loopback, with a private state directory."""

    def __init__(self, state_dir: Path, data: Path, **broker_flags: Any) -> None:
        self.state_dir = state_dir
        self.data = data
        self.broker_flags = broker_flags
        self.broker: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.client_endpoint = "tcp://127.0.0.1:*"
        self.worker_endpoint = "tcp://127.0.0.1:*"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "LSS_LOG_LEVEL": "INFO"}
        self.env.pop("LSS_CURVE_SERVER_KEY", None)
        self.env.pop("LSS_CURVE_SECRET", None)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log_path = self.state_dir / f"{log_name}.stderr"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=self.env, stdout=log, stderr=log
            )

    def start_broker(self, **extra_flags: Any) -> None:
        """Start (or restart, on the same endpoints and state) the broker; wait for a ping."""
        endpoints = self.state_dir / "broker.endpoints.json"
        endpoints.unlink(missing_ok=True)
        flags = {**self.broker_flags, **extra_flags}
        args = ["-m", "broker", f"--data={self.data}", f"--state-dir={self.state_dir}",
                f"--client-endpoint={self.client_endpoint}",
                f"--worker-endpoint={self.worker_endpoint}", *_flags(flags)]  # fmt: skip
        self.broker = self._spawn(args, "broker")
        bound = wait_until(lambda: read_json(endpoints), 20, "the broker's endpoints file")
        self.client_endpoint, self.worker_endpoint = bound["client"], bound["worker"]
        with self.client(timeout=10) as client:
            client.ping()

    def start_worker(self, **flags: Any) -> subprocess.Popen[bytes]:
        """Start one worker process (not supervised)."""
        number = len(self.workers) + 1
        args = [
            "-m", "workers.worker", f"--connect={self.worker_endpoint}", f"--data={self.data}",
            f"--state-dir={self.state_dir}", f"--name=worker-{number}", *_flags(flags),
        ]  # fmt: skip
        proc = self._spawn(args, f"worker-{number}")
        self.workers.append(proc)
        return proc

    def start_workers(self, count: int, **flags: Any) -> list[subprocess.Popen[bytes]]:
        """Start `count` workers and wait until the broker has registered all live ones."""
        started = [self.start_worker(**flags) for _ in range(count)]
        self.wait_workers(len([w for w in self.workers if w.poll() is None]))
        return started

    def wait_workers(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until exactly `count` workers are registered; return their descriptions."""
        with self.client(timeout=5) as client:

            def registered() -> list[dict[str, Any]] | None:
                workers: list[dict[str, Any]] = client.stats()["workers"]
                return workers if len(workers) == count else None

            return wait_until(registered, timeout_s, f"{count} registered worker(s)")

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.client_endpoint, timeout=timeout)

    def kill_broker(self) -> None:
        if self.broker is not None:
            self.broker.kill()
            self.broker.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Stop every process this service started, whatever state it is in."""
        for proc in [*self.workers, *([self.broker] if self.broker else [])]:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a SIGSTOPped process cannot exit
            stop_process(proc, signal.SIGKILL)

    def logs(self) -> str:
        """Everything the processes wrote to stderr, for failure messages."""
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.state_dir.glob("*.stderr"))
        )


@contextlib.contextmanager
def running(
    state_dir: Path, data: Path, workers: int = 2, **broker_flags: Any
) -> Iterator[Service]:
    """A started broker with `workers` registered workers; stopped on leaving, whatever happens."""
    svc = Service(state_dir, data, **broker_flags)
    try:
        svc.start_broker()
        svc.start_workers(workers)
        yield svc
    finally:
        svc.stop()


def _flags(flags: dict[str, Any]) -> list[str]:
    out = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out.append(f"{flag}={value}")
    return out
