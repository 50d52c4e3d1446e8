"""Fixtures of the PostgreSQL store's tests: two brokers' stores on one database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.store.postgres import PgStore


@pytest.fixture
def brokers(pg_url: str) -> Iterator[tuple[PgStore, PgStore]]:
    """Two registered `PgStore`s on one empty database, as brokers a and b; closed after."""
    a, b = PgStore(pg_url, "broker-a"), PgStore(pg_url, "broker-b")
    a.register(lease_s=60.0)
    b.register(lease_s=60.0)
    yield a, b
    a.close()
    b.close()
