"""The worker supervisor: starts N worker processes and keeps them running.

A worker that exits with an error (crash, SIGKILL) is restarted after a backoff; one
that exits 0 (drained shutdown) is not. The supervisor exits once every worker has
exited cleanly. First SIGINT/SIGTERM: forwarded to the workers, which drain; second:
the workers are killed.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from types import FrameType

from protocol import config
from protocol.lifetime import child_env
from workers.settings import WorkerSettings, to_flags

log = logging.getLogger("lss.workers")

POLL_S = 0.2
RESTART_BACKOFF_MAX_S = 5.0


@dataclass
class Slot:
    """One worker position: its process and restart bookkeeping."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float = 0.0
    done: bool = False


class Supervisor:
    """Runs `count` workers with `settings`; `run()` returns an exit code."""

    def __init__(self, settings: WorkerSettings, count: int) -> None:
        self.settings = settings
        self.slots = [Slot(n) for n in range(1, count + 1)]
        self.signals = 0

    def _start(self, slot: Slot) -> None:
        settings = replace(self.settings, name=f"worker-{slot.number}")
        argv = [sys.executable, "-m", "workers.worker", *to_flags(settings)]
        slot.process = subprocess.Popen(argv, env=child_env())
        log.info("worker-%d started (pid %d)", slot.number, slot.process.pid)

    def run(self) -> int:
        for slot in self.slots:
            self._start(slot)
        while not all(slot.done for slot in self.slots):
            if self.signals >= 2:
                self._kill_all()
                return config.EXIT_INTERRUPTED
            now = time.monotonic()
            for slot in self.slots:
                self._watch(slot, now)
            time.sleep(POLL_S)
        log.info("all workers exited cleanly")
        return config.EXIT_OK

    def _watch(self, slot: Slot, now: float) -> None:
        if slot.done or slot.process is None:
            if not slot.done and now >= slot.restart_at and not self.signals:
                self._start(slot)
            return
        code = slot.process.poll()
        if code is None:
            return
        slot.process = None
        if code == 0 or self.signals:
            slot.done = True
            return
        slot.restarts += 1
        delay = min(0.1 * 2 ** min(slot.restarts, 6), RESTART_BACKOFF_MAX_S)
        slot.restart_at = now + delay
        log.warning("worker-%d exited with %d; restarting in %.1f s", slot.number, code, delay)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                slot.process.kill()
                slot.process.wait(timeout=5)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            log.info("%s: asking workers to finish and exit", signal.Signals(signum).name)
            for slot in self.slots:
                if slot.process is not None:
                    slot.process.send_signal(signal.SIGTERM)
