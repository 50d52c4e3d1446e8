"""Job numbers that are never reused: not after a rollback, a crash or a power loss.

The store numbers jobs itself (`SqliteStore.add`), above the highest number it handed
out in this process, so a rollback cannot rewind it. Across restarts, SQLite's
`sqlite_sequence` row for `jobs` holds the highest number ever committed (expired jobs
included). That is enough when each commit is on disk before anyone hears of it
(`synchronous=FULL`), and after a process crash in any mode, since the operating
system still holds what was written. A power loss, though, can take the last commits
of `NORMAL` or `OFF` with it, and with them numbers already told. So in those modes the
store reserves numbers on disk, `SEQ_BLOCK` at a time (one fsync), before it tells any
of them, and records the boot it did so in: after a reboot, numbering resumes above
the reservation, skipping the rest of the block.

On PostgreSQL, brokers sharing a store take their numbers from one sequence, which no
rollback rewinds; each broker reserves them a block at a time (`NumberBlocks`), so that
a job's number costs no round trip of its own. Numbers are unique across brokers, but
not in the order of submission across them, and a block's numbers that a broker never
used (it stopped) are never issued: docs/deployment.md, "Several brokers".
"""

from __future__ import annotations

import os
import sqlite3
from collections import deque
from pathlib import Path

SEQ_BLOCK = 1000
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")  # changes at every boot (Linux)

SCHEMA = "CREATE TABLE IF NOT EXISTS seq_reservation (upper INTEGER NOT NULL, boot TEXT NOT NULL);"


def current_boot() -> str:
    """This boot's id; "" where the system does not tell (then every start skips)."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


def highest_told(db: sqlite3.Connection, boot: str) -> int:
    """The highest job number anyone may have heard of: numbering resumes above it."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
    committed = int(row[0]) if row else 0
    reservation = db.execute("SELECT upper, boot FROM seq_reservation").fetchone()
    if reservation is None or (boot and reservation[1] == boot):
        return committed  # no reboot since the reservation: every commit is still there
    return max(committed, int(reservation[0]))


def reserve(db: sqlite3.Connection, upper: int, boot: str) -> None:
    """Record, in the open transaction, that numbers up to `upper` may be told."""
    db.execute("DELETE FROM seq_reservation")
    db.execute("INSERT INTO seq_reservation (upper, boot) VALUES (?, ?)", (upper, boot))


def sync(wal_path: str) -> None:
    """Put a reservation just committed on disk (with `synchronous` below FULL, a commit
    reaches only the operating system): fsync the WAL it was written to."""
    fd = os.open(wal_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NumberBlocks:
    """Job numbers reserved from a shared sequence and not handed out yet, lowest first."""

    __slots__ = ("_left", "_ranges")

    def __init__(self) -> None:
        self._ranges: deque[list[int]] = deque()  # [next, stop) ranges, ascending
        self._left = 0

    def __len__(self) -> int:
        return self._left

    def add(self, numbers: list[int]) -> None:
        """Keep `numbers` (just reserved: above every number already kept) to hand out."""
        for number in sorted(numbers):
            last = self._ranges[-1] if self._ranges else None
            if last is not None and last[1] == number:
                last[1] += 1
            else:
                self._ranges.append([number, number + 1])
        self._left += len(numbers)

    def take(self) -> int | None:
        """The lowest number kept, now handed out; None when none is left."""
        if not self._ranges:
            return None
        first = self._ranges[0]
        number = first[0]
        first[0] += 1
        if first[0] == first[1]:
            self._ranges.popleft()
        self._left -= 1
        return number

    def highest_told(self, reserved: int) -> int:
        """The highest number at or below `reserved` (the highest any broker reserved)
        that is not kept here unused: numbers this broker reserved and never handed out
        name no job."""
        for start, stop in reversed(self._ranges):
            if start > reserved:
                continue
            if reserved >= stop:
                break
            reserved = start - 1
        return reserved
