"""broker.store.pg_connection.Connector: a connect that hangs never holds the caller up.

A listening socket that never answers stands for a database host whose link is cut: the
TCP handshake completes, and libpq then waits for the server's first word until its
connect timeout. No PostgreSQL server is needed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import psycopg
import pytest

from bench.service import wait_until
from broker.store.pg_connection import CONNECT_OPTIONS, Connector


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_connect_that_hangs_goes_on_in_the_background_and_ends_in_its_error(
    silent_port: int,
) -> None:
    connector = Connector(f"postgresql://lss@127.0.0.1:{silent_port}/lss")
    started = time.monotonic()
    assert connector.take() is None  # being made
    assert connector.take() is None
    assert time.monotonic() - started < CONNECT_OPTIONS["connect_timeout"] / 2

    def failed() -> psycopg.Error | None:
        try:
            assert connector.take() is None
        except psycopg.OperationalError as exc:
            return exc
        return None

    error = wait_until(failed, 3 * CONNECT_OPTIONS["connect_timeout"], "the connect's timeout")
    assert "timeout" in str(error)
    assert connector.take() is None  # a new try has begun
