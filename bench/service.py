"""Services under test as real processes: start, wait until ready, always stop.

`Processes` is the part every service shares (spawn with logs in a state directory, wait
on conditions with deadlines, terminate then kill); our own broker and workers are
`bench.harness.Service`, the echo broker, the original app and Celery subclass it too.
Each service hands the producers a `Target`: which driver to use and where to connect.
Spawned processes are told to die with this one (`protocol.lifetime`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from bench import procstat
from protocol.lifetime import child_env

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 10.0
T = TypeVar("T")
# After the first SIGTERM; then a second one: stop at once. A drain with workers takes
# well under a second; what is still draining after 2 s waits for jobs no worker runs.
DRAIN_TIMEOUT_S = 2.0
# After the second SIGTERM, then SIGKILL. Our processes stop within about a second of
# the second signal (a worker leaves a long job unfinished); this is for the stuck.
FORCE_TIMEOUT_S = 3.0


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
        self.root = ROOT  # the code the processes run: their cwd and PYTHONPATH
        self.procs: list[subprocess.Popen[bytes]] = []
        self.roles: list[str] = []  # per process: "broker", "worker", ...
        self.env = child_env({**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        for secret in ("LSS_CURVE_SERVER_KEY", "LSS_CURVE_SECRET", "LSS_CURVE_DIR"):
            self.env.pop(secret, None)

    def spawn(self, args: list[str], log_name: str, python: bool = True) -> subprocess.Popen[bytes]:
        """Start `python args...` (or `args...`), stdout and stderr to STATE/<log_name>.stderr."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, *args] if python else args
        with open(self.state_dir / f"{log_name}.stderr", "ab") as log:
            proc = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=log, stderr=log)
        self.procs.append(proc)
        self.roles.append(log_name.split("-", maxsplit=1)[0])  # worker-1, worker-2 -> worker
        return proc

    def check_alive(self, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
        """Raise with the logs if a process (of `procs`, default all) died while awaited."""
        for proc in self.procs if procs is None else procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: {proc.args!r} exited with {proc.returncode}\n{self.logs(4000)}"
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
        """Stop every process, whatever state it is in; safe to call twice.

        SIGTERM (our processes drain), after DRAIN_TIMEOUT_S a second SIGTERM (they stop
        at once), after FORCE_TIMEOUT_S more SIGKILL. A SIGSTOPped process is continued
        first, or it could not exit.
        """
        live = [proc for proc in self.procs if proc.poll() is None]
        for sig in (signal.SIGCONT, signal.SIGTERM):
            _signal_all(live, sig)
        live = _wait_all(live, DRAIN_TIMEOUT_S)
        _signal_all(live, signal.SIGTERM)
        for proc in _wait_all(live, FORCE_TIMEOUT_S):
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def log(self, log_name: str) -> str:
        """What the process started as `log_name` wrote to stdout and stderr so far."""
        path = self.state_dir / f"{log_name}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail_chars: int | None = None) -> str:
        """What every process wrote to stdout and stderr (the last `tail_chars` of it)."""
        paths = sorted(self.state_dir.glob("*.stderr"))
        text = "\n".join(p.read_text(errors="replace") for p in paths)
        return text[-tail_chars:] if tail_chars else text

    def __enter__(self) -> Self:
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


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    """Send `sig`, wait up to STOP_TIMEOUT_S, then kill; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=STOP_TIMEOUT_S)


def _signal_all(procs: list[subprocess.Popen[bytes]], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _wait_all(
    procs: list[subprocess.Popen[bytes]], timeout_s: float
) -> list[subprocess.Popen[bytes]]:
    """Wait until `procs` have exited or `timeout_s` has passed; those still running."""
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    return [proc for proc in procs if proc.poll() is None]
