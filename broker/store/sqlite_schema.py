"""The SQLite store's schema, and bringing a store made by an older version up to it.

Tables: `jobs` (one row per job), `key_usage` (the bytes each key's jobs take, a
running total kept at every commit and expiry) and `seq_reservation`
(broker.store.numbering). A store made before owners, listing by statistic or quotas
existed gets the column, the indexes or the totals at its first start (`prepare`).
"""

from __future__ import annotations

import sqlite3

from broker.store import numbering
from broker.store.sql import fill_statistics

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    request BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    answer BLOB,
    reason TEXT,
    fingerprint TEXT,
    created_s REAL NOT NULL,
    finished_s REAL,
    owner TEXT NOT NULL DEFAULT '',
    statistic TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_s) WHERE finished_s IS NOT NULL;
CREATE TABLE IF NOT EXISTS key_usage (
    owner TEXT PRIMARY KEY,
    stored_bytes INTEGER NOT NULL
);
"""
    + numbering.SCHEMA
)
# Jobs by owner, for a client key's listing; partial, so that without CURVE (owner '')
# inserts pay nothing for it. Queries must say `owner != ''` to use it.
OWNER_INDEX = "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq) WHERE owner != ''"
# Listing by status or statistic walks one of these in job order (sql.page_query).
LIST_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_statistic ON jobs (statistic, seq)",
)
# A row's bytes as `stored_bytes` counts them, in SQL (reason: its UTF-8 bytes).
ROW_BYTES = "length(request) + ifnull(length(answer), 0) + ifnull(length(CAST(reason AS BLOB)), 0)"


def prepare(db: sqlite3.Connection) -> None:
    """Create the schema, or bring an older store up to it."""
    new_usage_table = not _has_table(db, "key_usage")
    db.executescript(SCHEMA)
    _add_owner_column(db)
    _add_statistic_column(db)
    if new_usage_table:
        _count_usage(db)


def _add_statistic_column(db: sqlite3.Connection) -> None:
    """Give a store made before jobs were listed by statistic its `statistic` column,
    filled from each job's body, and the listing indexes."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    if "statistic" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN statistic TEXT NOT NULL DEFAULT ''")
        fill_statistics(db, "?")
    for statement in LIST_INDEXES:
        db.execute(statement)
    db.commit()


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _count_usage(db: sqlite3.Connection) -> None:
    """Fill a new `key_usage` table from the jobs already stored (once, at the first
    start of a store made before quotas existed)."""
    db.execute(
        f"INSERT INTO key_usage (owner, stored_bytes) SELECT owner, sum({ROW_BYTES})"
        " FROM jobs GROUP BY owner"
    )
    db.commit()


def _add_owner_column(db: sqlite3.Connection) -> None:
    """Give a store made before job owners existed its `owner` column (jobs: no owner)."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    if "owner" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    db.execute(OWNER_INDEX)
    db.commit()
