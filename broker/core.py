"""The broker's logic, without sockets: `BrokerCore`, the one object the shell calls.

It takes decoded messages, who sent them (broker.access) and the current time, and
hands each to its side, as the ZeroMQ guide's Majordomo broker does: client requests to
broker.client_side (admission, reads, waits, listings, access), worker messages to
broker.worker_side (registration, dispatch, results, leases, the poison rule,
heartbeats, data chunks). Both share one broker.state.CoreState (the store, the job
table of broker.jobs, waiters, workers, the outbox of broker.outbox). What the socket
loop (broker.broker) commits before it sends which part of the outbox is the
durability rule in docs/protocol.md ("Durability"); it calls `commit`, and `roll_back`
when the store fails (broker.turn), which undoes what the failed transaction did here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from broker.access import OPEN, Caller
from broker.client_side import ClientSide
from broker.jobs import JobTable
from broker.outbox import Outbox
from broker.pool import WorkerPool
from broker.state import CoreSettings, CoreState
from broker.store import JobRecord, StorageError, Store
from broker.turn import TurnEnd
from broker.worker_side import WorkerSide
from protocol import messages as m
from protocol.messages import Envelope, ErrorCode, JobStatus, job_id

__all__ = ["BrokerCore", "CoreSettings", "Outbox"]

log = logging.getLogger("lss.broker")


class BrokerCore:
    """Accepts jobs, hands them to workers, records their outcome, answers readers."""

    def __init__(
        self,
        store: Store,
        settings: CoreSettings,
        fingerprint: str | None,
        data_chunk: Callable[[int, int], m.DataChunk | None] | None = None,
        broker_id: str | None = None,
    ) -> None:
        self.state = CoreState(store, settings, fingerprint, broker_id)
        self._clients = ClientSide(self.state, self.stats)
        self._workers = WorkerSide(self.state, data_chunk)
        self._turn = TurnEnd(self.state)
        # Set by the loop when brokers share the store (broker.cluster): describes the
        # cluster in `stats`.
        self._cluster_stats: Callable[[], dict[str, object]] | None = None
        recovered = self.adopt(store.unfinished())
        if recovered:
            log.info("recovered %d unfinished job(s) from the store", recovered)

    # --- what the shell and the tests read ---------------------------------------

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def pool(self) -> WorkerPool:
        return self.state.pool

    @property
    def jobs(self) -> JobTable:
        return self.state.jobs

    @property
    def outbox(self) -> Outbox:
        return self.state.outbox

    @property
    def broker_id(self) -> str:
        return self.state.broker_id

    @property
    def shutting_down(self) -> bool:
        return self.state.shutting_down

    @property
    def fingerprint(self) -> str | None:
        return self.state.fingerprint

    @fingerprint.setter
    def fingerprint(self, value: str | None) -> None:
        self.state.fingerprint = value

    @property
    def wall_clock(self) -> Callable[[], float]:
        """The clock that dates what the store keeps (a test may set its own)."""
        return self.state.wall_clock

    @wall_clock.setter
    def wall_clock(self, clock: Callable[[], float]) -> None:
        self.state.wall_clock = clock

    def refuse_submits(self, reason: str | None) -> None:
        """Refuse submits with `reason` while storage fails or space is short (None: no
        longer)."""
        self.state.storage_refusal = reason

    def take_worker_frames(self) -> list[list[bytes]]:
        """The frames for workers queued so far (the loop sends them before the commit)."""
        return self.state.outbox.take_workers()

    def take_client_frames(self) -> list[list[bytes]]:
        """The frames for clients (sent after the commit); the turn's budgets start anew."""
        return self.state.outbox.take_clients()

    @property
    def running_of(self) -> Callable[[str], int] | None:
        """A key's unfinished jobs on every broker (set when brokers share the store)."""
        return self._clients.running_of

    @running_of.setter
    def running_of(self, count: Callable[[str], int] | None) -> None:
        self._clients.running_of = count

    def join_cluster(
        self,
        shutdown_all: Callable[[], None],
        describe: Callable[[], dict[str, object]],
        running_of: Callable[[str], int],
    ) -> None:
        """Brokers share the store (broker.cluster): a SHUTDOWN of scope 'all' asks every
        one (`shutdown_all`), STATS describes the cluster, a key's jobs count everywhere."""
        self._clients.on_shutdown_all = shutdown_all
        self._clients.running_of = running_of
        self._cluster_stats = describe

    def retry_refused_after(self, ms: int) -> None:
        """On a shared store, refusals that another broker would not make say when to
        try again (see CoreState.refuse)."""
        self.state.retry_refused_ms = ms

    # --- messages ----------------------------------------------------------------

    def on_client(self, env: Envelope, now_s: float, caller: Caller = OPEN) -> None:
        """Serve one decoded client request from `caller`."""
        self._clients.on_client(env, now_s, caller)

    def unoccupied(self, identity: bytes, caller: Caller = OPEN) -> bool:
        """Whether the producer of `caller` on connection `identity` has no unfinished
        job here (its request is a lone one: broker.backlog)."""
        return self._clients.unoccupied(identity, caller)

    def read_ahead(self, requests: Sequence[Envelope]) -> AbstractContextManager[None]:
        """Serve `requests` inside the block from the store's reads made at once, now
        (broker.read_ahead); a `StorageError` reading them goes up before the block."""
        return self._clients.read_ahead(requests)

    def on_worker(self, env: Envelope, now_s: float, caller: Caller = OPEN) -> None:
        """Handle one decoded message from a worker."""
        self._workers.on_worker(env, now_s, caller)

    def refuse(self, identity: bytes, tag: bytes, code: ErrorCode | str, reason: str) -> None:
        """Answer a client request with an error."""
        self.state.refuse(identity, tag, code, reason)

    def refuse_worker(self, identity: bytes, code: ErrorCode | str, reason: str) -> None:
        """Answer a worker's unreadable message with an error."""
        self.state.outbox.workers.append(m.route(identity, m.ErrorReply(str(code), reason)))

    def fail_unreadable_result(
        self, identity: bytes, tag: bytes, reason: str, now_s: float
    ) -> bool:
        """A RESULT that cannot be read ends its job as an error (broker.worker_side)."""
        return self._workers.fail_unreadable_result(identity, tag, reason, now_s)

    def lose_worker(self, identity: bytes, why: str, now_s: float) -> None:
        """Drop a dead or hung worker and re-queue what it held."""
        self._workers.lose_worker(identity, why, now_s)

    # --- jobs of other brokers ---------------------------------------------------

    def adopt(self, records: list[JobRecord]) -> int:
        """Queue unfinished jobs this broker now runs (at start, or taken over from a
        broker whose lease ran out); returns how many were new here."""
        return self.state.jobs.adopt(records, time.monotonic(), self.state.wall_clock())

    def forget_jobs(self) -> None:
        """Drop every unfinished job (this broker was deposed: another one runs them).
        Their waiters stay, answered when the job finishes elsewhere; results that
        workers still send for them are ignored."""
        for seq in self.state.jobs.clear():
            self.state.latency.forget(seq)

    def finished_elsewhere(self, seqs: list[int]) -> None:
        """Answer the waiters of jobs another broker finished (told by the store); drop
        this broker's jobs another broker cancelled, telling their workers."""
        self._clients.finished_elsewhere(seqs, time.monotonic())

    def remote_waits(self) -> list[int]:
        """Jobs waited for here that another broker runs."""
        return self._clients.remote_waits()

    # --- time --------------------------------------------------------------------

    def dispatch(self, now_s: float) -> None:
        """Give queued jobs to free workers, least recently used first."""
        self._workers.dispatch(now_s)

    def dispatch_newcomers(self, now_s: float) -> bool:
        """Give the jobs of producers with nothing running their slots now (the loop
        sends them at once: their answer may come back in the same turn); True if any
        went."""
        return self._workers.dispatch_newcomers(now_s)

    def tick(self, now_s: float) -> None:
        """Heartbeats, lost and hung workers (results expire in `expire_results`)."""
        self._workers.tick(now_s)

    def expire_results(self) -> int:
        """Delete results older than the retention period (by the wall clock: the store's
        dates are Unix seconds); their ids answer 'expired'."""
        state = self.state
        return state.store.expire(state.wall_clock() - state.settings.result_ttl_s)

    # --- storage -----------------------------------------------------------------

    def commit(self) -> None:
        """Commit the store's transaction; raises `StorageError` (then call `roll_back`).
        Submits told of a job the commit did not store are answered again."""
        self._turn.commit()
        self._clients.settle(self.state.store.superseded())
        self._clients.restate(self.state.store.overruled())

    def roll_back(self, failure: StorageError, now_s: float) -> str:
        """Roll the turn back after `failure` (broker.turn); returns the reason given."""
        self._clients.settle({})
        return self._turn.roll_back(failure, now_s)

    def _store_stats(self) -> dict[str, object]:
        """Database round trips: in all, and per job added lately (None: no job lately;
        0 on the in-process stores)."""
        total, per_job = self.state.store.round_trips()
        return {"round_trips": total, "round_trips_per_job": per_job}

    # --- shutdown ----------------------------------------------------------------

    def begin_shutdown(self, why: str) -> None:
        self.state.begin_shutdown(why)

    def drained(self) -> bool:
        """Shutting down and nothing left to run, or nothing left that can run: with no
        worker able to load the data, jobs stay in the store for the next start."""
        state = self.state
        return state.shutting_down and (not state.jobs or state.no_worker() is not None)

    def unfinished(self) -> int:
        """Jobs this broker runs that have not finished."""
        return len(self.state.jobs)

    def no_worker(self) -> str | None:
        """'no worker can load the data: REASON' while that holds, else None."""
        return self.state.no_worker()

    def release_workers(self, now_s: float) -> None:
        """Tell every worker to exit (after a drained shutdown)."""
        self._workers.release_workers(now_s)

    def stats(self, now_s: float) -> dict[str, object]:
        s = self.state
        return {
            "broker_id": s.broker_id,
            "workers": [w.describe(now_s) for w in s.pool.all()[: m.MAX_STATS_WORKERS]],
            "workers_registered": len(s.pool),
            "queue_depth": s.jobs.queued(),
            "in_flight": s.pool.in_flight(),
            "waiters": s.waiters.total,
            "jobs": {status.value: s.store.count(status) for status in JobStatus},
            "last_job": job_id(s.store.last_seq()) if s.store.last_seq() else None,
            "rates_per_s": s.rates.rates(now_s),
            "shutting_down": s.shutting_down,
            "fingerprint": s.fingerprint,
            "no_worker": s.no_worker(),
            "storage_failures": dict(s.storage_failures),
            "waiting_after_failed_commit": s.jobs.retrying(),
            "latency": s.latency.describe(),
            "store": self._store_stats(),
            "producers": s.jobs.producers.describe(now_s),
            **({"cluster": self._cluster_stats()} if self._cluster_stats else {}),
        }
