"""Keeping SQLite's checkpoints (and their fsyncs) off the broker's loop, and the WAL bounded.

In WAL mode a commit only appends to the log; the fsync comes with the checkpoint that
copies the log into the database, which SQLite runs inside whichever commit crosses
1,000 pages. On the build machine that made the average commit cost three times its
own work. So the broker's connection never checkpoints, and this thread does it on its
own connection: a PASSIVE checkpoint every second, which never blocks the writer.

A PASSIVE checkpoint alone never lets the log start over while the broker commits
constantly: the log is rewound only when a new write transaction finds every frame
copied, and by then the broker has appended more (the WAL reached 613 MB after 200,000
jobs). So once the log passes `WAL_LIMIT_BYTES`, the store's own connection runs a
RESTART checkpoint after its commit (`bound_wal`): it copies the frames
the last PASSIVE one left, and the next transaction rewinds the log, which
`journal_size_limit` then truncates to the limit.
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
WAL_LIMIT_BYTES = 16 << 20  # 16 MiB: a few seconds of writes at the bench's highest rate


class Checkpointer:
    """A daemon thread running `PRAGMA wal_checkpoint(PASSIVE)` on `path` periodically."""

    def __init__(
        self,
        path: str | Path,
        every_s: float = CHECKPOINT_EVERY_S,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
    ) -> None:
        self._path = str(path)
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
        try:
            while not self._stop.wait(self._every_s):
                self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # busy or I/O trouble: the next turn tries again
            self._failures.warning("checkpoint", "WAL checkpoint failed: %s", exc)


def bound_wal(db: sqlite3.Connection, wal_path: str, limit_bytes: int) -> None:
    """If the WAL at `wal_path` passed `limit_bytes`, copy the rest of it into the
    database on `db` (the writer's connection), so that the next commit rewinds it.

    Under constant commits the checkpointer thread's PASSIVE checkpoints never catch up
    with the writer, so the writer finishes the copy itself, after a commit.
    """
    if os.stat(wal_path).st_size <= limit_bytes:
        return
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    if busy:
        log.warning("the WAL could not be restarted (a reader is busy); it may grow")
