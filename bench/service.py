"""Services under test as real processes: start, wait until ready, always stop.

`Processes` is the shared part (spawn with logs in a state directory, wait on conditions
with deadlines, terminate then kill); `OursService` runs `python -m broker` and
`python -m workers.worker` processes on OS-picked loopback ports, the way a user would.
Each service hands the producers a `Target`: which driver to use and where to connect.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from bench import procstat

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 10.0
T = TypeVar("T")
LOADED_RE = re.compile(r"loaded .* in ([0-9.]+) s")


@dataclass(frozen=True)
class Target:
    """What a producer process needs: the driver kind and its address (picklable)."""

    kind: str  # "ours", "echo", "original" or "celery"
    address: str
    options: dict[str, Any] = field(default_factory=dict)


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `check` until it returns something truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None while it is missing or half written."""
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return loaded


class Processes:
    """A group of child processes with logs under `state_dir`; a context manager."""

    name = "service"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.roles: list[str] = []  # per process: "broker", "worker", ...
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        for secret in ("LSS_CURVE_SERVER_KEY", "LSS_CURVE_SECRET", "LSS_CURVE_DIR"):
            self.env.pop(secret, None)

    def spawn(self, args: list[str], log_name: str, python: bool = True) -> subprocess.Popen[bytes]:
        """Start `python args...` (or `args...`), stdout and stderr to STATE/<log_name>.log."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, *args] if python else args
        with open(self.state_dir / f"{log_name}.log", "ab") as log:
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        self.procs.append(proc)
        self.roles.append(log_name.split("-", maxsplit=1)[0])  # worker-1, worker-2 -> worker
        return proc

    def check_alive(self) -> None:
        """Raise with the logs if a process died while we were waiting for it."""
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: {proc.args!r} exited with {proc.returncode}\n{self.logs()}"
                )

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of the service's processes (and their children), by role."""
        parts: dict[str, float] = {}
        for proc, role in zip(self.procs, self.roles, strict=True):
            parts[role] = parts.get(role, 0.0) + procstat.tree_cpu_s([proc.pid])
        return parts

    def settle(self) -> None:
        """Wait until work left over from a previous run is finished (if the service can tell)."""

    def stop(self) -> None:
        """Terminate every process (SIGTERM, wait, then SIGKILL); safe to call twice."""
        for proc in reversed(self.procs):  # last started first: clients of a server before it
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)

    def logs(self, tail_chars: int = 4000) -> str:
        text = "\n".join(p.read_text(errors="replace") for p in self.state_dir.glob("*.log"))
        return text[-tail_chars:]

    def __enter__(self) -> Processes:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def target(self) -> Target:
        raise NotImplementedError


@dataclass
class WorkerLoad:
    """How one of our workers came up: wall time to registration, its own load figure, memory."""

    pid: int
    ready_s: float
    load_s: float | None = None
    memory_mb: dict[str, float] = field(default_factory=dict)


class OursService(Processes):
    """Our broker (default settings: durable SQLite store) and `workers` worker processes."""

    name = "ours"

    def __init__(
        self,
        state_dir: Path,
        data: Path,
        workers: int = 2,
        *,
        broker_prefix: list[str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(state_dir)
        self.data = data
        self.worker_count = workers
        self.broker_prefix = broker_prefix or []
        self.ready_timeout_s = ready_timeout_s
        self.client_endpoint = self.worker_endpoint = ""
        self.loads: list[WorkerLoad] = []
        self.broker: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._start_broker()
        self._start_workers()

    def _start_broker(self) -> None:
        endpoints = self.state_dir / "broker.endpoints.json"
        endpoints.unlink(missing_ok=True)
        args = [
            *self.broker_prefix,
            "-m",
            "broker",
            f"--data={self.data}",
            f"--state-dir={self.state_dir}",
            "--client-endpoint=tcp://127.0.0.1:*",
            "--worker-endpoint=tcp://127.0.0.1:*",
        ]
        self.broker = self.spawn(args, "broker")

        def bound() -> dict[str, Any] | None:
            self.check_alive()
            return read_json(endpoints)

        found = wait_until(bound, self.ready_timeout_s, "the broker's endpoints file")
        self.client_endpoint, self.worker_endpoint = found["client"], found["worker"]
        with self.client() as client:
            client.ping()

    def _start_workers(self) -> None:
        started = time.monotonic()
        workers = [
            self.spawn(
                [
                    "-m",
                    "workers.worker",
                    f"--connect={self.worker_endpoint}",
                    f"--data={self.data}",
                    f"--state-dir={self.state_dir}",
                    f"--name=worker-{n}",
                ],
                f"worker-{n}",
            )
            for n in range(1, self.worker_count + 1)
        ]
        ready: dict[int, float] = {}
        with self.client() as client:

            def all_registered() -> bool:
                self.check_alive()
                for info in client.stats()["workers"]:
                    ready.setdefault(int(info["pid"]), time.monotonic() - started)
                return len(ready) >= len(workers)

            wait_until(all_registered, self.ready_timeout_s, f"{len(workers)} worker(s)")
        self.loads = [
            WorkerLoad(w.pid, ready[w.pid], self._load_s(n), procstat.memory_mb(w.pid))
            for n, w in enumerate(workers, start=1)
        ]

    def _load_s(self, number: int) -> float | None:
        """The load time a worker logged ("loaded ... in X s"), if it did."""
        path = self.state_dir / f"worker-{number}.log"
        found = LOADED_RE.search(path.read_text(errors="replace")) if path.exists() else None
        return float(found.group(1)) if found else None

    def client(self, timeout: float = 10.0) -> Any:
        from clients import Client

        return Client(self.client_endpoint, timeout=timeout)

    def settle(self) -> None:
        with self.client() as client:
            wait_until(lambda: client.num_jobs() == 0, 60.0, "the broker to finish its jobs")

    def stop(self) -> None:
        """SIGTERM the broker first: it drains, releases the workers, and exits cleanly."""
        if self.broker is not None and self.broker.poll() is None:
            self.broker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.broker.wait(timeout=STOP_TIMEOUT_S)
        super().stop()

    def target(self) -> Target:
        return Target("ours", self.client_endpoint)
