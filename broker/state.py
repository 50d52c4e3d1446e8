"""What both sides of the broker share (`CoreState`), and the acts both take on it.

The client side (broker.client_side), the worker side (broker.worker_side) and the end
of a turn (broker.turn) each hold the one `CoreState`: the store, the job table, the
waiters, the workers, the outbox, the counters; and here are the acts more than one of
them takes: reply or refuse a request, send to a worker, finish a job.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from broker.access import Caller
from broker.jobs import JobTable
from broker.latency import LatencyRecorder
from broker.limits import MAX_WAITERS, MAX_WAITERS_PER_PEER, Waiters
from broker.load_failure import LoadFailure
from broker.outbox import Outbox
from broker.pool import WorkerPool
from broker.producers import QueueRule
from broker.quota import KeyQuota
from broker.rates import RateMeter
from broker.store import JobRecord, Outcome, Store
from protocol import config
from protocol import messages as m
from protocol.logs import Throttle, shown
from protocol.messages import ErrorCode, JobStatus, job_id

log = logging.getLogger("lss.broker")

RETRYABLE = (ErrorCode.STORAGE, ErrorCode.SHUTTING_DOWN)  # may pass, or another broker serves


@dataclass(frozen=True)
class CoreSettings:
    """The knobs of the broker's logic (times in seconds)."""

    heartbeat_interval_s: float
    heartbeat_liveness: int
    job_timeout_s: float
    max_attempts: int
    max_queue: int
    result_ttl_s: float
    max_message_bytes: int
    list_page_limit: int = 10_000
    key_quota_mb: float = config.KEY_QUOTA_MB  # bytes a key's jobs may take; 0: no quota
    max_workers: int = config.MAX_WORKERS  # registered at once; a READY past it is refused
    producer_reserve: int = config.PRODUCER_RESERVE  # broker.producers.queue_refusal
    max_producers: int = config.MAX_PRODUCERS
    producer_weights: tuple[tuple[str, float], ...] = ()  # key name -> weight (default 1)


class CoreState:
    """The broker's state without sockets, and the acts both of its sides take."""

    def __init__(
        self, store: Store, settings: CoreSettings, fingerprint: str | None, broker_id: str | None
    ) -> None:
        self.store = store
        # `now_s` everywhere is the loop's monotonic clock (timers, leases, heartbeats);
        # this one only dates what the store keeps (created_s, finished_s, expiry).
        self.wall_clock: Callable[[], float] = time.time
        self.settings = settings
        self.fingerprint = fingerprint
        self.broker_id = broker_id or uuid.uuid4().hex
        self.outbox = Outbox()
        self.pool = WorkerPool()
        # Unfinished jobs, their queues (one per producer), the turn's journal.
        self.jobs = JobTable(dict(settings.producer_weights))
        self.admission = QueueRule(
            settings.max_queue, settings.producer_reserve, settings.max_producers
        )
        self.waiters = Waiters(MAX_WAITERS_PER_PEER, MAX_WAITERS)
        self.quota = KeyQuota(store, settings.key_quota_mb, settings.result_ttl_s)
        self.shutting_down = False
        self.rates = RateMeter()
        self.latency = LatencyRecorder()
        self.warn = Throttle(log)
        self.load_failure = LoadFailure()  # why no worker can run jobs (broker.load_failure)
        # Why submits are refused while storage fails or space is short (set by the loop).
        self.storage_refusal: str | None = None
        self.retry_refused_ms = 0  # set on a shared store: see `refuse`
        self.storage_failures: Counter[str] = Counter()  # by the store method that failed

    def refuse(self, identity: bytes, tag: bytes, code: ErrorCode | str, reason: str) -> None:
        """Answer a request with an error; one that passes, or that another broker on
        the store would not make, says when to try again (`retry_refused_ms`)."""
        retry_ms = self.retry_refused_ms if code in RETRYABLE else 0
        self.reply(identity, tag, m.ErrorReply(str(code), reason, retry_ms))

    def reply(
        self, identity: bytes, tag: bytes, message: m.Message, payload: bytes | None = None
    ) -> None:
        """Queue a reply to a client; answers count against its budget of the turn."""
        self.outbox.reply(identity, tag, message, payload)

    def forbid(self, identity: bytes, tag: bytes, caller: Caller, what: str) -> None:
        """Refuse an operation `caller`'s role does not allow; logged once in a while."""
        self.warn.warning(
            ("forbidden", caller.key), "refused %s from %s key %s (%s)",
            what, caller.role, shown(caller.name), shown(caller.key),
        )  # fmt: skip
        self.refuse(identity, tag, ErrorCode.FORBIDDEN, f"a {caller.role} key may not {what}")

    def to_worker(
        self, identity: bytes, message: m.Message, now_s: float, tag: bytes = b""
    ) -> None:
        self.outbox.workers.append(m.route(identity, message, tag))
        worker = self.pool.get(identity)
        if worker is not None:
            worker.last_sent_s = now_s

    def finish(self, seq: int, outcome: Outcome, now_s: float) -> None:
        """Record job `seq`'s outcome and answer its waiters."""
        self.store.finish(seq, outcome, self.wall_clock(), self.jobs.owner_of(seq) or "")
        waiters = self.waiters.pop(seq)
        job = self.jobs.finish(seq, waiters)
        if job.producer is not None:
            self.jobs.producers.finished(job.producer, now_s)
        status = str(outcome.status)
        self.rates.count(status, now_s)
        self.latency.finished(seq, now_s)
        text = job_id(seq)
        log.debug("%s %s%s", text, status, f": {shown(outcome.reason)}" if outcome.reason else "")
        state = m.JobState(text, status, outcome.reason, outcome.fingerprint)
        for identity, tag in waiters:
            self.reply(identity, tag, state, outcome.answer)

    def cancel(self, seq: int, reason: str, now_s: float) -> None:
        """End job `seq` (one of this broker's) as CANCELLED: it is recorded and its
        waiters answered now; a worker holding it is told (CANCEL_JOB), and its answer,
        when it comes, is dropped (the job is no longer this broker's to finish)."""
        holder = self.pool.holder(seq)
        self.finish(seq, Outcome(JobStatus.CANCELLED, reason=reason), now_s)
        if holder is not None:
            self.to_worker(holder.identity, m.CancelJob(), now_s, job_id(seq).encode())

    def no_worker(self) -> str | None:
        """'no worker can load the data: REASON' while that holds, else None."""
        return self.load_failure.refusal(len(self.pool.all()))

    def begin_shutdown(self, why: str) -> None:
        if not self.shutting_down:
            log.info("graceful shutdown (%s): %d job(s) to finish", why, len(self.jobs))
        self.shutting_down = True


def final_state(seq: int, record: JobRecord) -> m.JobState:
    """A stored job's state."""
    return m.JobState(job_id(seq), record.status.value, record.reason, record.fingerprint)
