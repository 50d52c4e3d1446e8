"""A broker's place on the shared PostgreSQL store: its connection, its lease, its epoch.

Each broker registers a lease row with a new epoch (`register`, `renew`); the jobs it
dispatches carry its `broker_id` and `broker_epoch`, the fencing token of
docs/deployment.md ("Several brokers"); `adopt` takes over the unfinished jobs of
brokers whose lease ran out; `request_shutdown` asks every broker to drain and exit.
`PgStore` (broker.store.postgres) is such a connection that is also a `Store`.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from broker.store.errors import translated
from broker.store.interface import JobRecord
from broker.store.pg_connection import PgSession
from broker.store.sql import IS_RUNNING, JOB_COLUMNS, record_from_row

log = logging.getLogger("lss.broker.store")

FINISHED_CHANNEL = "lss_finished"
SHUTDOWN_CHANNEL = "lss_shutdown"
_op = translated(psycopg.Error)


class LeasedConnection:
    """The broker `broker_id` (on `host`) on the store at `url`, and its lease."""

    def __init__(self, url: str, broker_id: str, host: str = "") -> None:
        self.url, self.broker_id, self.host = url, broker_id, host
        self.epoch = 0
        self.deposed = False  # set when the store refused a write: another broker owns it
        self.started_at: Any = None  # the database's time at the first registration
        self._session = PgSession(url)
        self._changed = False  # a statement was written in the open transaction

    @property
    def reconnected(self) -> bool:
        """Set at each new connection; broker.cluster clears it."""
        return self._session.reconnected

    @reconnected.setter
    def reconnected(self, value: bool) -> None:
        self._session.reconnected = value

    def _write(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any]
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        """Run a writing statement inside the open transaction (begun if need be)."""
        db = self._session.begin()
        self._changed = True
        return db.execute(sql, params)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> psycopg.Cursor[tuple[Any, ...]]:
        """Run a query: in the open transaction if there is one, else on its own."""
        return self._session.conn().execute(sql, params)

    def backend_pid(self) -> int:
        """The database server process of this store's connection (0 if none)."""
        return self._session.backend_pid()

    @_op
    def register(self, lease_s: float) -> int:
        """Register this broker with a new epoch and a lease of `lease_s`, ending its
        previous one if it has any (its jobs are then anyone's to adopt); the epoch."""
        if self.epoch:
            self._read("DELETE FROM brokers WHERE epoch = %s", (self.epoch,))
        epoch, registered_at = self._read(
            "INSERT INTO brokers (epoch, broker_id, host, expires_at)"
            " VALUES (nextval('broker_epoch_seq'), %s, %s, now() + make_interval(secs => %s))"
            " RETURNING epoch, registered_at",
            (self.broker_id, self.host, lease_s),
        ).fetchone() or (0, None)
        self.epoch, self.deposed = int(epoch), False
        if self.started_at is None:
            self.started_at = registered_at
        return self.epoch

    @_op
    def renew(self, lease_s: float) -> bool:
        """Extend this broker's lease; False (and `deposed`) if another broker ended it."""
        renewed = self._read(
            "UPDATE brokers SET expires_at = now() + make_interval(secs => %s) WHERE epoch = %s",
            (lease_s, self.epoch),
        ).rowcount
        if renewed != 1:
            self.deposed = True
        return renewed == 1

    @_op
    def adopt(self) -> list[JobRecord]:
        """End the leases that ran out and take over every unfinished job that no live
        lease covers; the jobs taken. Runs in a transaction of its own."""
        db = self._session.conn()
        with db.transaction():
            ended = db.execute(
                "DELETE FROM brokers WHERE expires_at < now() RETURNING epoch, broker_id"
            ).fetchall()
            for epoch, broker_id in ended:
                log.warning("the lease of broker %s (epoch %d) ran out", broker_id, epoch)
            rows = db.execute(
                f"UPDATE jobs SET broker_id = %s, broker_epoch = %s WHERE {IS_RUNNING}"
                f" AND broker_epoch <> %s AND NOT EXISTS (SELECT 1 FROM brokers b"
                f" WHERE b.epoch = jobs.broker_epoch) RETURNING {JOB_COLUMNS}",
                (self.broker_id, self.epoch, self.epoch),
            ).fetchall()
        return sorted((record_from_row(row) for row in rows), key=lambda record: record.seq)

    @_op
    def request_shutdown(self) -> None:
        """Ask every broker on the store to drain and exit (at the next commit)."""
        self._write("INSERT INTO shutdown_requests DEFAULT VALUES", ())
        self._write("SELECT pg_notify(%s, '')", (SHUTDOWN_CHANNEL,))

    @_op
    def shutdown_requested(self) -> bool:
        """Whether every broker was asked to shut down since this one started."""
        row = self._read(
            "SELECT EXISTS (SELECT 1 FROM shutdown_requests WHERE requested_at >= %s)",
            (self.started_at,),
        ).fetchone()
        return bool(row and row[0])
