"""What the SQLite store adds to the Store suite (tests/unit/test_store.py): durability
across reopening, numbers never told twice (broker.store.numbering), a bounded WAL
(broker.store.checkpoint), and stores made by older versions brought up to the schema
(broker.store.sqlite_schema)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from broker.store import Outcome, SqliteStore, StorageError
from broker.store.numbering import SEQ_BLOCK
from protocol.messages import JobStatus
from tests.tmpfs import leave_free, small_tmpfs

DONE = Outcome(JobStatus.DONE, answer=b"\x81\xa1a\x01", fingerprint="f")


def test_sqlite_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SqliteStore(path)
    a, _ = first.add("a", b"req", 0.0)
    first.add("b", b"req", 0.0)
    first.finish(a, DONE, 1.0)
    first.commit()
    first.close()
    again = SqliteStore(path)
    assert again.last_seq() == 2
    assert [again.count(s) for s in JobStatus] == [1, 1, 0, 0]
    assert [r.request_id for r in again.unfinished()] == ["b"]
    assert again.add("a", b"req", 2.0) == (a, False)
    again.close()


def test_uncommitted_work_is_not_durable(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SqliteStore(path)
    first.add("committed", b"req", 0.0)
    first.commit()
    first.add("lost", b"req", 0.0)
    reader = SqliteStore(path)
    assert reader.find_request("committed") == 1
    assert reader.find_request("lost") is None
    reader.close()
    first.close()


@pytest.mark.parametrize(
    ("synchronous", "reboot", "skipped"),
    [
        ("NORMAL", False, 0),
        ("NORMAL", True, SEQ_BLOCK),
        ("FULL", True, 0),
        ("OFF", True, SEQ_BLOCK),
    ],
)
def test_numbers_resume_above_every_number_told_after_a_crash(
    tmp_path: Path, synchronous: str, reboot: bool, skipped: int
) -> None:
    """Unsynced commits reserve numbers on disk by blocks: a reboot skips the rest."""
    path = tmp_path / "jobs.sqlite3"
    first = SqliteStore(path, synchronous=synchronous, boot="boot-1")
    for n in range(3):
        first.add(f"r{n}", b"req", 0.0)
    first.commit()
    # As after a crash: the next broker opens the file without the first having closed it.
    boot = "boot-2" if reboot else "boot-1"
    second = SqliteStore(path, synchronous=synchronous, boot=boot)
    assert second.add("after", b"req", 1.0) == (3 + skipped + 1, True)
    second.commit()
    second.close()
    first.close()
    third = SqliteStore(path, synchronous=synchronous, boot="boot-3")
    assert third.add("clean", b"req", 2.0) == (3 + skipped + 2, True)
    third.close()


def test_a_full_disk_never_reissues_a_told_number(tmp_path: Path) -> None:
    """The issue's reproduction: small adds, big ones with little space left, more small."""
    with small_tmpfs(tmp_path / "disk", 4 << 20) as disk:
        store = SqliteStore(disk / "jobs.sqlite3")
        turn = Turn(store)
        leave_free(disk, 1_500_000)
        for n in range(50):
            turn.add(f"small-{n}", 100)
        for n in range(4):
            turn.add(f"big-{n}", 900_000)
        for n in range(50):
            turn.add(f"more-{n}", 100)
        turn.commit()
        assert turn.failures, "the disk never filled: this test proves nothing"
        assert len(set(turn.issued)) == len(turn.issued), "a number was issued twice"
        assert len(turn.told) >= 50
        for seq, request_id in turn.told:
            record = store.get(seq)
            assert record is not None and record.request_id == request_id
        store.close()


def test_the_wal_stays_bounded_under_constant_writes(tmp_path: Path) -> None:
    limit = 1 << 20
    store = SqliteStore(tmp_path / "jobs.sqlite3", synchronous="OFF", wal_limit_bytes=limit)
    wal = tmp_path / "jobs.sqlite3-wal"
    largest = written = 0
    for turn in range(2_000):  # about 40 MB of jobs and answers, 40x the limit
        for n in range(10):
            seq, _ = store.add(f"r{turn}-{n}", b"q" * 1000, 0.0)
            store.finish(seq, Outcome(JobStatus.DONE, answer=b"a" * 1000), 1.0)
            written += 2000
        store.commit()
        largest = max(largest, wal.stat().st_size)
    store.close()
    assert written > 30 * limit
    assert largest <= 4 * limit, f"the WAL grew to {largest / limit:.1f} times its limit"


class Turn:
    """Drives a store as the broker's loop does: a failure rolls the transaction back,
    and only what a successful commit stored is told."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.pending: list[tuple[int, str]] = []
        self.told: list[tuple[int, str]] = []
        self.issued: list[int] = []
        self.failures: list[str] = []

    def add(self, request_id: str, size: int) -> None:
        try:
            seq, _ = self.store.add(request_id, b"p" * size, 0.0)
        except StorageError as exc:
            self._failed(exc)
            return
        self.issued.append(seq)
        self.pending.append((seq, request_id))

    def commit(self) -> None:
        try:
            self.store.commit()
        except StorageError as exc:
            self._failed(exc)
            return
        self.told += self.pending
        self.pending = []

    def _failed(self, exc: StorageError) -> None:
        self.failures.append(exc.operation)
        self.store.rollback()
        self.pending = []


def test_a_store_made_before_owners_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL"
        " UNIQUE, request BLOB NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL"
        " DEFAULT 0, answer BLOB, reason TEXT, fingerprint TEXT, created_s REAL NOT NULL,"
        " finished_s REAL);"
        "INSERT INTO jobs (request_id, request, status, created_s)"
        " VALUES ('r', x'00', 'running', 0);"
    )
    old.commit()
    old.close()
    store = SqliteStore(path)
    try:
        (record,) = store.unfinished()
        assert record.owner == ""
        seq, _ = store.add("s", b"req", 1.0, "KEY")
        assert store.page(0, 10, "KEY") == [(seq, JobStatus.RUNNING)]
    finally:
        store.close()


def test_stored_bytes_survive_reopening_and_an_old_store_is_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    seq, _ = store.add("a", b"body", 0.0, "KEY")
    store.finish(seq, DONE, 1.0, "KEY")
    store.close()
    expected = len(b"body") + len(DONE.answer or b"")
    db = sqlite3.connect(path)
    db.execute("DROP TABLE key_usage")  # as in a store made before quotas
    db.commit()
    db.close()
    for _ in range(2):
        store = SqliteStore(path)
        assert store.stored_bytes("KEY") == expected
        store.close()
