"""One behaviour, three stores: every test taking `store` runs on MemoryStore, SqliteStore
and PgStore (a real PostgreSQL: skipped, with the reason, where none is installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.store import Outcome, SqliteStore, StorageError, Store
from broker.store.numbering import SEQ_BLOCK
from protocol.messages import JobStatus
from tests.tmpfs import leave_free, small_tmpfs

DONE = Outcome(JobStatus.DONE, answer=b"\x81\xa1a\x01", fingerprint="f")
FAILED = Outcome(JobStatus.ERROR, reason="no data")


def test_numbers_start_at_one_and_increase(store: Store) -> None:
    assert [store.add(f"r{n}", b"req", 0.0) for n in range(3)] == [(1, True), (2, True), (3, True)]
    assert store.last_seq() == 3


def test_same_request_id_same_job(store: Store) -> None:
    first = store.add("r", b"req", 0.0)
    assert store.add("r", b"other", 1.0) == (first[0], False)
    assert store.find_request("r") == first[0]
    assert store.find_request("unknown") is None
    assert store.count(JobStatus.RUNNING) == 1


def test_finish_and_read_back(store: Store) -> None:
    a, _ = store.add("a", b"req-a", 1.0)
    b, _ = store.add("b", b"req-b", 1.0)
    store.finish(a, DONE, 2.0)
    store.finish(b, FAILED, 3.0)
    record_a, record_b = store.get(a), store.get(b)
    assert record_a is not None and record_b is not None
    assert (record_a.status, record_a.answer, record_a.fingerprint) == (
        JobStatus.DONE,
        DONE.answer,
        "f",
    )
    assert (record_b.status, record_b.reason, record_b.finished_s) == (
        JobStatus.ERROR,
        "no data",
        3.0,
    )
    assert [store.count(s) for s in JobStatus] == [0, 1, 1]
    assert store.get(99) is None


def test_pages_and_unfinished(store: Store) -> None:
    for n in range(5):
        store.add(f"r{n}", b"req", 0.0)
    store.finish(2, DONE, 1.0)
    assert store.page(0, 2) == [(1, JobStatus.RUNNING), (2, JobStatus.DONE)]
    assert store.page(2, 10) == [
        (3, JobStatus.RUNNING),
        (4, JobStatus.RUNNING),
        (5, JobStatus.RUNNING),
    ]
    assert [r.seq for r in store.unfinished()] == [1, 3, 4, 5]


def test_attempts_are_counted(store: Store) -> None:
    seq, _ = store.add("r", b"req", 0.0)
    assert [store.add_attempt(seq) for _ in range(3)] == [1, 2, 3]


def test_expiry_forgets_old_results_but_never_reuses_numbers(store: Store) -> None:
    old, _ = store.add("old", b"req", 0.0)
    new, _ = store.add("new", b"req", 0.0)
    running, _ = store.add("running", b"req", 0.0)
    store.finish(old, DONE, 10.0)
    store.finish(new, DONE, 100.0)
    assert store.expire(finished_before_s=50.0) == 1
    assert store.get(old) is None and store.get(new) is not None and store.get(running) is not None
    assert store.count(JobStatus.DONE) == 1
    assert store.add("later", b"req", 200.0) == (4, True)


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
    assert [again.count(s) for s in JobStatus] == [1, 1, 0]
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


def test_a_rollback_undoes_every_write_but_never_a_number(store: Store) -> None:
    a, _ = store.add("a", b"req", 0.0)
    store.commit()
    b, _ = store.add("b", b"req", 1.0)
    store.finish(a, DONE, 1.0)
    assert store.has_changes()
    store.rollback()
    assert not store.has_changes()
    assert store.find_request("b") is None and store.get(b) is None
    record = store.get(a)
    assert record is not None and record.status is JobStatus.RUNNING
    assert [store.count(s) for s in JobStatus] == [1, 0, 0]
    assert store.add("c", b"req", 2.0) == (b + 1, True)


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


def test_owners_are_stored_and_pages_filter_by_owner(store: Store) -> None:
    mine, _ = store.add("a", b"req", 0.0, "KEY-A")
    theirs, _ = store.add("b", b"req", 0.0, "KEY-B")
    open_job, _ = store.add("c", b"req", 0.0)
    store.finish(mine, DONE, 1.0)
    store.commit()
    record = store.get(mine)
    assert record is not None and record.owner == "KEY-A"
    assert store.page(0, 10, "KEY-A") == [(mine, JobStatus.DONE)]
    assert store.page(0, 10, "KEY-B") == [(theirs, JobStatus.RUNNING)]
    assert store.page(0, 10, "nobody") == []
    assert [seq for seq, _ in store.page(0, 10)] == [mine, theirs, open_job]
    assert [r.owner for r in store.unfinished()] == ["KEY-B", ""]


def test_a_store_made_before_owners_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

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


def test_recent_lists_the_newest_jobs_and_failures_without_answers(store: Store) -> None:
    for n in range(6):
        store.add(f"r{n}", f"req{n}".encode(), float(n))
    store.finish(2, FAILED, 10.0)
    store.finish(3, DONE, 11.0)
    store.finish(5, FAILED, 12.0)
    newest = store.recent(4)
    assert [r.seq for r in newest] == [6, 5, 4, 3]
    running, done, error = JobStatus.RUNNING, JobStatus.DONE, JobStatus.ERROR
    assert [r.status for r in newest] == [running, error, running, done]
    assert all(r.answer is None for r in newest) and newest[3].job_body == b"req2"
    failures = store.recent(10, JobStatus.ERROR)
    assert [(r.seq, r.reason, r.finished_s) for r in failures] == [
        (5, "no data", 12.0),
        (2, "no data", 10.0),
    ]


def test_stored_bytes_per_key_are_kept_on_every_write_and_expiry(store: Store) -> None:
    a, _ = store.add("a", b"body-a", 0.0, "KEY")
    b, _ = store.add("b", b"body-bb", 0.0, "KEY")
    store.add("c", b"other", 0.0)
    assert store.stored_bytes("KEY") == 13 and store.stored_bytes("") == 5
    store.finish(a, DONE, 10.0, "KEY")
    store.finish(b, FAILED, 100.0, "KEY")
    store.commit()
    expected = 13 + len(DONE.answer or b"") + len("no data")
    assert store.stored_bytes("KEY") == expected and store.stored_bytes("nobody") == 0
    store.add("d", b"void", 0.0, "KEY")
    store.rollback()
    assert store.stored_bytes("KEY") == expected
    assert store.expire(finished_before_s=50.0) == 1
    store.commit()
    assert store.stored_bytes("KEY") == len(b"body-bb") + len("no data")


def test_stored_bytes_survive_reopening_and_an_old_store_is_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    seq, _ = store.add("a", b"body", 0.0, "KEY")
    store.finish(seq, DONE, 1.0, "KEY")
    store.close()
    expected = len(b"body") + len(DONE.answer or b"")
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("DROP TABLE key_usage")  # as in a store made before quotas
    db.commit()
    db.close()
    for _ in range(2):
        store = SqliteStore(path)
        assert store.stored_bytes("KEY") == expected
        store.close()
