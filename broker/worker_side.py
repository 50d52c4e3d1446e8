"""The worker side of the broker: workers, and the jobs they run.

`WorkerSide.on_worker` handles one decoded worker message: registration (READY, the
data fingerprint, the cap on workers), results, STARTED for a suspect, data chunks and
load failures. `dispatch` hands queued jobs to free workers (broker.pool), `tick` sends
heartbeats and drops silent or overdue workers, whose jobs go back to the queue or,
lost too often, fail (the poison rule below).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Set

from broker.access import OPEN, Caller
from broker.jobs import UnfinishedJob
from broker.pool import WorkerInfo, peer_name
from broker.state import CoreState
from broker.store import Outcome
from protocol import config, events
from protocol import messages as m
from protocol.logs import escaped, shown
from protocol.messages import Envelope, ErrorCode, JobStatus, job_id, job_seq

log = logging.getLogger("lss.broker")

# Losses after which a suspect fails even if no worker ever said STARTED for it (one
# that crashed before its STARTED left), as a multiple of `max_attempts`; a job that is
# not a suspect fails after `max_attempts` (broker.jobs.SUSPECT_AFTER_LOSSES).
UNCONFIRMED_LOSS_FACTOR = 3


class WorkerSide:
    """Registration, dispatch, results, leases, the poison rule, heartbeats, data chunks."""

    def __init__(
        self, state: CoreState, data_chunk: Callable[[int, int], m.DataChunk | None] | None
    ) -> None:
        self.state = state
        self._data_chunk = data_chunk

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
        worker = self.state.pool.get(identity)
        if worker is None:
            self.state.to_worker(identity, m.Disconnect("unknown worker: send READY"), now_s)
            return
        worker.last_seen_s = now_s
        if isinstance(msg, m.Result):
            self._finish_from(worker, env.tag, msg, env.payload, now_s)
        elif isinstance(msg, m.Started):
            self._on_started(worker, env.tag, now_s)
        elif isinstance(msg, m.Disconnect):
            log.info("worker %s (pid %d) left: %s", peer_name(identity), worker.pid,
                     shown(msg.reason))  # fmt: skip
            self._requeue(self.state.pool.remove(identity), lost=None, now_s=now_s)
        elif not isinstance(msg, m.Heartbeat):
            self.state.warn.warning(
                ("ignored", identity), "worker %s sent %s; ignored", peer_name(identity),
                type(msg).__name__,
            )  # fmt: skip

    def _forbid_worker(self, identity: bytes, caller: Caller, msg: m.Message, now_s: float) -> None:
        """Refuse a worker-endpoint message from a key without the worker role (logged
        once in a while); it gets DISCONNECT, never a job or data."""
        self.state.warn.warning(
            ("forbidden worker", caller.key), "refused %s on the worker endpoint from %s key"
            " %s (%s): not a worker key", type(msg).__name__, caller.role, shown(caller.name),
            shown(caller.key),
        )  # fmt: skip
        self.state.to_worker(identity, m.Disconnect(f"forbidden: a {caller.role} key may not serve"
                                               " jobs"), now_s)  # fmt: skip

    def _register(self, identity: bytes, msg: m.Ready, now_s: float) -> None:
        if self.state.shutting_down and not self.state.jobs:
            self.state.to_worker(identity, m.Disconnect("shutdown"), now_s)
            return
        if self.state.fingerprint is None and not m.CONTROL_CHARACTER.search(msg.fingerprint):
            # Never one with control characters: it is stored with every answer, and
            # PostgreSQL refuses a NUL in text (every commit would fail).
            self.state.fingerprint = msg.fingerprint
            log.info("service data fingerprint set by the first worker: %s", shown(msg.fingerprint))
        if msg.fingerprint != self.state.fingerprint or msg.credit < 1:
            self.state.warn.warning(
                ("refused worker", identity),
                "worker %s (pid %d on %s) refused: data %s, expected %s, credit %d",
                peer_name(identity), msg.pid, shown(msg.host), shown(msg.fingerprint[:12]),
                (self.state.fingerprint or "none yet")[:12], msg.credit,
            )  # fmt: skip
            self.state.to_worker(identity, m.Disconnect("data fingerprint mismatch"), now_s)
            return
        if (
            identity not in self.state.pool
            and len(self.state.pool) >= self.state.settings.max_workers
        ):
            self._refuse_worker_over_limit(identity, msg, now_s)
            return
        credit = min(msg.credit, m.MAX_WORKER_CREDIT)  # more would take every queued job
        host = msg.host[: m.MAX_REASON_CHARS]
        info = WorkerInfo(identity, credit, msg.fingerprint, msg.pid, host, now_s, now_s)
        self.state.load_failure.clear()
        self._requeue(self.state.pool.register(info), lost=None, now_s=now_s)
        log.info("worker %s registered: pid %d on %s, credit %d%s", peer_name(identity), msg.pid,
                 shown(host or "?"), credit,
                 f" (asked for {msg.credit})" if credit < msg.credit else "")  # fmt: skip
        events.emit("worker_registered", worker=peer_name(identity), worker_pid=msg.pid)

    def _refuse_worker_over_limit(self, identity: bytes, msg: m.Ready, now_s: float) -> None:
        """A READY past `max_workers`: DISCONNECT with the reason (logged once in a while),
        so that the workers, and the STATS reply that lists them, stay bounded."""
        limit = self.state.settings.max_workers
        self.state.warn.warning(
            ("too many workers",), "worker %s (pid %d on %s) refused: %d workers registered"
            " already (LSS_MAX_WORKERS)", peer_name(identity), msg.pid, shown(msg.host), limit,
        )  # fmt: skip
        why = f"too many workers: this broker registers at most {limit} (LSS_MAX_WORKERS)"
        self.state.to_worker(identity, m.Disconnect(why), now_s)

    def _on_load_failed(self, identity: bytes, msg: m.LoadFailed) -> None:
        """A worker cannot load the data (broker.load_failure). With no worker left to
        run them, the waits for this broker's jobs end with the reason, now."""
        if self.state.load_failure.report(msg):
            log.warning("worker %s (pid %d on %s) cannot load the data: %s", peer_name(identity),
                        msg.pid, shown(msg.host), self.state.load_failure.reason)  # fmt: skip
        no_worker = self.state.no_worker()
        if no_worker is None:
            return
        for seq in self.state.waiters.jobs():
            if seq in self.state.jobs:  # not one another broker runs
                for waiter, tag in self.state.waiters.pop(seq):
                    self.state.refuse(waiter, tag, ErrorCode.NO_WORKER, no_worker)

    def _on_started(self, worker: WorkerInfo, tag: bytes, now_s: float) -> None:
        """The worker begins a suspect job it holds: a loss of this worker from now on is
        that job's doing. The broker says STARTED back, upon which the worker computes."""
        seq = job_seq(tag.decode("utf-8", "replace"))
        job = self.state.jobs.get(seq) if seq is not None else None
        if job is None or job.seq not in worker.jobs or not job.suspect:
            return  # not its suspect (any more): the worker goes ahead after a wait
        seq = job.seq
        if seq not in worker.started:  # once: a worker may not stretch its lease so
            worker.started.add(seq)
            worker.jobs[seq] = now_s + self.state.settings.job_timeout_s  # it runs from here
        self.state.to_worker(worker.identity, m.Started(), now_s, tag)

    def _finish_from(
        self, worker: WorkerInfo, tag: bytes, msg: m.Result, payload: bytes | None, now_s: float
    ) -> None:
        seq = job_seq(tag.decode("utf-8", "replace"))
        if seq is None or not self._take_back(worker.identity, seq):
            log.info("ignored a result for %s from worker %s: not its job", shown(tag), worker.name)
            return
        owner = self.state.jobs.owner_of(seq) or ""
        self.state.finish(seq, self.state.quota.within(owner, self._outcome(msg, payload)), now_s)

    def _outcome(self, msg: m.Result, payload: bytes | None) -> Outcome:
        if msg.fingerprint != self.state.fingerprint:
            return Outcome(JobStatus.ERROR, reason="worker answered from a different data set")
        if msg.status in (JobStatus.ERROR, JobStatus.CANCELLED):  # StrEnum: no lookups
            # CANCELLED: the worker skipped it, its deadline passed (docs/protocol.md).
            reason = escaped((msg.reason or "failed")[: m.MAX_REASON_CHARS])[: m.MAX_REASON_CHARS]
            return Outcome(JobStatus(msg.status), reason=reason, fingerprint=msg.fingerprint)
        if msg.status != JobStatus.DONE.value or payload is None or not m.is_answer(payload):
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
        self.state.warn.warning(("unreadable", identity), "%s from worker %s: %s", job_id(seq),
                           peer_name(identity), reason)  # fmt: skip
        self.state.finish(seq, Outcome(JobStatus.ERROR, reason=reason), now_s)
        return True

    def _take_back(self, identity: bytes, seq: int) -> bool:
        """Take job `seq` back from the worker holding it; True if this broker still
        runs it (not if it was rolled back, or this broker was deposed meanwhile)."""
        return self.state.pool.release(identity, seq) and seq in self.state.jobs

    def _requeue(
        self, seqs: list[int], lost: str | None, now_s: float, started: Set[int] = frozenset()
    ) -> None:
        """Put a lost worker's jobs back at the front; a job lost too often fails, a
        suspect only if the worker had `started` it (broker.jobs.SUSPECT_AFTER_LOSSES)."""
        for seq in reversed(seqs):
            if seq not in self.state.jobs:
                continue  # its number was rolled back (see `roll_back`)
            attempts = self.state.store.add_attempt(seq) if lost else 0
            if attempts >= self.state.settings.max_attempts and self._blamed(
                seq, attempts, started
            ):
                reason = f"job failed: the worker running it was lost {attempts} times ({lost})"
                self.state.finish(seq, Outcome(JobStatus.ERROR, reason=reason), now_s)
            else:
                self.state.jobs.lost(seq, attempts)

    def _blamed(self, seq: int, attempts: int, started: Set[int]) -> bool:
        """Whether job `seq` may have caused its worker's loss: any job but a suspect;
        a suspect if the worker had started it, or after too many unconfirmed losses."""
        job = self.state.jobs.get(seq)
        if job is None or not job.suspect or seq in started:
            return True
        return attempts >= self.state.settings.max_attempts * UNCONFIRMED_LOSS_FACTOR

    def lose_worker(self, identity: bytes, why: str, now_s: float) -> None:
        """Drop a dead or hung worker and re-queue what it held."""
        log.warning("worker %s lost: %s", peer_name(identity), why)
        self.state.to_worker(identity, m.Disconnect(why), now_s)
        worker = self.state.pool.get(identity)
        started = set(worker.started) if worker else set()
        held = self.state.pool.remove(identity)
        events.emit(
            "worker_lost", worker=peer_name(identity), worker_pid=worker.pid if worker else None,
            reason=why, jobs=[job_id(seq) for seq in held],
        )  # fmt: skip
        self._requeue(held, lost=why, now_s=now_s, started=started)

    def _send_chunk(self, identity: bytes, msg: m.FetchData) -> None:
        """One chunk of the data file. A fetcher asks for one at a time; more than one
        chunk for a peer in a turn (or DATA_BYTES_PER_TURN for all) is dropped: the
        fetcher asks again, and a peer that does not read cannot pile chunks up."""
        length = min(
            msg.length, self.state.settings.max_message_bytes // 2, config.DATA_CHUNK_BYTES
        )
        if length > 0 and not self.state.outbox.data.take(identity, length):
            self.state.warn.warning(("data", identity), "dropped a data request from %s: one chunk"
                               " per peer per turn", peer_name(identity))  # fmt: skip
            return
        chunk = self._data_chunk(msg.offset, length) if self._data_chunk else None
        if chunk is None:
            reply: m.Message = m.ErrorReply(
                ErrorCode.BAD_REQUEST.value, "this broker serves no data"
            )
        else:
            reply = chunk
        self.state.outbox.workers.append(m.route(identity, reply))

    def dispatch(self, now_s: float) -> None:
        """End the queued jobs whose deadline passed, give newcomers' jobs their slots
        (`dispatch_newcomers`), then give queued jobs to free workers (least recently
        used first), producers in turn (broker.producers)."""
        for seq in self.state.jobs.expired(now_s):
            self.state.cancel(seq, m.REASON_DEADLINE, now_s)
        self.dispatch_newcomers(now_s)
        while (job := self.state.jobs.next(now_s)) is not None and self.state.pool.has_free():
            if self._past_deadline(job, now_s):
                continue
            worker = self.state.pool.assign(
                job.seq, now_s, self.state.settings.job_timeout_s, job.suspect
            )
            if worker is None:
                return  # a suspect waits at the front for an idle worker
            self.state.jobs.take(job)
            self._send(job, worker, now_s)

    def dispatch_newcomers(self, now_s: float) -> bool:
        """Give the job of each producer with nothing running (a one-call) a free slot,
        else a full worker's front slot (broker.pool), before the round's jobs; True if
        any went. A suspect is left to the round (it waits for an idle worker); while one
        waits at the round's head, newcomers wait with the round, or their jobs taking
        each worker's free and front slots in turn could keep every worker from idling."""
        if self.state.jobs.newcomer() is None or self._suspect_waits(now_s):
            return False  # (asked first: `next` may queue jobs whose backoff is over)
        sent = False
        while (job := self.state.jobs.newcomer()) is not None and self.state.pool.has_front_slot():
            if job.suspect:
                self.state.jobs.producers.pass_newcomer()
                continue
            if self._past_deadline(job, now_s):
                continue
            worker = self.state.pool.assign_front(job.seq, now_s, self.state.settings.job_timeout_s)
            if worker is None:
                break
            self.state.jobs.take(job, newcomer=True)
            self._send(job, worker, now_s)
            sent = True
        return sent

    def _suspect_waits(self, now_s: float) -> bool:
        """Whether the round's next job is a suspect (which waits for an idle worker)."""
        head = self.state.jobs.next(now_s)
        return head is not None and head.suspect

    def _past_deadline(self, job: UnfinishedJob, now_s: float) -> bool:
        """End `job` if its deadline passed: back from a lost worker or a failed commit
        after it passed, it is never sent again (the heap told of it while a worker had
        it). True if it ended."""
        if job.deadline_s is None or job.deadline_s > now_s:
            return False
        self.state.cancel(job.seq, m.REASON_DEADLINE, now_s)
        return True

    def _send(self, job: UnfinishedJob, worker: WorkerInfo, now_s: float) -> None:
        """Queue `job` for `worker`, which now holds it."""
        seq = job.seq
        self.state.latency.dispatched(seq, now_s)
        worker.last_sent_s = now_s
        text = job_id(seq)
        command = _command_for(job, worker)
        if command is m.Command.FRONT_JOB:
            worker.jumped_by(seq, self.state.settings.job_timeout_s)
        body = job.body
        if job.deadline_s is not None:
            body = time_left(body, job.deadline_s - now_s)
        frames = m.frames_of(command, text.encode(), body)
        self.state.outbox.workers.append([worker.identity, *frames])
        log.debug("%s dispatched to %s", text, worker)  # formatted only at DEBUG

    def tick(self, now_s: float) -> None:
        """Heartbeats, lost and hung workers (results expire in `expire_results`)."""
        interval = self.state.settings.heartbeat_interval_s
        cutoff = now_s - interval * self.state.settings.heartbeat_liveness
        for identity in self.state.pool.silent_since(cutoff):
            self.lose_worker(identity, "heartbeat lost", now_s)
        for identity in self.state.pool.overdue(now_s):
            self.lose_worker(
                identity, f"job lease of {self.state.settings.job_timeout_s:g} s ran out", now_s
            )
        for worker in self.state.pool.all():
            if now_s - worker.last_sent_s >= interval:
                self.state.to_worker(worker.identity, m.Heartbeat(), now_s)

    def release_workers(self, now_s: float) -> None:
        """Tell every worker to exit (after a drained shutdown)."""
        for worker in self.state.pool.all():
            self.state.to_worker(worker.identity, m.Disconnect("shutdown"), now_s)
            self.state.pool.remove(worker.identity)


def _command_for(job: UnfinishedJob, worker: WorkerInfo) -> m.Command:
    """How `job` is sent to `worker`, which now holds it: a suspect as such; the only
    running job of its producer, to a worker holding others, as a front job (run before
    them: a one-call does not wait behind a bulk producer's jobs already there)."""
    if job.suspect:
        return m.Command.SUSPECT_JOB
    producer = job.producer
    if len(worker.jobs) > 1 and producer is not None and producer.running() == 1:
        return m.Command.FRONT_JOB
    return m.Command.JOB


def time_left(body: bytes, left_s: float) -> bytes:
    """A job's body as sent: the deadline it names is the time left (at least 1 ms)."""
    job = m.decode_body(m.Job, body)
    return m.body_of(dataclasses.replace(job, deadline_ms=max(1, round(left_s * 1000))))
