"""A real PostgreSQL for tests: the bench's throwaway server (bench.postgres), re-exported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from bench.postgres import PostgresServer, postgres_server, skip_reason

__all__ = ["PostgresServer", "postgres_or_skip", "postgres_server", "skip_reason"]


@contextlib.contextmanager
def postgres_or_skip() -> Iterator[PostgresServer]:
    """A started server, removed afterwards; the test skips (with why) without one."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server
