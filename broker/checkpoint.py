"""Keeping SQLite's checkpoints (and their fsyncs) off the broker's loop.

In WAL mode a commit only appends to the log; the fsync comes with the checkpoint that
copies the log into the database, which SQLite runs inside whichever commit crosses
1,000 pages. On the build machine that made the average commit cost three times its
own work. So the broker's connection never checkpoints, and this thread does it on its
own connection every second (a PASSIVE checkpoint never blocks the writer).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("lss.broker.store")

CHECKPOINT_EVERY_S = 1.0


class Checkpointer:
    """A daemon thread running `PRAGMA wal_checkpoint(PASSIVE)` on `path` periodically."""

    def __init__(self, path: str | Path, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self._path = str(path)
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lss-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        db = sqlite3.connect(self._path, timeout=1.0)
        try:
            while not self._stop.wait(self._every_s):
                self._checkpoint(db)
        finally:
            db.close()

    @staticmethod
    def _checkpoint(db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # busy or I/O trouble: the next turn tries again
            log.warning("WAL checkpoint failed: %s", exc)
