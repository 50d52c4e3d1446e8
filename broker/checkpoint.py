"""Keeping SQLite's checkpoints (and their fsyncs) off the broker's loop, and the WAL bounded.

In WAL mode a commit only appends to the log; the fsync comes with the checkpoint that
copies the log into the database, which SQLite runs inside whichever commit crosses
1,000 pages. On the build machine that made the average commit cost three times its
own work. So the broker's connection never checkpoints, and this thread does it on its
own connection: a PASSIVE checkpoint every second, which never blocks the writer.

A PASSIVE checkpoint alone never lets the log start over while the broker commits
constantly: the log is rewound only when a new write transaction finds every frame
copied, and by then the broker has appended more (the WAL reached 613 MB after 200,000
jobs). So once the log passes `wal_limit_bytes`, the thread runs a RESTART checkpoint,
which holds the writer back (the broker waits in its busy handler) for the copy of the
few frames the last PASSIVE one left, and makes the next transaction rewind the log;
`journal_size_limit` then truncates the file to the limit.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

from protocol.logs import Throttle

log = logging.getLogger("lss.broker.store")

CHECKPOINT_EVERY_S = 1.0
WAL_CHECK_EVERY_S = 0.1
WAL_LIMIT_BYTES = 16 << 20  # 16 MiB: a few seconds of writes at the bench's highest rate


class Checkpointer:
    """A daemon thread checkpointing the WAL of `path` periodically, and when it grows."""

    def __init__(
        self,
        path: str | Path,
        every_s: float = CHECKPOINT_EVERY_S,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
    ) -> None:
        self._path = str(path)
        self._wal_path = f"{path}-wal"
        self._every_s = every_s
        self._wal_limit_bytes = wal_limit_bytes
        self._failures = Throttle(log, burst=5, window_s=60.0)  # a full disk fails every try
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lss-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        db = sqlite3.connect(self._path, timeout=1.0)
        db.execute(f"PRAGMA journal_size_limit={self._wal_limit_bytes}")
        since_s = 0.0
        try:
            while not self._stop.wait(WAL_CHECK_EVERY_S):
                since_s += WAL_CHECK_EVERY_S
                if self._wal_bytes() > self._wal_limit_bytes:
                    self._checkpoint(db, "PASSIVE")  # most of the copy, without blocking
                    self._checkpoint(db, "RESTART")
                    since_s = 0.0
                elif since_s >= self._every_s:
                    self._checkpoint(db, "PASSIVE")
                    since_s = 0.0
        finally:
            db.close()

    def _wal_bytes(self) -> int:
        try:
            return os.stat(self._wal_path).st_size
        except OSError:
            return 0

    def _checkpoint(self, db: sqlite3.Connection, mode: str) -> None:
        try:
            db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:  # busy or I/O trouble: the next turn tries again
            self._failures.warning("WAL checkpoint (%s) failed: %s", mode, exc)
