"""A real PostgreSQL for tests: the bench's throwaway server (bench.postgres), re-exported."""

from __future__ import annotations

from bench.postgres import PostgresServer, postgres_server, skip_reason

__all__ = ["PostgresServer", "postgres_server", "skip_reason"]
