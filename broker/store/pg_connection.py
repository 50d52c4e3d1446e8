"""Connections to the PostgreSQL store: `connect` with bounded waits; `Connector`, which
makes them in a thread of its own (a connect to a host whose link is cut waits for its
timeout, and the broker's loop must go on answering meanwhile); and `PgSession`, the
store's connection, made again by itself when lost, at most every `RECONNECT_MAX_S`
(a failed try is a `StorageError`). Its connections are `CountingConnection`s: the
session counts the round trips to the server (`round_trips`), every connection's summed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.abc import PQGen

from broker.store.errors import StorageError, reason

log = logging.getLogger("lss.broker.store")

Connection = psycopg.Connection[tuple[Any, ...]]
Cursor = psycopg.Cursor[tuple[Any, ...]]
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 5.0
CONNECT_GRACE_S = 0.05  # a connect that takes longer goes on in the background
# Bounds on a blocking call to an unreachable database host: the broker's loop waits
# on it (libpq connection parameters; a URL's own values win). A statement sent to a
# host cut off fails once its bytes stay unacknowledged for `tcp_user_timeout`: 2 s,
# under the clients' heartbeat window (2.5 s), so that they wait out the stall rather
# than move to another broker, which cannot reach the database either. TCP
# acknowledgements come from the kernel, not from a busy server, so 2 s is ample.
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 2000,
    # A broker stopped (or cut off) in the middle of a turn must not hold its row locks
    # and block the others: the server ends such a session after 2 s, and no statement
    # waits for a lock much longer (it fails, and the turn is rolled back).
    "options": "-c idle_in_transaction_session_timeout=2000 -c lock_timeout=3000",
}


class CountingConnection(psycopg.Connection[tuple[Any, ...]]):
    """A connection that counts its round trips: each wait for the server's answer
    outside pipeline mode, and each pipeline (its statements go with one sync)."""

    round_trips = 0
    _piped = False  # inside `pipeline`: counted once, at its end

    def wait(self, gen: PQGen[Any], interval: float = 0.1, timeout: float | None = None) -> Any:
        if not self._piped:
            self.round_trips += 1
        return super().wait(gen, interval, timeout)

    @contextmanager
    def pipeline(self) -> Iterator[psycopg.Pipeline]:
        if self._piped:  # nested: the outer one counts
            with super().pipeline() as pipeline:
                yield pipeline
            return
        self._piped = True
        try:
            with super().pipeline() as pipeline:
                yield pipeline
        finally:
            self._piped = False
            self.round_trips += 1


def connect(url: str) -> Connection:
    """An autocommit connection to `url`, with the module's timeouts unless it sets its own."""
    options = {k: v for k, v in CONNECT_OPTIONS.items() if f"{k}=" not in url}
    return CountingConnection.connect(url, autocommit=True, **options)


class Connector:
    """Makes connections to `url` in a thread of its own, one at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._thread: threading.Thread | None = None
        self._made: Connection | psycopg.Error | None = None

    def take(self) -> Connection | None:
        """The connection made since the last call, or None while it is being made (the
        first call starts making one). Raises the `psycopg.Error` of a failed try."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._make, name="pg-connect", daemon=True)
            self._thread.start()
            self._thread.join(CONNECT_GRACE_S)  # a reachable database answers within it
        if self._thread.is_alive():  # later calls only look: each read of a turn asks
            return None
        self._thread = None
        made, self._made = self._made, None
        if isinstance(made, psycopg.Error):
            raise made
        return made

    def _make(self) -> None:
        try:
            self._made = connect(self.url)
        except psycopg.Error as exc:
            self._made = exc


class PgSession:
    """The store's one connection to `url`, and its transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reconnected = False  # set at each new connection; broker.cluster clears it
        self._db: Connection | None = None
        self._connector: Connector | None = None  # after the first connection: reconnects
        self._next_connect_s = 0.0
        self._backoff_s = RECONNECT_MIN_S
        self._round_trips_before = 0  # made by the connections lost since

    @property
    def round_trips(self) -> int:
        """Round trips to the server since the session began (CountingConnection)."""
        return self._round_trips_before + _round_trips(self._db)

    def reconnect_in_background(self) -> None:
        """From now on, make lost connections in the background (`Connector`)."""
        self._connector = Connector(self.url)

    def conn(self) -> Connection:
        """The connection, made again if it was lost; `StorageError` if it cannot be
        had now (a try failed within the backoff, or one is being made)."""
        db = self._db
        if db is not None and not db.closed and not db.broken:
            return db
        now = time.monotonic()
        if now < self._next_connect_s:
            raise StorageError("connect", "the database is unreachable; trying again soon")
        try:
            made = self._connector.take() if self._connector else connect(self.url)
        except psycopg.Error as exc:
            self._next_connect_s = now + self._backoff_s
            self._backoff_s = min(2 * self._backoff_s, RECONNECT_MAX_S)
            raise StorageError("connect", reason(exc)) from exc
        if made is None:
            raise StorageError("connect", "connecting to the database again")
        self._round_trips_before += _round_trips(db)
        self._db = made
        if db is not None:
            log.info("connected to the database again")
        self._backoff_s = RECONNECT_MIN_S
        self.reconnected = True
        return self._db

    def live(self) -> Connection | None:
        """The connection if it is usable, without making one."""
        db = self._db
        return None if db is None or db.closed or db.broken else db

    def in_transaction(self) -> bool:
        db = self._db
        return db is not None and db.info.transaction_status != pq.TransactionStatus.IDLE

    def begin(self) -> Connection:
        """The connection, inside a transaction (begun if none is open)."""
        db = self.conn()
        if not self.in_transaction():
            db.execute("BEGIN")
        return db

    def backend_pid(self) -> int:
        """The database server process of the connection (0 if none)."""
        db = self._db
        return 0 if db is None or db.closed else db.info.backend_pid

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _round_trips(db: Connection | None) -> int:
    return db.round_trips if isinstance(db, CountingConnection) else 0
