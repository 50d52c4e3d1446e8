"""A real PostgreSQL for tests: the bench's throwaway server (bench.postgres), re-exported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from bench.postgres import PostgresServer, postgres_server, skip_reason

__all__ = [
    "PostgresServer",
    "postgres_or_skip",
    "postgres_server",
    "skip_reason",
    "statements_run",
]


@contextlib.contextmanager
def postgres_or_skip() -> Iterator[PostgresServer]:
    """A started server, removed afterwards; the test skips (with why) without one."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server


def statements_run(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement psycopg sends from now on (one round trip each), in
    order: a list that grows until the monkeypatch is undone."""
    import psycopg

    seen: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    return seen
