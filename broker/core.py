"""The broker's logic, without sockets: jobs, workers, waiters, shutdown.

`BrokerCore` takes decoded messages, who sent them (broker.access) and the current
time, updates the store and its in-memory state, and queues the frames to send in an
`Outbox`. It also enforces what a peer may do and how much it may hold: roles, job
ownership, and the per-peer caps of docs/protocol.md ("Limits"). What the socket loop
(broker.broker) commits before it sends which part of the outbox is the durability rule
in docs/protocol.md ("Durability"); it calls `commit`, and `roll_back` when the store
fails, which undoes what the failed transaction did here too.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Set
from dataclasses import dataclass, field

from broker import undo
from broker.access import OPEN, Caller
from broker.history import recent_jobs
from broker.jobs import JobTable
from broker.latency import LatencyRecorder
from broker.limits import (
    ANSWER_BYTES_PER_TURN,
    DATA_BYTES_PER_TURN,
    MAX_WAITERS,
    MAX_WAITERS_PER_PEER,
    PEER_ANSWER_BYTES_PER_TURN,
    Budget,
    Waiter,
    Waiters,
)
from broker.load_failure import LoadFailure
from broker.pool import WorkerInfo, WorkerPool, peer_name
from broker.rates import RateMeter
from broker.storage_guard import MB
from broker.store import JobRecord, Outcome, StorageError, Store, stored_bytes
from protocol import config, events
from protocol import messages as m
from protocol.logs import Throttle, escaped, shown
from protocol.messages import Envelope, ErrorCode, JobStatus, job_id, job_seq

log = logging.getLogger("lss.broker")

# Losses after which a suspect fails even if no worker ever said STARTED for it (one
# that crashed before its STARTED left), as a multiple of `max_attempts`.
UNCONFIRMED_LOSS_FACTOR = 3
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


@dataclass
class Outbox:
    """Frames to send at the end of the loop turn: to clients and to workers; and the
    bytes of answers and data chunks queued this turn, per peer, to keep them bounded.

    When each part leaves relative to the commit: docs/protocol.md, "Durability".
    """

    clients: list[list[bytes]] = field(default_factory=list)
    workers: list[list[bytes]] = field(default_factory=list)
    answers: Budget = field(
        default_factory=lambda: Budget(PEER_ANSWER_BYTES_PER_TURN, ANSWER_BYTES_PER_TURN)
    )
    data: Budget = field(
        default_factory=lambda: Budget(config.DATA_CHUNK_BYTES, DATA_BYTES_PER_TURN)
    )

    def take_workers(self) -> list[list[bytes]]:
        """The frames for workers queued so far (the loop sends them before the commit)."""
        workers, self.workers = self.workers, []
        return workers

    def take_clients(self) -> list[list[bytes]]:
        """The frames for clients (sent after the commit); the turn's budgets start anew."""
        clients, self.clients = self.clients, []
        self.answers.reset()
        self.data.reset()
        return clients

    def take(self) -> tuple[list[list[bytes]], list[list[bytes]]]:
        """Both, at the end of a turn with no commit in between (unit tests)."""
        workers = self.take_workers()
        return self.take_clients(), workers


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
        self.store = store
        # `now_s` everywhere is the loop's monotonic clock (timers, leases, heartbeats);
        # this one only dates what the store keeps (created_s, finished_s, expiry).
        self.wall_clock: Callable[[], float] = time.time
        self.settings = settings
        self.fingerprint = fingerprint
        self.broker_id = broker_id or uuid.uuid4().hex
        self.outbox = Outbox()
        self.pool = WorkerPool()
        self.shutting_down = False
        self.rates = RateMeter()
        self.latency = LatencyRecorder()
        self._data_chunk = data_chunk
        self.jobs = JobTable()  # unfinished jobs, their queue, the turn's journal
        self._waiters = Waiters(MAX_WAITERS_PER_PEER, MAX_WAITERS)
        self._quota_bytes = int(settings.key_quota_mb * MB)
        # A submit needs room for its body and for an answer as large as any seen: a
        # key at its quota is refused at submit, not given jobs whose answers are dropped.
        self._largest_answer = 0
        self._warn = Throttle(log)
        self.load_failure = LoadFailure()  # why no worker can run jobs (broker.load_failure)
        # Why submits are refused while storage fails or space is short (set by the loop).
        self.storage_refusal: str | None = None
        self.retry_refused_ms = 0  # set on a shared store: see `refuse`
        self._storage_failures: Counter[str] = Counter()  # by the store method that failed
        # Set by the loop when brokers share the store (broker.cluster): asks every
        # broker to shut down, describes the cluster in `stats`, counts a key's jobs.
        self.on_shutdown_all: Callable[[], None] | None = None
        self.cluster_stats: Callable[[], dict[str, object]] | None = None
        self.running_of: Callable[[str], int] | None = None  # a key's jobs, all brokers
        recovered = self.adopt(store.unfinished())
        if recovered:
            log.info("recovered %d unfinished job(s) from the store", recovered)

    def adopt(self, records: list[JobRecord]) -> int:
        """Queue unfinished jobs this broker now runs (at start, or taken over from a
        broker whose lease ran out); returns how many were new here."""
        return self.jobs.adopt(records)

    def forget_jobs(self) -> None:
        """Drop every unfinished job (this broker was deposed: another one runs them).
        Their waiters stay, answered when the job finishes elsewhere; results that
        workers still send for them are ignored."""
        for seq in self.jobs.clear():
            self.latency.forget(seq)

    def finished_elsewhere(self, seqs: list[int]) -> None:
        """Answer the waiters of jobs another broker finished (told by the store)."""
        for seq in seqs:
            if seq in self.jobs or not self._waiters.waiting(seq):
                continue
            record = self.store.get(seq)
            if record is None:  # expired meanwhile
                for identity, tag in self._waiters.pop(seq):
                    self.refuse(identity, tag, ErrorCode.EXPIRED, "expired")
            elif record.status is not JobStatus.RUNNING:
                for identity, tag in self._waiters.pop(seq):
                    self._reply(identity, tag, _final_state(seq, record), record.answer)

    def remote_waits(self) -> list[int]:
        """Jobs waited for here that another broker runs."""
        return [seq for seq in self._waiters.jobs() if seq not in self.jobs]

    # --- clients -----------------------------------------------------------------

    def on_client(self, env: Envelope, now_s: float, caller: Caller = OPEN) -> None:
        """Serve one decoded client request from `caller`."""
        identity, tag, msg = env.identity or b"", env.tag, env.message
        if not caller.may_ask:  # ZAP admits no worker key here; if it ever did: no
            self._forbid(identity, tag, caller, "use the client endpoint")
        elif isinstance(msg, m.Submit):
            self._submit(identity, tag, msg, now_s, caller)
        elif isinstance(msg, m.Get | m.Wait):
            wait = isinstance(msg, m.Wait)
            self._read(identity, tag, job_seq(msg.job_id), wait=wait, caller=caller)
        elif isinstance(msg, m.ListJobs):
            self._list(identity, tag, msg, caller)
        elif isinstance(msg, m.NumJobs):
            self._reply(identity, tag, m.JobCount(self._count_running(caller)))
        elif isinstance(msg, m.Shutdown):
            self._shutdown(identity, tag, caller, msg.scope)
        elif isinstance(msg, m.Ping):
            pong = m.Pong(self.broker_id, shutting_down=self.shutting_down, pid=os.getpid())
            self._reply(identity, tag, pong)
        elif isinstance(msg, m.Stats | m.Recent):
            self._reply(identity, tag, self._report(identity, msg, now_s, caller))
        else:
            name = type(msg).__name__
            self.refuse(identity, tag, ErrorCode.UNKNOWN_COMMAND, f"{name} is not a client request")

    def _report(
        self, identity: bytes, msg: m.Stats | m.Recent, now_s: float, caller: Caller
    ) -> m.Message:
        if self.outbox.answers.spent(identity):  # its reply could not go: spare the work
            return _over_budget()
        if isinstance(msg, m.Recent):  # a client key sees only its own jobs here too
            return recent_jobs(self.store, msg.limit, None if caller.sees_all else caller.key)
        quota = {"quota_bytes": self._quota_bytes,
                 "stored_bytes": self.store.stored_bytes(caller.owner)}  # fmt: skip
        return m.StatsReply({**self.stats(now_s), "key": quota})

    def refuse(self, identity: bytes, tag: bytes, code: ErrorCode | str, reason: str) -> None:
        """Answer a request with an error; one that passes, or that another broker on
        the store would not make, says when to try again (`retry_refused_ms`)."""
        retry_ms = self.retry_refused_ms if code in RETRYABLE else 0
        self._reply(identity, tag, m.ErrorReply(str(code), reason, retry_ms))

    def _reply(
        self, identity: bytes, tag: bytes, message: m.Message, payload: bytes | None = None
    ) -> None:
        frames = m.route(identity, message, tag, payload)
        if payload is not None or isinstance(message, SIZED_REPLIES):
            size = len(payload) if payload is not None else sum(map(len, frames))
            if not self.outbox.answers.take(identity, size):
                frames = m.route(identity, _over_budget(), tag)
        self.outbox.clients.append(frames)

    def _forbid(self, identity: bytes, tag: bytes, caller: Caller, what: str) -> None:
        """Refuse an operation `caller`'s role does not allow; logged once in a while."""
        self._warn.warning(
            ("forbidden", caller.key), "refused %s from %s key %s (%s)",
            what, caller.role, shown(caller.name), shown(caller.key),
        )  # fmt: skip
        self.refuse(identity, tag, ErrorCode.FORBIDDEN, f"a {caller.role} key may not {what}")

    def _shutdown(self, identity: bytes, tag: bytes, caller: Caller, scope: str) -> None:
        if not caller.may_change_service:
            self._forbid(identity, tag, caller, "shut the service down")
            return
        if scope not in m.SHUTDOWN_SCOPES:
            self.refuse(identity, tag, ErrorCode.BAD_REQUEST, f"scope must be one of"
                        f" {', '.join(m.SHUTDOWN_SCOPES)}")  # fmt: skip
            return
        if scope == m.SHUTDOWN_ALL and self.on_shutdown_all is not None:
            self.on_shutdown_all()  # every broker on the store; this one as well
        self.begin_shutdown(f"{caller.role} key {shown(caller.name)} asked" if caller.role
                            else "a client asked")  # fmt: skip
        self._reply(identity, tag, m.ShuttingDown(pending=len(self.jobs)))

    def _submit(
        self, identity: bytes, tag: bytes, msg: m.Submit, now_s: float, caller: Caller
    ) -> None:
        body = m.body_of(m.Job(msg.statistic, msg.params))
        malformed = self._malformed(identity, msg, body)
        if malformed:  # not looked up: it names no job, and its text may break a query
            self.refuse(identity, tag, *malformed)
            return
        refusal = self._submit_refusal(caller, body)
        seq = self.store.find_request(msg.request_id) if refusal else None
        if refusal and seq is None:
            self.refuse(identity, tag, *refusal)
            return
        if seq is None:
            seq = self._accept_alone(identity, tag, msg, body=body, now_s=now_s, owner=caller.owner)
            if seq is None:
                return
        if not self._visible(seq, caller):  # another key's request id: never its job
            self._forbid(identity, tag, caller, "reuse another key's request_id")
        elif msg.notify:  # the final state is the only reply
            self._read(identity, tag, seq, wait=True, caller=caller)
        else:
            self._reply(identity, tag, m.Submitted(job_id(seq)))

    def _accept_alone(
        self, identity: bytes, tag: bytes, msg: m.Submit, *, body: bytes, now_s: float,
        owner: str,
    ) -> int | None:  # fmt: skip
        """`_accept`, where a store error that took back only this request's write
        refuses this request only (None): the turn and every other peer's requests go on."""
        try:
            return self._accept(msg, body, now_s, owner)
        except StorageError as exc:
            if not exc.contained:
                raise  # the transaction is lost: the loop rolls the turn back
            self._storage_failures[exc.operation] += 1
            self._warn.warning(("store refused", identity), "a submit from %s failed alone"
                               " in the store: %s", peer_name(identity), exc)  # fmt: skip
            self.refuse(identity, tag, ErrorCode.STORAGE, f"storage failed: {exc}")
            return None

    def _accept(self, msg: m.Submit, body: bytes, now_s: float, owner: str) -> int:
        seq, new = self.store.add(msg.request_id, body, self.wall_clock(), owner, msg.statistic)
        if not new:
            return seq
        self.jobs.add(seq, body, owner)
        self.rates.count("submitted", now_s)
        self.latency.accepted(seq, msg.statistic, now_s)
        log.debug("%s accepted", job_id(seq))
        return seq

    def _submit_refusal(self, caller: Caller, body: bytes) -> tuple[ErrorCode, str] | None:
        if self.shutting_down:
            return ErrorCode.SHUTTING_DOWN, "shutting down"
        if self.storage_refusal:
            return ErrorCode.STORAGE, self.storage_refusal
        if no_worker := self.no_worker():
            return ErrorCode.NO_WORKER, no_worker
        return self._queue_refusal() or self._quota_refusal(caller.owner, body)

    def _malformed(
        self, identity: bytes, msg: m.Submit, body: bytes
    ) -> tuple[ErrorCode, str] | None:
        """Why a submit can never be accepted, whatever the store holds; None if it may be."""
        if not msg.request_id:
            return ErrorCode.BAD_REQUEST, "request_id must not be empty"
        if len(msg.request_id) > m.MAX_REQUEST_ID_CHARS:
            return ErrorCode.TOO_LARGE, f"request_id longer than {m.MAX_REQUEST_ID_CHARS}"
        if len(body) > m.MAX_JOB_BYTES:
            why = f"statistic and params take {len(body)} bytes, over {m.MAX_JOB_BYTES}"
            return ErrorCode.TOO_LARGE, why
        problem = m.submit_problem(msg)  # bounded: the body is within MAX_JOB_BYTES
        if problem:
            self._warn.warning(("bad submit", identity), "refused a submit from %s: %s",
                               peer_name(identity), problem)  # fmt: skip
            return ErrorCode.BAD_REQUEST, problem
        return None

    def _quota_refusal(self, owner: str, body: bytes) -> tuple[ErrorCode, str] | None:
        if not self._quota_bytes:
            return None
        stored = self.store.stored_bytes(owner)
        if stored + len(body) + self._largest_answer <= self._quota_bytes:
            return None
        return ErrorCode.OVER_LIMIT, (
            f"quota: this key's jobs and answers take {stored / MB:.1f} MB in the store, and"
            f" its quota is {self._quota_bytes / MB:g} MB (LSS_KEY_QUOTA_MB) with room kept"
            f" for an answer; they are freed as results expire"
            f" ({self.settings.result_ttl_s:g} s after they finish)"
        )

    def _within_quota(self, seq: int, outcome: Outcome) -> Outcome:
        """`outcome`, or an error with a short note instead of an answer or a reason that
        would take the job's key past its quota: what a key stores stays bounded, however
        many jobs it had running when it reached the quota."""
        if not self._quota_bytes or (outcome.answer is None and outcome.reason is None):
            return outcome
        if outcome.answer is not None:
            size, what = len(outcome.answer), "answer"
            self._largest_answer = max(self._largest_answer, size)
        else:  # a worker's reason, which a client may provoke, is stored as an answer is
            size, what = stored_bytes(b"", reason=outcome.reason), "reason"
        if self.store.stored_bytes(self.jobs.owner_of(seq) or "") + size <= self._quota_bytes:
            return outcome
        # Short: it is stored in the answer's place, and counts against the quota too.
        reason = f"quota: {what} of {size} bytes not kept (LSS_KEY_QUOTA_MB)"
        return Outcome(JobStatus.ERROR, reason=reason, fingerprint=outcome.fingerprint)

    def _queue_refusal(self) -> tuple[ErrorCode, str] | None:
        if len(self.jobs) >= self.settings.max_queue:
            return ErrorCode.QUEUE_FULL, f"queue full ({self.settings.max_queue} jobs waiting)"
        return None

    def _visible(self, seq: int, caller: Caller) -> bool:
        """Whether `caller` may know of job `seq` (a client key: only its own jobs)."""
        if caller.sees_all:
            return True
        if seq in self.jobs:
            return self.jobs.owner_of(seq) == caller.key
        record = self.store.get(seq)
        return record is None or record.owner == caller.key

    def _count_running(self, caller: Caller) -> int:
        if caller.sees_all:
            return self.store.count(JobStatus.RUNNING)
        if self.running_of is not None:
            return self.running_of(caller.key)
        return self.jobs.running(caller.key)

    def _read(
        self, identity: bytes, tag: bytes, seq: int | None, *, wait: bool, caller: Caller = OPEN
    ) -> None:
        """Answer with job `seq`'s state, or (`wait`) register for its final one. Another
        key's job answers exactly as a job id never issued."""
        if seq is not None and seq in self.jobs:  # answered without the store
            self._read_running(identity, tag, seq, wait, caller)
        elif seq is None or seq > self.store.last_seq():
            self.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
        else:
            record = self.store.get(seq)
            if record is None:
                self.refuse(identity, tag, ErrorCode.EXPIRED, "expired")
            elif not caller.sees_all and record.owner != caller.key:
                self.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
            elif wait and record.status is JobStatus.RUNNING:  # another broker runs it
                self._add_waiter(identity, tag, seq)
            else:
                self._reply(identity, tag, _final_state(seq, record), record.answer)

    def _read_running(
        self, identity: bytes, tag: bytes, seq: int, wait: bool, caller: Caller
    ) -> None:
        if not caller.sees_all and self.jobs.owner_of(seq) != caller.key:
            self.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
        elif wait and (no_worker := self.no_worker()):
            self.refuse(identity, tag, ErrorCode.NO_WORKER, no_worker)
        elif wait:
            self._add_waiter(identity, tag, seq)
        else:
            self._reply(identity, tag, m.JobState(job_id(seq), JobStatus.RUNNING.value))

    def _add_waiter(self, identity: bytes, tag: bytes, seq: int) -> None:
        admission = self._waiters.add(seq, identity, tag)
        if admission.displaced is not None:  # the largest holder's oldest wait made room
            displaced, displaced_tag = admission.displaced
            self._warn.warning(
                ("displaced", displaced), "ended the oldest wait of %s: waits full (%d), it"
                " holds the most", peer_name(displaced), self._waiters.cap,
            )  # fmt: skip
            why = (
                f"too many waits at once (at most {self._waiters.cap} in all): this peer"
                " held the most, and its oldest wait made room for another's; ask again"
            )
            self.refuse(displaced, displaced_tag, ErrorCode.OVER_LIMIT, why)
        if not admission.admitted:
            self.refuse(identity, tag, ErrorCode.OVER_LIMIT, self._wait_refusal(identity))

    def _wait_refusal(self, identity: bytes) -> str:
        if self._waiters.held(identity) >= self._waiters.per_peer:
            return f"too many waits at once (at most {self._waiters.per_peer} per peer)"
        return (f"too many waits at once (at most {self._waiters.cap} in all, and this peer"
                " holds as many as any other); ask again later")  # fmt: skip

    def _list(self, identity: bytes, tag: bytes, msg: m.ListJobs, caller: Caller) -> None:
        if self.outbox.answers.spent(identity):  # its reply could not go: spare the work
            self._reply(identity, tag, _over_budget())
            return
        problem = _list_filter_problem(msg)
        if problem is not None:
            self._warn.warning(("list", identity), "refused a job list from %s: %s",
                               peer_name(identity), problem)  # fmt: skip
            self.refuse(identity, tag, ErrorCode.BAD_REQUEST, problem)
            return
        limit = max(1, min(msg.limit, self.settings.list_page_limit))
        after = min(max(msg.after, 0), self.store.last_seq())
        owner = None if caller.sees_all else caller.key
        page = self.store.page(after, limit, owner, status=msg.status, statistic=msg.statistic)
        jobs = [[job_id(seq), status.value] for seq, status in page]
        next_after = page[-1][0] if len(page) == limit else None
        self._reply(identity, tag, m.JobList(jobs, next_after))

    # --- workers -----------------------------------------------------------------

    def on_worker(self, env: Envelope, now_s: float, caller: Caller = OPEN) -> None:
        """Handle one decoded message from a worker (with CURVE, `caller` must hold a
        worker key: checked here too, so a ZAP handler's mistake admits no worker)."""
        identity, msg = env.identity or b"", env.message
        if not caller.may_serve:
            self._forbid_worker(identity, caller, msg, now_s)
            return
        if isinstance(msg, m.Ready):
            self._register(identity, msg, now_s)
            return
        if isinstance(msg, m.FetchData):
            self._send_chunk(identity, msg)
            return
        if isinstance(msg, m.LoadFailed):
            self._on_load_failed(identity, msg)
            return
        worker = self.pool.get(identity)
        if worker is None:
            self._to_worker(identity, m.Disconnect("unknown worker: send READY"), now_s)
            return
        worker.last_seen_s = now_s
        if isinstance(msg, m.Result):
            self._finish_from(worker, env.tag, msg, env.payload, now_s)
        elif isinstance(msg, m.Started):
            self._on_started(worker, env.tag, now_s)
        elif isinstance(msg, m.Disconnect):
            log.info("worker %s (pid %d) left: %s", peer_name(identity), worker.pid,
                     shown(msg.reason))  # fmt: skip
            self._requeue(self.pool.remove(identity), lost=None, now_s=now_s)
        elif not isinstance(msg, m.Heartbeat):
            self._warn.warning(
                ("ignored", identity), "worker %s sent %s; ignored", peer_name(identity),
                type(msg).__name__,
            )  # fmt: skip

    def _forbid_worker(self, identity: bytes, caller: Caller, msg: m.Message, now_s: float) -> None:
        """Refuse a worker-endpoint message from a key without the worker role (logged
        once in a while); it gets DISCONNECT, never a job or data."""
        self._warn.warning(
            ("forbidden worker", caller.key), "refused %s on the worker endpoint from %s key"
            " %s (%s): not a worker key", type(msg).__name__, caller.role, shown(caller.name),
            shown(caller.key),
        )  # fmt: skip
        self._to_worker(identity, m.Disconnect(f"forbidden: a {caller.role} key may not serve"
                                               " jobs"), now_s)  # fmt: skip

    def _register(self, identity: bytes, msg: m.Ready, now_s: float) -> None:
        if self.shutting_down and not self.jobs:
            self._to_worker(identity, m.Disconnect("shutdown"), now_s)
            return
        if self.fingerprint is None and not m.CONTROL_CHARACTER.search(msg.fingerprint):
            # Never one with control characters: it is stored with every answer, and
            # PostgreSQL refuses a NUL in text (every commit would fail).
            self.fingerprint = msg.fingerprint
            log.info("service data fingerprint set by the first worker: %s", shown(msg.fingerprint))
        if msg.fingerprint != self.fingerprint or msg.credit < 1:
            self._warn.warning(
                ("refused worker", identity),
                "worker %s (pid %d on %s) refused: data %s, expected %s, credit %d",
                peer_name(identity), msg.pid, shown(msg.host), shown(msg.fingerprint[:12]),
                (self.fingerprint or "none yet")[:12], msg.credit,
            )  # fmt: skip
            self._to_worker(identity, m.Disconnect("data fingerprint mismatch"), now_s)
            return
        if identity not in self.pool and len(self.pool) >= self.settings.max_workers:
            self._refuse_worker_over_limit(identity, msg, now_s)
            return
        credit = min(msg.credit, m.MAX_WORKER_CREDIT)  # more would take every queued job
        host = msg.host[: m.MAX_REASON_CHARS]
        info = WorkerInfo(identity, credit, msg.fingerprint, msg.pid, host, now_s, now_s)
        self.load_failure.clear()
        self._requeue(self.pool.register(info), lost=None, now_s=now_s)
        log.info("worker %s registered: pid %d on %s, credit %d%s", peer_name(identity), msg.pid,
                 shown(host or "?"), credit,
                 f" (asked for {msg.credit})" if credit < msg.credit else "")  # fmt: skip
        events.emit("worker_registered", worker=peer_name(identity), worker_pid=msg.pid)

    def _refuse_worker_over_limit(self, identity: bytes, msg: m.Ready, now_s: float) -> None:
        """A READY past `max_workers`: DISCONNECT with the reason (logged once in a while),
        so that the workers, and the STATS reply that lists them, stay bounded."""
        limit = self.settings.max_workers
        self._warn.warning(
            ("too many workers",), "worker %s (pid %d on %s) refused: %d workers registered"
            " already (LSS_MAX_WORKERS)", peer_name(identity), msg.pid, shown(msg.host), limit,
        )  # fmt: skip
        why = f"too many workers: this broker registers at most {limit} (LSS_MAX_WORKERS)"
        self._to_worker(identity, m.Disconnect(why), now_s)

    def _on_load_failed(self, identity: bytes, msg: m.LoadFailed) -> None:
        """A worker cannot load the data (broker.load_failure). With no worker left to
        run them, the waits for this broker's jobs end with the reason, now."""
        if self.load_failure.report(msg):
            log.warning("worker %s (pid %d on %s) cannot load the data: %s", peer_name(identity),
                        msg.pid, shown(msg.host), self.load_failure.reason)  # fmt: skip
        no_worker = self.no_worker()
        if no_worker is None:
            return
        for seq in self._waiters.jobs():
            if seq in self.jobs:  # not one another broker runs
                for waiter, tag in self._waiters.pop(seq):
                    self.refuse(waiter, tag, ErrorCode.NO_WORKER, no_worker)

    def no_worker(self) -> str | None:
        """'no worker can load the data: REASON' while that holds, else None."""
        return self.load_failure.refusal(len(self.pool.all()))

    def _on_started(self, worker: WorkerInfo, tag: bytes, now_s: float) -> None:
        """The worker begins a suspect job it holds: a loss of this worker from now on is
        that job's doing. The broker says STARTED back, upon which the worker computes."""
        seq = job_seq(tag.decode("utf-8", "replace"))
        job = self.jobs.get(seq) if seq is not None else None
        if job is None or job.seq not in worker.jobs or not job.suspect:
            return  # not its suspect (any more): the worker goes ahead after a wait
        seq = job.seq
        if seq not in worker.started:  # once: a worker may not stretch its lease so
            worker.started.add(seq)
            worker.jobs[seq] = now_s + self.settings.job_timeout_s  # it runs from here
        self._to_worker(worker.identity, m.Started(), now_s, tag)

    def _finish_from(
        self, worker: WorkerInfo, tag: bytes, msg: m.Result, payload: bytes | None, now_s: float
    ) -> None:
        seq = job_seq(tag.decode("utf-8", "replace"))
        if seq is None or not self._take_back(worker.identity, seq):
            log.info("ignored a result for %s from worker %s: not its job", shown(tag), worker.name)
            return
        self._finish(seq, self._within_quota(seq, self._outcome(msg, payload)), now_s)

    def _outcome(self, msg: m.Result, payload: bytes | None) -> Outcome:
        if msg.fingerprint != self.fingerprint:
            return Outcome(JobStatus.ERROR, reason="worker answered from a different data set")
        if msg.status == JobStatus.ERROR.value:
            reason = escaped((msg.reason or "failed")[: m.MAX_REASON_CHARS])[: m.MAX_REASON_CHARS]
            return Outcome(JobStatus.ERROR, reason=reason, fingerprint=msg.fingerprint)
        if msg.status != JobStatus.DONE.value or payload is None or not _is_answer(payload):
            return Outcome(JobStatus.ERROR, reason="worker sent a malformed answer")
        return Outcome(JobStatus.DONE, answer=payload, fingerprint=msg.fingerprint)

    def fail_unreadable_result(
        self, identity: bytes, tag: bytes, reason: str, now_s: float
    ) -> bool:
        """A RESULT that cannot be read (too large, malformed), from a registered worker
        holding the job its tag names: the job ends as an error (`reason`) and the worker
        stays. False otherwise."""
        seq = job_seq(tag.decode("utf-8", "replace"))
        if seq is None or not self._take_back(identity, seq):
            return False
        self._warn.warning(("unreadable", identity), "%s from worker %s: %s", job_id(seq),
                           peer_name(identity), reason)  # fmt: skip
        self._finish(seq, Outcome(JobStatus.ERROR, reason=reason), now_s)
        return True

    def _take_back(self, identity: bytes, seq: int) -> bool:
        """Take job `seq` back from the worker holding it; True if this broker still
        runs it (not if it was rolled back, or this broker was deposed meanwhile)."""
        return self.pool.release(identity, seq) and seq in self.jobs

    def _finish(self, seq: int, outcome: Outcome, now_s: float) -> None:
        self.store.finish(seq, outcome, self.wall_clock(), self.jobs.owner_of(seq) or "")
        waiters = self._waiters.pop(seq)
        self.jobs.finish(seq, waiters)
        status = str(outcome.status)
        self.rates.count(status, now_s)
        self.latency.finished(seq, now_s)
        text = job_id(seq)
        log.debug("%s %s%s", text, status, f": {shown(outcome.reason)}" if outcome.reason else "")
        state = m.JobState(text, status, outcome.reason, outcome.fingerprint)
        for identity, tag in waiters:
            self._reply(identity, tag, state, outcome.answer)

    def _requeue(
        self, seqs: list[int], lost: str | None, now_s: float, started: Set[int] = frozenset()
    ) -> None:
        """Put a lost worker's jobs back at the front; a job lost too often fails, a
        suspect only if the worker had `started` it (broker.jobs.SUSPECT_AFTER_LOSSES)."""
        for seq in reversed(seqs):
            if seq not in self.jobs:
                continue  # its number was rolled back (see `roll_back`)
            attempts = self.store.add_attempt(seq) if lost else 0
            if attempts >= self.settings.max_attempts and self._blamed(seq, attempts, started):
                reason = f"job failed: the worker running it was lost {attempts} times ({lost})"
                self._finish(seq, Outcome(JobStatus.ERROR, reason=reason), now_s)
            else:
                self.jobs.lost(seq, attempts)

    def _blamed(self, seq: int, attempts: int, started: Set[int]) -> bool:
        """Whether job `seq` may have caused its worker's loss: any job but a suspect;
        a suspect if the worker had started it, or after too many unconfirmed losses."""
        job = self.jobs.get(seq)
        if job is None or not job.suspect or seq in started:
            return True
        return attempts >= self.settings.max_attempts * UNCONFIRMED_LOSS_FACTOR

    def lose_worker(self, identity: bytes, why: str, now_s: float) -> None:
        """Drop a dead or hung worker and re-queue what it held."""
        log.warning("worker %s lost: %s", peer_name(identity), why)
        self._to_worker(identity, m.Disconnect(why), now_s)
        worker = self.pool.get(identity)
        started = set(worker.started) if worker else set()
        held = self.pool.remove(identity)
        events.emit(
            "worker_lost", worker=peer_name(identity), worker_pid=worker.pid if worker else None,
            reason=why, jobs=[job_id(seq) for seq in held],
        )  # fmt: skip
        self._requeue(held, lost=why, now_s=now_s, started=started)

    def _to_worker(
        self, identity: bytes, message: m.Message, now_s: float, tag: bytes = b""
    ) -> None:
        self.outbox.workers.append(m.route(identity, message, tag))
        worker = self.pool.get(identity)
        if worker is not None:
            worker.last_sent_s = now_s

    def _send_chunk(self, identity: bytes, msg: m.FetchData) -> None:
        """One chunk of the data file. A fetcher asks for one at a time; more than one
        chunk for a peer in a turn (or DATA_BYTES_PER_TURN for all) is dropped: the
        fetcher asks again, and a peer that does not read cannot pile chunks up."""
        length = min(msg.length, self.settings.max_message_bytes // 2, config.DATA_CHUNK_BYTES)
        if length > 0 and not self.outbox.data.take(identity, length):
            self._warn.warning(("data", identity), "dropped a data request from %s: one chunk"
                               " per peer per turn", peer_name(identity))  # fmt: skip
            return
        chunk = self._data_chunk(msg.offset, length) if self._data_chunk else None
        if chunk is None:
            reply: m.Message = m.ErrorReply(
                ErrorCode.BAD_REQUEST.value, "this broker serves no data"
            )
        else:
            reply = chunk
        self.outbox.workers.append(m.route(identity, reply))

    # --- time --------------------------------------------------------------------

    def dispatch(self, now_s: float) -> None:
        """Give queued jobs to free workers, least recently used first."""
        while (job := self.jobs.next(now_s)) is not None and self.pool.has_free():
            seq = job.seq
            worker = self.pool.assign(seq, now_s, self.settings.job_timeout_s, job.suspect)
            if worker is None:
                return  # a suspect waits at the front for an idle worker
            self.jobs.take()
            self.latency.dispatched(seq, now_s)
            worker.last_sent_s = now_s
            text = job_id(seq)
            command = m.Command.SUSPECT_JOB if job.suspect else m.Command.JOB
            frames = m.frames_of(command, text.encode(), job.body)
            self.outbox.workers.append([worker.identity, *frames])
            log.debug("%s dispatched to %s", text, worker)  # formatted only at DEBUG

    def tick(self, now_s: float) -> None:
        """Heartbeats, lost and hung workers (results expire in `expire_results`)."""
        interval = self.settings.heartbeat_interval_s
        cutoff = now_s - interval * self.settings.heartbeat_liveness
        for identity in self.pool.silent_since(cutoff):
            self.lose_worker(identity, "heartbeat lost", now_s)
        for identity in self.pool.overdue(now_s):
            self.lose_worker(
                identity, f"job lease of {self.settings.job_timeout_s:g} s ran out", now_s
            )
        for worker in self.pool.all():
            if now_s - worker.last_sent_s >= interval:
                self._to_worker(worker.identity, m.Heartbeat(), now_s)

    def expire_results(self) -> int:
        """Delete results older than the retention period (by the wall clock: the store's
        dates are Unix seconds); their ids answer 'expired'."""
        return self.store.expire(self.wall_clock() - self.settings.result_ttl_s)

    # --- storage -----------------------------------------------------------------

    def commit(self) -> None:
        """Commit the store's transaction; raises `StorageError` (then call `roll_back`)."""
        self.store.commit()
        self.jobs.commit()

    def roll_back(self, failure: StorageError, now_s: float) -> str:
        """Roll the store's transaction back after `failure` (at `now_s`), and undo here
        what it did.

        Jobs added are forgotten, and each request that named one gets a `storage`
        error instead; jobs finished are unfinished again and run again after a backoff
        (broker.jobs.COMMIT_RETRY_MIN_S), their waiters waiting again. Nothing queued on the
        strength of the lost writes leaves. Returns the reason given in those errors.
        """
        reason = f"storage failed: {failure}"
        self._storage_failures[failure.operation] += 1
        try:
            self.store.rollback()
        except StorageError as exc:
            log.error("rollback failed too: %s", exc)
        added, restored = self.jobs.roll_back(now_s)
        answered: set[Waiter] = set()
        for seq, waiters in restored.items():
            self._waiters.restore(seq, waiters)
            answered |= waiters
        self.outbox.clients = undo.client_replies(
            self.outbox.clients, added | restored.keys(), answered, reason, self.retry_refused_ms
        )
        self.outbox.workers, taken = undo.worker_jobs(self.outbox.workers, added)
        for identity, seq in taken:
            self.pool.release(identity, seq)
        for seq in added:
            self.latency.forget(seq)
            for identity, tag in self._waiters.pop(seq):
                self.refuse(identity, tag, ErrorCode.STORAGE, reason)
        self.jobs.requeue_unheld({seq for worker in self.pool.all() for seq in worker.jobs})
        return reason

    # --- shutdown ----------------------------------------------------------------

    def begin_shutdown(self, why: str) -> None:
        if not self.shutting_down:
            log.info("graceful shutdown (%s): %d job(s) to finish", why, len(self.jobs))
        self.shutting_down = True

    def drained(self) -> bool:
        """Shutting down and nothing left to run, or nothing left that can run: with no
        worker able to load the data, jobs stay in the store for the next start."""
        return self.shutting_down and (not self.jobs or self.no_worker() is not None)

    def unfinished(self) -> int:
        """Jobs this broker runs that have not finished."""
        return len(self.jobs)

    def release_workers(self, now_s: float) -> None:
        """Tell every worker to exit (after a drained shutdown)."""
        for worker in self.pool.all():
            self._to_worker(worker.identity, m.Disconnect("shutdown"), now_s)
            self.pool.remove(worker.identity)

    def stats(self, now_s: float) -> dict[str, object]:
        return {
            "broker_id": self.broker_id,
            "workers": [w.describe(now_s) for w in self.pool.all()[: m.MAX_STATS_WORKERS]],
            "workers_registered": len(self.pool),
            "queue_depth": self.jobs.queued(),
            "in_flight": self.pool.in_flight(),
            "waiters": self._waiters.total,
            "jobs": {s.value: self.store.count(s) for s in JobStatus},
            "last_job": job_id(self.store.last_seq()) if self.store.last_seq() else None,
            "rates_per_s": self.rates.rates(now_s),
            "shutting_down": self.shutting_down,
            "fingerprint": self.fingerprint,
            "no_worker": self.no_worker(),
            "storage_failures": dict(self._storage_failures),
            "waiting_after_failed_commit": self.jobs.retrying(),
            "latency": self.latency.describe(),
            **({"cluster": self.cluster_stats()} if self.cluster_stats else {}),
        }


# Replies whose size a peer chooses (up to a page or MAX_RECENT jobs, ~100 KB): they
# count against the peer's answer budget of a turn, as answers do.
def _list_filter_problem(msg: m.ListJobs) -> str | None:
    """Why a `ListJobs` filter is refused, or None when it is fine."""
    if msg.status is not None and msg.status not in set(JobStatus):
        known = ", ".join(JobStatus)
        return f"unknown status {shown(msg.status)!r} to list; known: {known}"
    if msg.statistic is not None and len(msg.statistic) > m.MAX_STATISTIC_CHARS:
        return f"a statistic to list is at most {m.MAX_STATISTIC_CHARS} characters"
    if msg.statistic is not None and m.CONTROL_CHARACTER.search(msg.statistic):
        # No job has one (refused at submit); PostgreSQL would refuse the query, and the
        # turn of every peer with it.
        return f"a statistic to list holds a control character: {shown(msg.statistic)}"
    return None


SIZED_REPLIES = (m.RecentJobs, m.JobList, m.StatsReply)


def _over_budget() -> m.ErrorReply:
    why = f"more than {PEER_ANSWER_BYTES_PER_TURN} bytes of answers at once; ask again"
    return m.ErrorReply(ErrorCode.OVER_LIMIT.value, why)


def _final_state(seq: int, record: JobRecord) -> m.JobState:
    """A stored job's state."""
    return m.JobState(job_id(seq), record.status.value, record.reason, record.fingerprint)


def _is_answer(payload: bytes) -> bool:
    """Whether a worker's payload is a whole msgpack map (else clients could not read it);
    checked without decoding it, so that a hostile one costs no more than a good one."""
    return m.is_answer(payload)
