"""The `store` fixture: each test that takes it runs on every Store implementation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.store import MemoryStore, SqliteStore, Store


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store
    if request.param == "postgresql":
        made = pg_store(request.getfixturevalue("postgres").database())
    else:
        made = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    yield made
    made.close()


def pg_store(url: str, broker_id: str = "broker-a") -> Store:
    from broker.store.postgres import PgStore

    made = PgStore(url, broker_id)
    made.register(lease_s=60.0)
    return made
