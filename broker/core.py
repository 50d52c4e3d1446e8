"""The broker's logic, without sockets: jobs, workers, waiters, shutdown.

`BrokerCore` takes decoded messages and the current time, updates the store and its
in-memory state, and queues the frames to send in an `Outbox`. The socket loop
(broker.broker) commits the store before it sends the clients' part of the outbox, so
that a job id or an answer never reaches a client before it is durable.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.pool import WorkerInfo, WorkerPool, peer_name
from broker.rates import RateMeter
from broker.store import Outcome, Store
from protocol import events
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.messages import Envelope, ErrorCode, JobStatus, job_id, job_seq

log = logging.getLogger("lss.broker")

# A job whose worker was lost this often runs alone on an idle worker from then on, so
# that a job killing workers cannot take its neighbours to the poison limit with it.
# After a single loss it goes back to any free worker: a lost host must fail over fast.
ALONE_AFTER_LOSSES = 2


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


@dataclass
class Outbox:
    """Frames waiting for the store's commit: to clients and to workers."""

    clients: list[list[bytes]] = field(default_factory=list)
    workers: list[list[bytes]] = field(default_factory=list)

    def take(self) -> tuple[list[list[bytes]], list[list[bytes]]]:
        clients, workers = self.clients, self.workers
        self.clients, self.workers = [], []
        return clients, workers


class BrokerCore:
    """Accepts jobs, hands them to workers, records their outcome, answers readers."""

    def __init__(
        self,
        store: Store,
        settings: CoreSettings,
        fingerprint: str | None,
        data_chunk: Callable[[int, int], m.DataChunk | None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.fingerprint = fingerprint
        self.broker_id = uuid.uuid4().hex
        self.outbox = Outbox()
        self.pool = WorkerPool()
        self.shutting_down = False
        self.rates = RateMeter()
        self._data_chunk = data_chunk
        self._queue: deque[int] = deque()
        self._requests: dict[int, bytes] = {}  # unfinished jobs: seq -> Job body
        self._waiters: dict[int, set[tuple[bytes, bytes]]] = {}
        self._retried: set[int] = set()  # unfinished jobs that must run alone
        for record in store.unfinished():
            self._queue.append(record.seq)
            self._requests[record.seq] = record.request
            if record.attempts >= ALONE_AFTER_LOSSES:
                self._retried.add(record.seq)
        if self._queue:
            log.info("recovered %d unfinished job(s) from the store", len(self._queue))

    # --- clients -----------------------------------------------------------------

    def on_client(self, env: Envelope, now_s: float) -> None:
        """Serve one decoded client request."""
        identity, tag, msg = env.identity or b"", env.tag, env.message
        if isinstance(msg, m.Submit):
            self._submit(identity, tag, msg, now_s)
        elif isinstance(msg, m.Get | m.Wait):
            self._read(identity, tag, job_seq(msg.job_id), wait=isinstance(msg, m.Wait))
        elif isinstance(msg, m.ListJobs):
            self._list(identity, tag, msg)
        elif isinstance(msg, m.NumJobs):
            self._reply(identity, tag, m.JobCount(self.store.count(JobStatus.RUNNING)))
        elif isinstance(msg, m.Shutdown):
            self.begin_shutdown("a client asked")
            self._reply(identity, tag, m.ShuttingDown(pending=len(self._requests)))
        elif isinstance(msg, m.Ping):
            self._reply(identity, tag, m.Pong(self.broker_id, shutting_down=self.shutting_down))
        elif isinstance(msg, m.Stats):
            self._reply(identity, tag, m.StatsReply(self.stats(now_s)))
        else:
            name = type(msg).__name__
            self.refuse(identity, tag, ErrorCode.UNKNOWN_COMMAND, f"{name} is not a client request")

    def refuse(self, identity: bytes, tag: bytes, code: ErrorCode | str, reason: str) -> None:
        """Answer a request with an error."""
        self._reply(identity, tag, m.ErrorReply(str(code), reason))

    def _reply(
        self, identity: bytes, tag: bytes, message: m.Message, payload: bytes | None = None
    ) -> None:
        self.outbox.clients.append(m.route(identity, message, tag, payload))

    def _submit(self, identity: bytes, tag: bytes, msg: m.Submit, now_s: float) -> None:
        refusal = self._submit_refusal(msg)
        seq = self.store.find_request(msg.request_id) if refusal else None
        if refusal and seq is None:
            self.refuse(identity, tag, *refusal)
            return
        if seq is None:
            seq = self._accept(msg, now_s)
        if msg.notify:  # the final state is the only reply
            self._read(identity, tag, seq, wait=True)
        else:
            self._reply(identity, tag, m.Submitted(job_id(seq)))

    def _accept(self, msg: m.Submit, now_s: float) -> int:
        body = m.pack({"statistic": msg.statistic, "params": msg.params})
        seq, new = self.store.add(msg.request_id, body, now_s)
        if not new:
            return seq
        self._requests[seq] = body
        self._queue.append(seq)
        self.rates.count("submitted", now_s)
        log.debug("%s accepted: %s", job_id(seq), msg.statistic)
        return seq

    def _submit_refusal(self, msg: m.Submit) -> tuple[ErrorCode, str] | None:
        if self.shutting_down:
            return ErrorCode.SHUTTING_DOWN, "shutting down"
        if not msg.request_id:
            return ErrorCode.BAD_REQUEST, "request_id must not be empty"
        if len(self._requests) >= self.settings.max_queue:
            return ErrorCode.QUEUE_FULL, f"queue full ({self.settings.max_queue} jobs waiting)"
        return None

    def _read(self, identity: bytes, tag: bytes, seq: int | None, *, wait: bool) -> None:
        """Answer with job `seq`'s state, or (`wait`) register for its final one."""
        if seq is None or seq > self.store.last_seq():
            self.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
        elif seq in self._requests:
            if wait:
                self._waiters.setdefault(seq, set()).add((identity, tag))
            else:
                self._reply(identity, tag, m.JobState(job_id(seq), JobStatus.RUNNING.value))
        else:
            record = self.store.get(seq)
            if record is None:
                self.refuse(identity, tag, ErrorCode.EXPIRED, "expired")
            else:
                state = m.JobState(
                    job_id(seq), record.status.value, record.reason, record.fingerprint
                )
                self._reply(identity, tag, state, record.answer)

    def _list(self, identity: bytes, tag: bytes, msg: m.ListJobs) -> None:
        limit = max(1, min(msg.limit, self.settings.list_page_limit))
        page = self.store.page(min(max(msg.after, 0), self.store.last_seq()), limit)
        jobs = [[job_id(seq), status.value] for seq, status in page]
        next_after = page[-1][0] if len(page) == limit else None
        self._reply(identity, tag, m.JobList(jobs, next_after))

    # --- workers -----------------------------------------------------------------

    def on_worker(self, env: Envelope, now_s: float) -> None:
        """Handle one decoded message from a worker."""
        identity, msg = env.identity or b"", env.message
        if isinstance(msg, m.Ready):
            self._register(identity, msg, now_s)
            return
        if isinstance(msg, m.FetchData):
            self._send_chunk(identity, msg)
            return
        worker = self.pool.get(identity)
        if worker is None:
            self._to_worker(identity, m.Disconnect("unknown worker: send READY"), now_s)
            return
        worker.last_seen_s = now_s
        if isinstance(msg, m.Result):
            self._finish_from(worker, env.tag, msg, env.payload, now_s)
        elif isinstance(msg, m.Disconnect):
            log.info("worker %s (pid %d) left: %s", peer_name(identity), worker.pid, msg.reason)
            self._requeue(self.pool.remove(identity), lost=None, now_s=now_s)
        elif not isinstance(msg, m.Heartbeat):
            log.warning("worker %s sent %s; ignored", peer_name(identity), type(msg).__name__)

    def _register(self, identity: bytes, msg: m.Ready, now_s: float) -> None:
        if self.shutting_down and not self._requests:
            self._to_worker(identity, m.Disconnect("shutdown"), now_s)
            return
        if self.fingerprint is None:
            self.fingerprint = msg.fingerprint
            log.info("service data fingerprint set by the first worker: %s", msg.fingerprint)
        if msg.fingerprint != self.fingerprint or msg.credit < 1:
            log.warning(
                "worker %s (pid %d on %s) refused: data %s, expected %s, credit %d",
                peer_name(identity), msg.pid, msg.host, msg.fingerprint[:12], self.fingerprint[:12],
                msg.credit,
            )  # fmt: skip
            self._to_worker(identity, m.Disconnect("data fingerprint mismatch"), now_s)
            return
        info = WorkerInfo(identity, msg.credit, msg.fingerprint, msg.pid, msg.host, now_s, now_s)
        self._requeue(self.pool.register(info), lost=None, now_s=now_s)
        log.info("worker %s registered: pid %d on %s, credit %d", peer_name(identity), msg.pid,
                 msg.host or "?", msg.credit)  # fmt: skip
        events.emit("worker_registered", worker=peer_name(identity), worker_pid=msg.pid)

    def _finish_from(
        self, worker: WorkerInfo, tag: bytes, msg: m.Result, payload: bytes | None, now_s: float
    ) -> None:
        seq = job_seq(tag.decode("utf-8", "replace"))
        if seq is None or not self.pool.release(worker.identity, seq):
            log.info(
                "ignored a result for %r from worker %s: not its job",
                tag,
                worker.name,
            )
            return
        self._finish(seq, self._outcome(msg, payload), now_s)

    def _outcome(self, msg: m.Result, payload: bytes | None) -> Outcome:
        if msg.fingerprint != self.fingerprint:
            return Outcome(JobStatus.ERROR, reason="worker answered from a different data set")
        if msg.status == JobStatus.ERROR.value:
            return Outcome(
                JobStatus.ERROR, reason=msg.reason or "failed", fingerprint=msg.fingerprint
            )
        if msg.status != JobStatus.DONE.value or payload is None or not _is_answer(payload):
            return Outcome(JobStatus.ERROR, reason="worker sent a malformed answer")
        return Outcome(JobStatus.DONE, answer=payload, fingerprint=msg.fingerprint)

    def _finish(self, seq: int, outcome: Outcome, now_s: float) -> None:
        self.store.finish(seq, outcome, now_s)
        del self._requests[seq]
        self._retried.discard(seq)
        status = str(outcome.status)
        self.rates.count(status, now_s)
        text = job_id(seq)
        log.debug("%s %s%s", text, status, f": {outcome.reason}" if outcome.reason else "")
        state = m.JobState(text, status, outcome.reason, outcome.fingerprint)
        for identity, tag in self._waiters.pop(seq, ()):
            self._reply(identity, tag, state, outcome.answer)

    def _requeue(self, seqs: list[int], lost: str | None, now_s: float) -> None:
        """Put a lost worker's jobs back at the front; a job lost too often fails."""
        for seq in reversed(seqs):
            attempts = self.store.add_attempt(seq) if lost else 0
            if attempts >= self.settings.max_attempts:
                reason = f"job failed: the worker running it was lost {attempts} times ({lost})"
                self._finish(seq, Outcome(JobStatus.ERROR, reason=reason), now_s)
            else:
                self._queue.appendleft(seq)
                if attempts >= ALONE_AFTER_LOSSES:
                    self._retried.add(seq)

    def lose_worker(self, identity: bytes, why: str, now_s: float) -> None:
        """Drop a dead or hung worker and re-queue what it held."""
        log.warning("worker %s lost: %s", peer_name(identity), why)
        self._to_worker(identity, m.Disconnect(why), now_s)
        worker = self.pool.get(identity)
        held = self.pool.remove(identity)
        events.emit(
            "worker_lost", worker=peer_name(identity), worker_pid=worker.pid if worker else None,
            reason=why, jobs=[job_id(seq) for seq in held],
        )  # fmt: skip
        self._requeue(held, lost=why, now_s=now_s)

    def _to_worker(
        self, identity: bytes, message: m.Message, now_s: float, tag: bytes = b""
    ) -> None:
        self.outbox.workers.append(m.route(identity, message, tag))
        worker = self.pool.get(identity)
        if worker is not None:
            worker.last_sent_s = now_s

    def _send_chunk(self, identity: bytes, msg: m.FetchData) -> None:
        length = min(msg.length, self.settings.max_message_bytes // 2)  # fits the peer's cap
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
        while self._queue and self.pool.has_free():
            seq = self._queue[0]
            if seq not in self._requests:
                self._queue.popleft()  # finished while queued (a poison job failed)
                continue
            alone = seq in self._retried
            worker = self.pool.assign(seq, now_s, self.settings.job_timeout_s, alone)
            if worker is None:
                return  # a retried job waits at the front for an idle worker
            self._queue.popleft()
            worker.last_sent_s = now_s
            text = job_id(seq)
            frames = m.frames_of(m.Command.JOB, text.encode(), self._requests[seq])
            self.outbox.workers.append([worker.identity, *frames])
            log.debug("%s dispatched to %s", text, worker)  # formatted only at DEBUG

    def tick(self, now_s: float) -> None:
        """Heartbeats, lost and hung workers, expired results."""
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

    def expire_results(self, now_s: float) -> int:
        """Delete results older than the retention period; their ids answer 'expired'."""
        return self.store.expire(now_s - self.settings.result_ttl_s)

    # --- shutdown ----------------------------------------------------------------

    def begin_shutdown(self, why: str) -> None:
        if not self.shutting_down:
            log.info("graceful shutdown (%s): %d job(s) to finish", why, len(self._requests))
        self.shutting_down = True

    def drained(self) -> bool:
        """Shutting down and nothing left to run."""
        return self.shutting_down and not self._requests

    def release_workers(self, now_s: float) -> None:
        """Tell every worker to exit (after a drained shutdown)."""
        for worker in self.pool.all():
            self._to_worker(worker.identity, m.Disconnect("shutdown"), now_s)
            self.pool.remove(worker.identity)

    def stats(self, now_s: float) -> dict[str, object]:
        return {
            "broker_id": self.broker_id,
            "workers": [w.describe() for w in self.pool.all()],
            "queue_depth": len(self._queue),
            "in_flight": self.pool.in_flight(),
            "jobs": {s.value: self.store.count(s) for s in JobStatus},
            "last_job": job_id(self.store.last_seq()) if self.store.last_seq() else None,
            "rates_per_s": self.rates.rates(now_s),
            "shutting_down": self.shutting_down,
            "fingerprint": self.fingerprint,
        }


def _is_answer(payload: bytes) -> bool:
    """Whether a worker's payload is a whole msgpack map (else clients could not read it)."""
    try:
        return isinstance(m.unpack(payload), dict)
    except ProtocolError:
        return False
