"""One broker among several on a shared PostgreSQL store: its lease, adoption, and news.

`Cluster.step` runs at the start of every loop turn, outside the turn's transaction:
- every `lease_s / 3` it renews this broker's lease; when the store says the broker was
  deposed (its lease ran out and another broker took its jobs, or a finish was
  refused), the broker drops its unfinished jobs, registers again with a new epoch, and
  takes back whatever no live broker covers;
- every `lease_s / ADOPT_CHECKS_PER_LEASE` it adopts the unfinished jobs of brokers
  whose lease ran out (not while shutting down): a dead broker's jobs move within
  about 1.1 lease times of its last renewal;
- it reads the store's notifications on a dedicated LISTEN connection, whose socket
  the loop polls with its ZeroMQ sockets: jobs other brokers finished (their waiters
  here are answered at once) and a request that every broker shut down.
A lost listening connection is made again with backoff; what it may have missed is
read from the store then. The rules: docs/deployment.md, "Several brokers".
"""

from __future__ import annotations

import logging
import time

import psycopg

from broker.core import BrokerCore
from broker.store import JobRecord
from broker.store.errors import reason
from broker.store.pg_connection import Connection, Connector
from broker.store.pg_lease import FINISHED_CHANNEL, SHUTDOWN_CHANNEL
from broker.store.postgres import PgStore

log = logging.getLogger("lss.broker.cluster")

LISTEN_RETRY_MIN_S, LISTEN_RETRY_MAX_S = 0.2, 5.0
ADOPT_CHECKS_PER_LEASE = 10  # one indexed query over unfinished jobs each


class Cluster:
    """Keeps one broker's lease and jobs in step with the other brokers on its store."""

    def __init__(self, store: PgStore, core: BrokerCore, lease_s: float) -> None:
        self.store, self.core, self.lease_s = store, core, lease_s
        self._next_renew_s = self._next_adopt_s = 0.0  # time.monotonic()
        self._listener: Connection | None = None
        self._listener_maker = Connector(store.url)
        self._next_listen_s = 0.0
        self._listen_backoff_s = LISTEN_RETRY_MIN_S
        self._adopted = self._depositions = 0
        core.join_cluster(store.request_shutdown, self.describe, store.running_of)
        store.register(lease_s)
        log.info("registered as broker %s, epoch %d, lease %g s", store.broker_id,
                 store.epoch, lease_s)  # fmt: skip

    def fileno(self) -> int | None:
        """The listening connection's socket, for the loop's poller (None while down)."""
        return None if self._listener is None else self._listener.fileno()

    def step(self, readable: bool) -> None:
        """Read notifications (if `readable`), keep listening, renew, adopt. Raises
        `StorageError` when the store fails (the loop's storage path handles it)."""
        if readable:
            self._read_notifications()
        now = time.monotonic()
        if self._listener is None and now >= self._next_listen_s:
            self._listen(now)
        if self.store.reconnected:
            self._catch_up()
        if self.store.deposed or now >= self._next_renew_s:
            self._renew()
            self._next_renew_s = now + self.lease_s / 3
        if now >= self._next_adopt_s and not self.core.shutting_down:
            self._take(self.store.adopt(), "adopted from brokers whose lease ran out")
            self._next_adopt_s = now + self.lease_s / ADOPT_CHECKS_PER_LEASE

    def _catch_up(self) -> None:
        """After the store's connection was made again: what the lost one may have hidden.
        A commit whose outcome was unknown may have stored jobs; notifications read while
        the store failed may not have been acted on."""
        self._take(self.store.unfinished(), "of this broker's found in the store again")
        self.core.finished_elsewhere(self.core.remote_waits())
        self._check_shutdown()
        self.store.reconnected = False  # only once all of it succeeded

    def _renew(self) -> None:
        if self.store.deposed or not self.store.renew(self.lease_s):
            self._depositions += 1
            old = self.store.epoch
            self.core.forget_jobs()
            self.store.register(self.lease_s)
            log.warning(
                "this broker was deposed (epoch %d): another broker runs its jobs now; it"
                " dropped them and registered again as epoch %d", old, self.store.epoch,
            )  # fmt: skip
            self._next_adopt_s = 0.0  # take back at once what nobody runs

    def _take(self, records: list[JobRecord], why: str) -> None:
        taken = self.core.adopt(records)
        if taken:
            self._adopted += taken
            log.warning("%d unfinished job(s) %s", taken, why)

    def _listen(self, now: float) -> None:
        try:
            listener = self._listener_maker.take()
            if listener is None:
                return  # being made: the next step looks again
            listener.execute(f"LISTEN {FINISHED_CHANNEL}")
            listener.execute(f"LISTEN {SHUTDOWN_CHANNEL}")
        except psycopg.Error as exc:
            self._next_listen_s = now + self._listen_backoff_s
            self._listen_backoff_s = min(2 * self._listen_backoff_s, LISTEN_RETRY_MAX_S)
            log.warning("cannot listen to the store's notifications: %s", reason(exc))
            return
        self._listener, self._listen_backoff_s = listener, LISTEN_RETRY_MIN_S
        log.info("listening to the store's notifications")
        # What finished, or was asked, while nobody here listened.
        self.core.finished_elsewhere(self.core.remote_waits())
        self._check_shutdown()

    def _read_notifications(self) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            listener.pgconn.consume_input()
        except psycopg.Error as exc:
            log.warning("lost the store's notifications: %s", reason(exc))
            self._listener = None
            listener.close()
            return
        finished: list[int] = []
        shutdown = False
        own = self.store.backend_pid()
        while (note := listener.pgconn.notifies()) is not None:
            if note.be_pid == own:
                continue  # this broker's own commits: it knows
            if note.relname.decode() == SHUTDOWN_CHANNEL:
                shutdown = True
            else:  # any database user may NOTIFY: keep only numbers
                text = note.extra.decode("ascii", "replace")
                finished += [int(seq) for seq in text.split(",") if seq.isdigit()]
        self.core.finished_elsewhere(finished)
        if shutdown:
            self._check_shutdown()

    def _check_shutdown(self) -> None:
        if self.store.shutdown_requested():
            self.core.begin_shutdown("every broker on the store was asked to shut down")

    def describe(self) -> dict[str, object]:
        """This broker's place among the others, for `stats`."""
        return {
            "broker_epoch": self.store.epoch,
            "lease_s": self.lease_s,
            "listening": self._listener is not None,
            "jobs_adopted": self._adopted,
            "depositions": self._depositions,
        }

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
