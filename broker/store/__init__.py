"""The results store: every job's body, status and answer, keyed by job number.

One interface (`Store`, broker.store.interface) and three implementations:
`MemoryStore` (broker.store.memory) for tests, `SqliteStore` (broker.store.sqlite),
durable, for one broker, and `PgStore` (broker.store.postgres), which brokers may
share; it is imported from its module, so that psycopg is needed only with it. Every
store's database errors become `StorageError` (broker.store.errors); the SQL stores
keep outcomes not yet written in one overlay (broker.store.pending) and say their
shared SQL once (broker.store.sql). Each store's schema and its migrations:
broker.store.sqlite_schema and broker.store.pg_schema; job numbering (SQLite's on-disk
reservations, PostgreSQL's blocks) and SQLite's WAL checkpoints: broker.store.numbering
and broker.store.checkpoint.
"""

from broker.store.errors import StorageError
from broker.store.interface import RECENT_SCAN, JobRecord, Outcome, Store, stored_bytes
from broker.store.memory import MemoryStore
from broker.store.sqlite import SqliteStore

__all__ = [
    "RECENT_SCAN",
    "JobRecord",
    "MemoryStore",
    "Outcome",
    "SqliteStore",
    "StorageError",
    "Store",
    "stored_bytes",
]
