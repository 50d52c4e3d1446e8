"""Jobs listed by status and statistic: the stores' pages, their indexes, old stores
given the column, the broker's checks of a filter, and the client's paging."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from broker.store import MemoryStore, Outcome, SqliteStore, Store
from broker.store.postgres import PgStore
from broker.store.sql import page_params, page_query
from clients.listing import JobListing, job_number
from protocol import messages as m
from protocol.messages import JobStatus
from tests.unit.broker_harness import Harness
from tests.unit.conftest import pg_store

DONE = Outcome(JobStatus.DONE, answer=b"\x80", fingerprint="f")
FAILED = Outcome(JobStatus.ERROR, reason="no data")
Q = "Percent of adults aged 18 years and older who have obesity"


def body(statistic: str) -> bytes:
    return m.body_of(m.Job(statistic, {"question": Q}))


def add(store: Store, n: int, statistic: str, owner: str = "") -> int:
    seq, _ = store.add(f"r{n}", body(statistic), 0.0, owner, statistic)
    return seq


def fill(store: Store) -> None:
    """Jobs 1-6: best5 done, best5 error, global_mean done, best5 running,
    global_mean error, best5 done."""
    for n, statistic in enumerate(["best5", "best5", "global_mean", "best5", "global_mean"], 1):
        add(store, n, statistic)
    add(store, 6, "best5")
    for seq, outcome in [(1, DONE), (2, FAILED), (3, DONE), (5, FAILED), (6, DONE)]:
        store.finish(seq, outcome, 1.0)


def test_pages_filter_by_status_and_statistic(store: Store) -> None:
    fill(store)
    store.commit()

    def seqs(**given: str) -> list[int]:
        return [seq for seq, _ in store.page(0, 10, **given)]

    assert seqs() == [1, 2, 3, 4, 5, 6]
    assert seqs(status="done") == [1, 3, 6]
    assert seqs(status="error") == [2, 5]
    assert seqs(status="running") == [4]
    assert seqs(statistic="best5") == [1, 2, 4, 6]
    assert seqs(statistic="global_mean", status="error") == [5]
    assert seqs(statistic="nothing") == []
    assert store.page(1, 2, status="done") == [(3, JobStatus.DONE), (6, JobStatus.DONE)]
    assert store.page(3, 1, statistic="best5") == [(4, JobStatus.RUNNING)]


def test_a_status_filter_sees_outcomes_not_yet_committed(store: Store) -> None:
    fill(store)  # no commit: the SQL stores hold some outcomes in memory until then
    assert [seq for seq, _ in store.page(0, 10, status="running")] == [4]
    assert [seq for seq, _ in store.page(0, 10, status="done")] == [1, 3, 6]


def test_filters_keep_to_the_owner(store: Store) -> None:
    mine = add(store, 1, "best5", "KEY-A")
    add(store, 2, "best5", "KEY-B")
    add(store, 3, "best5")
    store.commit()
    assert store.page(0, 10, "KEY-A", statistic="best5") == [(mine, JobStatus.RUNNING)]
    assert store.page(0, 10, "KEY-A", status="done") == []


@pytest.mark.parametrize(
    ("given", "index"),
    [({"status": "done"}, "jobs_status"), ({"statistic": "best5"}, "jobs_statistic")],
)
def test_sqlite_pages_walk_an_index(tmp_path: Path, given: dict[str, str], index: str) -> None:
    store = SqliteStore(tmp_path / "s.db")
    try:
        status, statistic = given.get("status"), given.get("statistic")
        query = page_query(None, status, statistic)
        db = sqlite3.connect(tmp_path / "s.db")
        params = (*page_params(None, status, statistic), 0, 10)
        plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", params))
        db.close()
        assert f"INDEX {index} (" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        store.close()


@pytest.mark.parametrize(
    ("given", "index"),
    [({"status": "error"}, "jobs_status"), ({"statistic": "best5"}, "jobs_statistic")],
)
def test_postgresql_pages_can_walk_an_index(pg_url: str, given: dict[str, str], index: str) -> None:
    store = pg_store(pg_url)
    store.close()
    status, statistic = given.get("status"), given.get("statistic")
    params = (*page_params(None, status, statistic), 0, 10)
    with psycopg.connect(pg_url) as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: make the planner show
        conn.execute("SET enable_sort = off")  # which index serves the page in order
        plan = conn.execute(
            f"EXPLAIN {page_query(None, status, statistic, '%s')}", params
        ).fetchall()
    text = " ".join(row[0] for row in plan)
    assert f"Scan using {index} on jobs" in text and "Sort" not in text, text


def test_an_sqlite_store_made_before_statistics_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SqliteStore(path).close()
    old = sqlite3.connect(path)
    old.executescript(
        "DROP INDEX jobs_statistic; DROP INDEX jobs_status; ALTER TABLE jobs DROP COLUMN statistic;"
    )
    old.executemany(
        "INSERT INTO jobs (seq, request_id, request, status, created_s) VALUES (?, ?, ?, ?, 0)",
        [
            (1, "a", body("best5"), "done"),
            (2, "b", b"unreadable", "done"),
            (3, "c", body("x"), "error"),
        ],
    )
    old.commit()
    old.close()
    store = SqliteStore(path, boot="test")
    try:
        assert store.page(0, 10, statistic="best5") == [(1, JobStatus.DONE)]
        assert store.page(0, 10, statistic="x") == [(3, JobStatus.ERROR)]
        assert [seq for seq, _ in store.page(0, 10)] == [1, 2, 3]
    finally:
        store.close()


def test_a_postgresql_store_at_version_1_is_migrated(pg_url: str) -> None:
    pg_store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to version 1, one old job
        conn.execute("DROP INDEX jobs_status; DROP INDEX jobs_statistic")
        conn.execute("ALTER TABLE jobs DROP COLUMN statistic")
        conn.execute("DELETE FROM schema_version WHERE version >= 2")
        conn.execute("DROP TABLE key_usage; DROP TABLE job_counts")
        conn.execute(
            "INSERT INTO jobs (seq, request_id, request, status, created_s, broker_id,"
            " broker_epoch) VALUES (nextval('job_seq'), 'old', %s, 'done', 0, 'b', 0)",
            (body("worst5"),),
        )
    store = PgStore(pg_url, "broker-b")
    try:
        store.register(lease_s=60.0)
        assert store.page(0, 10, statistic="worst5") == [(1, JobStatus.DONE)]
        assert store.page(0, 10, statistic="best5") == []
        assert store.count(JobStatus.DONE) == 1  # counted once, at migration
    finally:
        store.close()


# --- the broker ---------------------------------------------------------------------


def replies(h: Harness) -> list[m.Message]:
    return [envelope.message for envelope in h.sent()[0]]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (m.ListJobs(status="finished"), "unknown status 'finished'"),
        (m.ListJobs(statistic="x" * (m.MAX_STATISTIC_CHARS + 1)), "at most 128 characters"),
    ],
)
def test_the_broker_refuses_a_filter_it_cannot_apply(request_: m.ListJobs, reason: str) -> None:
    h = Harness(MemoryStore())
    h.client(request_)
    (reply,) = replies(h)
    assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request", reply
    assert reason in reply.reason


def test_a_control_character_in_a_filter_is_refused_before_the_store(store: Store) -> None:
    """PostgreSQL refuses a NUL in text: read by the store, one client's listing would
    fail the turn of every peer (rolled back, submits refused for a while)."""
    h = Harness(store)
    h.client(m.ListJobs(statistic="best5\x00"))
    (reply,) = replies(h)
    assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request", reply
    assert "control character" in reply.reason


def test_the_broker_lists_by_status_and_statistic(store: Store) -> None:
    h = Harness(store)
    for n, statistic in enumerate(["best5", "global_mean", "best5"]):
        h.client(m.Submit(f"r{n}", statistic, {"question": Q}), tag=b"s%d" % n)
    replies(h)
    h.client(m.ListJobs(statistic="best5", status="running"))
    assert replies(h) == [m.JobList([["job_id_1", "running"], ["job_id_3", "running"]])]
    h.client(m.ListJobs(limit=1, statistic="best5"))
    assert replies(h) == [m.JobList([["job_id_1", "running"]], next_after=1)]
    h.client(m.ListJobs(status="done"))
    assert replies(h) == [m.JobList([])]


# --- the client's paging -------------------------------------------------------------


def test_a_listing_pages_until_the_broker_says_no_more() -> None:
    listing = JobListing(status="done")
    assert listing.next_request() == m.ListJobs(0, 10_000, "done", None)
    listing.add(m.JobList([["job_id_1", "done"]], next_after=1))
    assert listing.next_request() == m.ListJobs(1, 10_000, "done", None)
    listing.add(m.JobList([["job_id_9", "done"]], next_after=None))
    assert listing.next_request() is None
    assert listing.jobs == {"job_id_1": "done", "job_id_9": "done"}


def test_a_listing_stops_at_its_limit() -> None:
    listing = JobListing(statistic="best5", after=4, limit=3)
    assert listing.next_request() == m.ListJobs(4, 3, None, "best5")
    listing.add(m.JobList([["job_id_5", "done"], ["job_id_7", "error"]], next_after=None))
    assert listing.next_request() is None  # the broker had no more
    listing = JobListing(limit=2)
    listing.add(m.JobList([["job_id_1", "done"], ["job_id_2", "done"]], next_after=2))
    assert listing.next_request() is None
    with pytest.raises(ValueError, match="limit"):
        JobListing(limit=0)


@pytest.mark.parametrize(
    ("text", "number"),
    [("job_id_7", 7), ("7", 7), ("0", 0), ("job_id_07", None), ("seven", None),
     ("9" * 19, None), ("job_id_" + "9" * 19, None), ("٣", None)],
)  # fmt: skip
def test_after_is_a_job_id_or_its_number(text: str, number: int | None) -> None:
    assert job_number(text) == number


def test_the_next_page_starts_after_the_last_id_of_this_one() -> None:
    """The ids a listing returns are what a caller holds: `jobs(after=last_id)` pages on,
    as `lss jobs --after job_id_N` and `/api/jobs?after=job_id_N` do (it was a TypeError)."""
    assert JobListing(after="job_id_40").next_request() == m.ListJobs(40, 10_000, None, None)
    assert JobListing(after="40").next_request() == m.ListJobs(40, 10_000, None, None)
    with pytest.raises(ValueError, match="after wants a job id such as job_id_7, got 'forty'"):
        JobListing(after="forty")
