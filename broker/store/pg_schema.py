"""The PostgreSQL store's schema: its versions, and creating or migrating it at start.

`schema_version` holds the version a database is at. A broker brings an older (or
empty) database up to `SCHEMA_VERSION` under an advisory lock, so that brokers starting
together migrate once; a database newer than this code raises `SchemaTooNew`, and the
broker refuses to start rather than write rows a newer schema does not expect.

Tables: `jobs` (as in SQLite, plus the dispatching broker's `broker_id` and
`broker_epoch`, the fencing token of docs/deployment.md "Several brokers"), `brokers`
(one lease row per registered broker epoch), `shutdown_requests` (scope "all") and,
from version 2, `key_usage`: the bytes each key's jobs take, a running total that every
broker's commits and expiries keep (broker.store.postgres), filled from the jobs at migration;
from version 4, `job_counts`: jobs by status as running totals in a few rows per status,
one slot per live broker (`count_slot`), so that brokers never wait on each other's
rows and a count is a SUM over at most `COUNT_SLOTS` rows, never a scan of the jobs.
Version 4 also lists a key's jobs by status with an index of their own (`jobs_owner_status`,
which counts a key's running jobs too) and tells autovacuum to visit `jobs` after 2 % of
it changed, not 20 %.
Job numbers come from the sequence `job_seq`, epochs from `broker_epoch_seq`: neither
is ever rolled back, so no number is issued twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.store.sql import fill_statistics

Step = str | Callable[[Any], None]  # a statement, or a function of the connection

SCHEMA_VERSION = 4
COUNT_SLOTS = 64  # rows per status in job_counts: brokers live at once, at most
MIGRATION_LOCK = 0x155_0001  # pg_advisory_xact_lock key: one migration at a time

MIGRATIONS: dict[int, tuple[Step, ...]] = {
    1: (
        "CREATE SEQUENCE job_seq",
        "CREATE SEQUENCE broker_epoch_seq",
        """CREATE TABLE jobs (
            seq bigint PRIMARY KEY,
            request_id text NOT NULL UNIQUE,
            request bytea NOT NULL,
            status text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            answer bytea,
            reason text,
            fingerprint text,
            created_s double precision NOT NULL,
            finished_s double precision,
            owner text NOT NULL DEFAULT '',
            broker_id text NOT NULL,
            broker_epoch bigint NOT NULL
        )""",
        "CREATE INDEX jobs_finished ON jobs (finished_s) WHERE finished_s IS NOT NULL",
        "CREATE INDEX jobs_owner ON jobs (owner, seq) WHERE owner <> ''",
        "CREATE INDEX jobs_running ON jobs (broker_epoch) WHERE status = 'running'",
        "CREATE INDEX jobs_owner_running ON jobs (owner) WHERE status = 'running' AND owner <> ''",
        """CREATE TABLE brokers (
            epoch bigint PRIMARY KEY,
            broker_id text NOT NULL,
            host text NOT NULL,
            registered_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL
        )""",
        "CREATE TABLE shutdown_requests (requested_at timestamptz NOT NULL DEFAULT now())",
    ),
    2: (  # jobs listed by status and by statistic, in job order (broker.store.sql.page_query)
        "ALTER TABLE jobs ADD COLUMN statistic text NOT NULL DEFAULT ''",
        lambda conn: fill_statistics(conn, "%s"),
        "CREATE INDEX jobs_status ON jobs (status, seq)",
        "CREATE INDEX jobs_statistic ON jobs (statistic, seq)",
    ),
    3: (  # each key's stored bytes, kept as jobs are written and expired (quotas)
        "CREATE TABLE key_usage (owner text PRIMARY KEY, stored_bytes bigint NOT NULL)",
        """INSERT INTO key_usage (owner, stored_bytes)
            SELECT owner, sum(octet_length(request) + coalesce(octet_length(answer), 0)
                              + coalesce(octet_length(reason), 0))
            FROM jobs GROUP BY owner""",
    ),
    4: (  # counts by status kept as running totals: no GROUP BY over the jobs every second
        """CREATE TABLE job_counts (
            slot integer NOT NULL,
            status text NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (slot, status)
        ) WITH (fillfactor = 50)""",
        "INSERT INTO job_counts (slot, status, n)"
        " SELECT 0, status, count(*) FROM jobs GROUP BY status",
        # The jobs churn (added, finished, expired): vacuum after 2 % of them changed, so
        # that dead rows stay a small share of the table at a million jobs too.
        # A key's jobs by status, in job order: a key's page of its running (or failed)
        # jobs, and its count of running ones, read as many rows as they return.
        "CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (owner, status, seq)"
        " WHERE owner <> ''",
        "DROP INDEX IF EXISTS jobs_owner_running",
        "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02,"
        " autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02)",
    ),
}


def count_slot(epoch: int) -> int:
    """The `job_counts` rows a broker of `epoch` writes: brokers registered one after
    another (epochs from one sequence) write rows of their own, up to COUNT_SLOTS at once."""
    return epoch % COUNT_SLOTS


class SchemaTooNew(Exception):
    """The database was made by a newer version of the service than this one."""


def migrate(conn: Any) -> int:
    """Create or migrate the schema on `conn` (a psycopg connection in autocommit
    mode), in one transaction; returns the version it is at. Raises `SchemaTooNew`."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the store's schema is version {current}, newer than this broker's"
                f" {SCHEMA_VERSION}: upgrade the broker (or point it at another database)"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for step in MIGRATIONS[version]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return SCHEMA_VERSION
