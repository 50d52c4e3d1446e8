"""The worker supervisor: starts N worker processes and keeps them running.

A worker that exits with an error (crash, SIGKILL) is restarted after a backoff; one
that exits 0 (drained shutdown) is not. The supervisor exits once every worker has
exited cleanly. First SIGINT/SIGTERM: forwarded to the workers, which drain; second:
the workers are killed.

Each worker reports on a pipe whether it loaded the data (workers.report). Workers that
keep failing to load it the same way (`SAME_FAILURES_TO_STOP` in a row, with no worker
loading it in between) will not do better on a restart: the supervisor stops them all
and exits `EXIT_DATA`, saying why in one line.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from types import FrameType

from protocol import config
from protocol.lifetime import child_env
from workers import report
from workers.settings import WorkerSettings, to_flags

log = logging.getLogger("lss.workers")

POLL_S = 0.2
RESTART_BACKOFF_MAX_S = 5.0
SAME_FAILURES_TO_STOP = 3  # workers failing to load the data alike, in a row


@dataclass
class Slot:
    """One worker position: its process and restart bookkeeping."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float = 0.0
    done: bool = False
    reader: report.ReportReader | None = None  # the running worker's report pipe


@dataclass
class FailureStreak:
    """Workers that failed to load the data for the same reason, in a row."""

    reason: str | None = None
    count: int = 0

    def add(self, reason: str) -> int:
        """Count one more failure for `reason`; the length of the streak."""
        if reason != self.reason:
            self.reason, self.count = reason, 0
        self.count += 1
        return self.count

    def reset(self) -> None:
        """A worker loaded the data: what failed before may not fail again."""
        self.reason, self.count = None, 0


class Supervisor:
    """Runs `count` workers with `settings`; `run()` returns an exit code."""

    def __init__(self, settings: WorkerSettings, count: int) -> None:
        self.settings = settings
        self.slots = [Slot(n) for n in range(1, count + 1)]
        self.signals = 0
        self.streak = FailureStreak()

    def _start(self, slot: Slot) -> None:
        settings = replace(self.settings, name=f"worker-{slot.number}")
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "workers.worker", *to_flags(settings)]
        argv += ["--report-fd", str(write_fd)]
        try:
            slot.process = subprocess.Popen(argv, env=child_env(), pass_fds=(write_fd,))
        finally:
            os.close(write_fd)  # the worker's now: EOF when it exits
        slot.reader = report.ReportReader(read_fd)
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
            if self.streak.count >= SAME_FAILURES_TO_STOP:
                return self._give_up()
            time.sleep(POLL_S)
        log.info("all workers exited cleanly")
        return config.EXIT_OK

    def _watch(self, slot: Slot, now: float) -> None:
        if slot.done or slot.process is None:
            if not slot.done and now >= slot.restart_at and not self.signals:
                self._start(slot)
            return
        code = slot.process.poll()
        unloadable = self._read_report(slot)
        if code is None:
            return
        slot.process = None
        if slot.reader is not None:
            slot.reader.close()
        if code == 0 or self.signals:
            slot.done = True
            return
        slot.restarts += 1
        delay = min(0.1 * 2 ** min(slot.restarts, 6), RESTART_BACKOFF_MAX_S)
        slot.restart_at = now + delay
        if unloadable is not None:  # said once, by `_give_up`, if it goes on
            self.streak.add(unloadable)
            log.debug("worker-%d cannot load the data: %s", slot.number, unloadable)
        else:
            log.warning("worker-%d exited with %d; restarting in %.1f s", slot.number, code, delay)

    def _read_report(self, slot: Slot) -> str | None:
        """Take in the worker's report: a worker that loaded the data ends a failure
        streak. Returns why it cannot load the data, if it said so."""
        if slot.reader is None:
            return None
        slot.reader.poll()
        if slot.reader.loaded:
            self.streak.reset()
        return slot.reader.unloadable

    def _give_up(self) -> int:
        """Workers keep failing to load the data alike: stop them all and say why."""
        log.error(
            "no worker can load the data: %s (%d workers in a row failed so); stopping",
            self.streak.reason, self.streak.count,
        )  # fmt: skip
        self._kill_all()
        return config.EXIT_DATA

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
