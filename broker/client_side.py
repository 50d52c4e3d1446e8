"""The client side of the broker: what a client may ask, and the answers.

`ClientSide.on_client` serves one decoded request: admission of submits (refusals,
the store's numbering, the key's quota), reads and waits, listings, counts, stats and
shutdown, each checked against the caller's role (broker.access). It queues replies in
the turn's outbox (broker.outbox); the worker side runs the jobs it accepted. After a
commit, `settle` answers again the submits told of a job the commit did not store.
Reads of a slice of requests are made at once before they are served (`read_ahead`,
broker.read_ahead): one query for all their jobs, not a round trip each.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence

from broker import undo
from broker.access import OPEN, Caller, may_see, owner_filter
from broker.history import recent_jobs
from broker.outbox import over_budget
from broker.pool import peer_name
from broker.producers import ProducerQueue, connection_name, queue_refusal
from broker.read_ahead import ReadAhead
from broker.state import CoreState, final_state
from broker.store import JobRecord, StorageError
from protocol import messages as m
from protocol.logs import shown
from protocol.messages import Envelope, ErrorCode, JobStatus, job_id, job_seq

log = logging.getLogger("lss.broker")

Told = tuple[bytes, bytes, bool, Caller]
"""A submit answered with a job of the open transaction: identity, tag, notify, caller."""
NOT_STORED = "storage failed: the job was not stored"


class ClientSide:
    """Admission, reads, waits, listings and access, for requests on the client socket."""

    def __init__(self, state: CoreState, stats: Callable[[float], dict[str, object]]) -> None:
        self.state = state
        self._stats = stats
        # Set by the loop when brokers share the store (broker.cluster): asks every
        # broker to shut down, counts a key's jobs on all brokers.
        self.on_shutdown_all: Callable[[], None] | None = None
        self.running_of: Callable[[str], int] | None = None
        self._told: dict[int, list[Told]] = {}  # by job added in the open transaction
        self._ahead: ReadAhead | None = None

    @contextlib.contextmanager
    def read_ahead(self, requests: Sequence[Envelope]) -> Iterator[None]:
        """Serve `requests` (inside the block) from reads made at once, now; a
        `StorageError` reading them goes up before the block, which then is not run."""
        self._ahead = ReadAhead.of(self.state.store, self.state.jobs, requests)
        try:
            yield
        finally:
            self._ahead = None

    def finished_elsewhere(self, seqs: list[int], now_s: float) -> None:
        """Answer the waiters of jobs another broker finished, and drop this broker's
        jobs that another broker cancelled (told by the store; all read in one query)."""
        own = [s for s in seqs if s in self.state.jobs]
        waited = [s for s in seqs if s not in self.state.jobs and self.state.waiters.waiting(s)]
        records = self.state.store.get_many(own + waited) if own or waited else {}
        for seq in own:
            record = records.get(seq)
            if record is not None and record.status is JobStatus.CANCELLED:
                self._cancelled_elsewhere(seq, record, now_s)
        for seq in waited:
            record = records.get(seq)
            if record is None:  # expired meanwhile
                for identity, tag in self.state.waiters.pop(seq):
                    self.state.refuse(identity, tag, ErrorCode.EXPIRED, "expired")
            elif record.status is not JobStatus.RUNNING:
                for identity, tag in self.state.waiters.pop(seq):
                    self.state.reply(identity, tag, final_state(seq, record), record.answer)

    def _cancelled_elsewhere(self, seq: int, record: JobRecord, now_s: float) -> None:
        """Job `seq` is this broker's and another broker cancelled it through the store:
        drop it here, tell its worker, and answer its waiters."""
        holder = self.state.pool.holder(seq)
        self.state.jobs.forget(seq)
        self.state.latency.forget(seq)
        if holder is not None:
            self.state.to_worker(holder.identity, m.CancelJob(), now_s, job_id(seq).encode())
        for identity, tag in self.state.waiters.pop(seq):
            self.state.reply(identity, tag, final_state(seq, record))
        log.debug("%s cancelled by another broker", job_id(seq))

    def remote_waits(self) -> list[int]:
        """Jobs waited for here that another broker runs."""
        return [seq for seq in self.state.waiters.jobs() if seq not in self.state.jobs]

    def on_client(self, env: Envelope, now_s: float, caller: Caller = OPEN) -> None:
        """Serve one decoded client request from `caller`."""
        identity, tag, msg = env.identity or b"", env.tag, env.message
        if not caller.may_ask:  # ZAP admits no worker key here; if it ever did: no
            self.state.forbid(identity, tag, caller, "use the client endpoint")
        elif isinstance(msg, m.Submit):
            self._submit(identity, tag, msg, now_s, caller)
        elif isinstance(msg, m.Get | m.Wait):
            wait = isinstance(msg, m.Wait)
            self._read(identity, tag, job_seq(msg.job_id), wait=wait, caller=caller)
        elif isinstance(msg, m.Cancel):
            self._cancel(identity, tag, job_seq(msg.job_id), now_s, caller)
        elif isinstance(msg, m.ListJobs):
            self._list(identity, tag, msg, caller)
        elif isinstance(msg, m.NumJobs):
            self.state.reply(identity, tag, m.JobCount(self._count_running(caller)))
        elif isinstance(msg, m.Shutdown):
            self._shutdown(identity, tag, caller, msg.scope)
        elif isinstance(msg, m.Ping):
            pong = m.Pong(
                self.state.broker_id, shutting_down=self.state.shutting_down, pid=os.getpid()
            )
            self.state.reply(identity, tag, pong)
        elif isinstance(msg, m.Stats | m.Recent):
            self.state.reply(identity, tag, self._report(identity, msg, now_s, caller))
        else:
            name = type(msg).__name__
            self.state.refuse(
                identity, tag, ErrorCode.UNKNOWN_COMMAND, f"{name} is not a client request"
            )

    def _report(
        self, identity: bytes, msg: m.Stats | m.Recent, now_s: float, caller: Caller
    ) -> m.Message:
        if self.state.outbox.answers.spent(identity):  # its reply could not go: spare the work
            return over_budget()
        if isinstance(msg, m.Recent):  # a client key sees only its own jobs here too
            return recent_jobs(self.state.store, msg.limit, owner_filter(caller))
        return m.StatsReply({**self._stats(now_s), "key": self.state.quota.describe(caller.owner)})

    def _shutdown(self, identity: bytes, tag: bytes, caller: Caller, scope: str) -> None:
        if not caller.may_change_service:
            self.state.forbid(identity, tag, caller, "shut the service down")
            return
        if scope not in m.SHUTDOWN_SCOPES:
            self.state.refuse(identity, tag, ErrorCode.BAD_REQUEST, f"scope must be one of"
                        f" {', '.join(m.SHUTDOWN_SCOPES)}")  # fmt: skip
            return
        if scope == m.SHUTDOWN_ALL and self.on_shutdown_all is not None:
            self.on_shutdown_all()  # every broker on the store; this one as well
        self.state.begin_shutdown(f"{caller.role} key {shown(caller.name)} asked" if caller.role
                            else "a client asked")  # fmt: skip
        self.state.reply(identity, tag, m.ShuttingDown(pending=len(self.state.jobs)))

    def _submit(
        self, identity: bytes, tag: bytes, msg: m.Submit, now_s: float, caller: Caller
    ) -> None:
        body = m.body_of(m.Job(msg.statistic, msg.params, msg.deadline_ms))
        malformed = self._malformed(identity, msg, body)
        if malformed:  # not looked up: it names no job, and its text may break a query
            self.state.refuse(identity, tag, *malformed)
            return
        owner = caller.owner
        producer = self._producer(identity, caller, owner)
        refusal = self._submit_refusal(caller, body, producer)
        seq = self.state.store.find_request(msg.request_id) if refusal else None
        if refusal and seq is None:
            self.state.refuse(identity, tag, *refusal)
            return
        if seq is None:
            seq = self._accept_alone(
                identity, tag, msg, body=body, now_s=now_s, owner=owner, producer=producer
            )
            if seq is None:
                return
        self._answer_submit(identity, tag, seq, msg.notify, caller)

    def _answer_submit(
        self, identity: bytes, tag: bytes, seq: int, notify: bool, caller: Caller
    ) -> None:
        told = self._told.get(seq)
        if told is not None:  # its job is not committed yet: the commit may supersede it
            told.append((identity, tag, notify, caller))
        if not self._visible(seq, caller):  # another key's request id: never its job
            self.state.forbid(identity, tag, caller, "reuse another key's request_id")
        elif notify:  # the final state is the only reply
            self._read(identity, tag, seq, wait=True, caller=caller)
        else:
            self.state.reply(identity, tag, m.Submitted(job_id(seq)))

    def settle(self, superseded: dict[int, int | str]) -> None:
        """After a commit (or with nothing, a rollback): forget each job the commit did
        not store (`Store.superseded`; a worker's answer to it will be ignored), and
        answer again every submit told of it: with the job its request id has, or a
        `storage` error. Other replies naming it become `storage` errors."""
        told, self._told = self._told, {}
        if not superseded:
            return
        askers = {(who, tag) for seq in superseded for who, tag, _, _ in told.get(seq, ())}
        self.state.outbox.clients = undo.client_replies(
            self.state.outbox.clients, set(superseded), askers, NOT_STORED,
            self.state.retry_refused_ms,
        )  # fmt: skip
        for seq, instead in superseded.items():
            self.state.jobs.forget_unstored(seq)
            self.state.latency.forget(seq)
            for identity, tag in self.state.waiters.pop(seq) - askers:
                self.state.refuse(identity, tag, ErrorCode.STORAGE, NOT_STORED)
            for identity, tag, notify, caller in told.get(seq, ()):
                self._answer_again(identity, tag, instead, notify, caller)

    def restate(self, overruled: set[int]) -> None:
        """After a commit: the replies that named a job whose outcome the store did not
        take (it had ended already: another broker cancelled it) say what it holds."""
        if not overruled:
            return
        states: dict[int, tuple[m.JobState, bytes | None]] = {}
        for seq in overruled:
            try:
                record = self.state.store.get(seq)
            except StorageError as exc:
                log.warning("%s: its stored state could not be read: %s", job_id(seq), exc)
                continue
            if record is not None:
                states[seq] = (final_state(seq, record), record.answer)
        if states:
            self.state.outbox.clients = undo.restated(self.state.outbox.clients, states)

    def _answer_again(
        self, identity: bytes, tag: bytes, instead: int | str, notify: bool, caller: Caller
    ) -> None:
        """Answer a submit whose job was superseded by `instead`: the job its request id
        has, or why the store refused its row alone."""
        if isinstance(instead, str):
            self.state.storage_failures["add"] += 1
            self.state.warn.warning(("store refused", identity), "a submit from %s failed alone"
                               " in the store: %s", peer_name(identity), instead)  # fmt: skip
            self.state.refuse(identity, tag, ErrorCode.STORAGE, f"storage failed: {instead}")
            return
        try:
            self._answer_submit(identity, tag, instead, notify, caller)
        except StorageError as exc:  # after the commit: this request alone goes unanswered
            self.state.refuse(identity, tag, ErrorCode.STORAGE, f"storage failed: {exc}")

    def unoccupied(self, identity: bytes, caller: Caller) -> bool:
        """Whether the producer `caller` on connection `identity` is (`_producer`) has no
        unfinished job here."""
        producer = self.state.jobs.producers.get(caller.owner or identity)
        return producer is None or not producer.unfinished

    def _producer(self, identity: bytes, caller: Caller, owner: str) -> ProducerQueue:
        """Whose queue the caller's jobs join: its key (`owner`) with CURVE, else its
        connection."""
        key = owner or identity
        producer = self.state.jobs.producers.get(key)
        if producer is None:
            name = caller.name if owner else connection_name(identity)
            producer = self.state.jobs.producers.of(key, name)
        elif owner and producer.name != caller.name:  # its jobs were adopted, its name unknown
            self.state.jobs.producers.name(producer, caller.name)
        return producer

    def _accept_alone(
        self, identity: bytes, tag: bytes, msg: m.Submit, *, body: bytes, now_s: float,
        owner: str, producer: ProducerQueue,
    ) -> int | None:  # fmt: skip
        """`_accept`, where a store error that took back only this request's write
        refuses this request only (None): the turn and every other peer's requests go on."""
        try:
            return self._accept(msg, body, now_s, owner, producer)
        except StorageError as exc:
            if not exc.contained:
                raise  # the transaction is lost: the loop rolls the turn back
            self.state.storage_failures[exc.operation] += 1
            self.state.warn.warning(("store refused", identity), "a submit from %s failed alone"
                               " in the store: %s", peer_name(identity), exc)  # fmt: skip
            self.state.refuse(identity, tag, ErrorCode.STORAGE, f"storage failed: {exc}")
            return None

    def _accept(
        self, msg: m.Submit, body: bytes, now_s: float, owner: str, producer: ProducerQueue
    ) -> int:
        seq, new = self.state.store.add(
            msg.request_id, body, self.state.wall_clock(), owner, msg.statistic
        )
        if not new:
            return seq
        self._told[seq] = []
        deadline_s = now_s + msg.deadline_ms / 1000 if msg.deadline_ms else None
        self.state.jobs.add(
            seq, body, owner, producer=producer, priority=msg.priority, deadline_s=deadline_s
        )
        self.state.rates.count("submitted", now_s)
        self.state.latency.accepted(seq, msg.statistic, now_s)
        log.debug("%s accepted", job_id(seq))
        return seq

    def _submit_refusal(
        self, caller: Caller, body: bytes, producer: ProducerQueue
    ) -> tuple[ErrorCode, str] | None:
        if self.state.shutting_down:
            return ErrorCode.SHUTTING_DOWN, "shutting down"
        if self.state.storage_refusal:
            return ErrorCode.STORAGE, self.state.storage_refusal
        if no_worker := self.state.no_worker():
            return ErrorCode.NO_WORKER, no_worker
        if len(self.state.jobs) >= self.state.settings.max_queue:  # else nobody is refused
            full = queue_refusal(self.state.admission, len(self.state.jobs), producer.unfinished)
            if full is not None:
                return ErrorCode.QUEUE_FULL, full
        return self.state.quota.refusal(caller.owner, body)

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
            self.state.warn.warning(("bad submit", identity), "refused a submit from %s: %s",
                               peer_name(identity), problem)  # fmt: skip
            return ErrorCode.BAD_REQUEST, problem
        return None

    def _visible(self, seq: int, caller: Caller) -> bool:
        """Whether `caller` may know of job `seq` (a client key: only its own jobs)."""
        if owner_filter(caller) is None:  # sees every job: no need to look it up
            return True
        if seq in self.state.jobs:
            return may_see(caller, self.state.jobs.owner_of(seq))
        record = self.state.store.get(seq)
        return record is None or may_see(caller, record.owner)

    def _count_running(self, caller: Caller) -> int:
        owner = owner_filter(caller)
        if owner is None:
            return self.state.store.count(JobStatus.RUNNING)
        if self.running_of is not None and self._ahead is not None:
            return self._ahead.running_of(owner, self.running_of, self.state.jobs)
        if self.running_of is not None:
            return self.running_of(owner)
        return self.state.jobs.running(owner)

    def _read(
        self, identity: bytes, tag: bytes, seq: int | None, *, wait: bool, caller: Caller = OPEN
    ) -> None:
        """Answer with job `seq`'s state, or (`wait`) register for its final one. Another
        key's job answers exactly as a job id never issued."""
        if seq is not None and seq in self.state.jobs:  # answered without the store
            self._read_running(identity, tag, seq, wait, caller)
            return
        issued, record = (False, None) if seq is None else self._stored(seq)
        if seq is None or not issued:
            self.state.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
        elif record is None:
            self.state.refuse(identity, tag, ErrorCode.EXPIRED, "expired")
        elif not may_see(caller, record.owner):
            self.state.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
        elif wait and record.status is JobStatus.RUNNING:  # another broker runs it
            self._add_waiter(identity, tag, seq)
        else:
            self.state.reply(identity, tag, final_state(seq, record), record.answer)

    def _stored(self, seq: int) -> tuple[bool, JobRecord | None]:
        """Whether job `seq` was issued, and its record (None: expired), as read ahead
        for this slice of requests if it was, else from the store."""
        ahead = self._ahead.stored(seq) if self._ahead is not None else None
        if ahead is not None:
            return ahead
        if seq > self.state.store.last_seq():
            return False, None
        return True, self.state.store.get(seq)

    def _cancel(
        self, identity: bytes, tag: bytes, seq: int | None, now_s: float, caller: Caller
    ) -> None:
        """Cancel job `seq` and answer its state: CANCELLED (now or before), or how it
        finished first. An unknown id, or another key's job, answers as GET does; an id
        not issued yet is never remembered, so it can affect no later job."""
        if seq is not None and seq in self.state.jobs:  # this broker's
            if not may_see(caller, self.state.jobs.owner_of(seq)):
                self.state.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
                return
            self.state.cancel(seq, m.REASON_CANCELLED, now_s)
            state = m.JobState(job_id(seq), JobStatus.CANCELLED.value, m.REASON_CANCELLED)
            self.state.reply(identity, tag, state)
        elif seq is None or seq > self.state.store.last_seq():
            self.state.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
        else:
            self._cancel_stored(identity, tag, seq, caller)

    def _cancel_stored(self, identity: bytes, tag: bytes, seq: int, caller: Caller) -> None:
        """Cancel a job this broker does not run: finished (left as it is), or another
        broker's on a shared store (cancelled there through the store, which tells it)."""
        record = self.state.store.get(seq)
        if record is None:
            self.state.refuse(identity, tag, ErrorCode.EXPIRED, "expired")
            return
        if not may_see(caller, record.owner):
            self.state.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
            return
        if record.status is JobStatus.RUNNING:
            self.state.store.cancel(seq, m.REASON_CANCELLED, self.state.wall_clock())
            record = self.state.store.get(seq) or record
            if record.status is not JobStatus.RUNNING:  # waiters here are answered now
                for waiter, waiter_tag in self.state.waiters.pop(seq):
                    self.state.reply(waiter, waiter_tag, final_state(seq, record), record.answer)
        self.state.reply(identity, tag, final_state(seq, record), record.answer)

    def _read_running(
        self, identity: bytes, tag: bytes, seq: int, wait: bool, caller: Caller
    ) -> None:
        if not may_see(caller, self.state.jobs.owner_of(seq)):
            self.state.refuse(identity, tag, ErrorCode.INVALID_JOB_ID, "Invalid job_id")
        elif wait and (no_worker := self.state.no_worker()):
            self.state.refuse(identity, tag, ErrorCode.NO_WORKER, no_worker)
        elif wait:
            self._add_waiter(identity, tag, seq)
        else:
            self.state.reply(identity, tag, m.JobState(job_id(seq), JobStatus.RUNNING.value))

    def _add_waiter(self, identity: bytes, tag: bytes, seq: int) -> None:
        admission = self.state.waiters.add(seq, identity, tag)
        if admission.displaced is not None:  # the largest holder's oldest wait made room
            displaced, displaced_tag = admission.displaced
            self.state.warn.warning(
                ("displaced", displaced), "ended the oldest wait of %s: waits full (%d), it"
                " holds the most", peer_name(displaced), self.state.waiters.cap,
            )  # fmt: skip
            why = (
                f"too many waits at once (at most {self.state.waiters.cap} in all): this peer"
                " held the most, and its oldest wait made room for another's; ask again"
            )
            self.state.refuse(displaced, displaced_tag, ErrorCode.OVER_LIMIT, why)
        if not admission.admitted:
            self.state.refuse(identity, tag, ErrorCode.OVER_LIMIT, self._wait_refusal(identity))

    def _wait_refusal(self, identity: bytes) -> str:
        if self.state.waiters.held(identity) >= self.state.waiters.per_peer:
            return f"too many waits at once (at most {self.state.waiters.per_peer} per peer)"
        return (f"too many waits at once (at most {self.state.waiters.cap} in all, and this peer"
                " holds as many as any other); ask again later")  # fmt: skip

    def _list(self, identity: bytes, tag: bytes, msg: m.ListJobs, caller: Caller) -> None:
        if self.state.outbox.answers.spent(identity):  # its reply could not go: spare the work
            self.state.reply(identity, tag, over_budget())
            return
        problem = list_filter_problem(msg)
        if problem is not None:
            self.state.warn.warning(("list", identity), "refused a job list from %s: %s",
                               peer_name(identity), problem)  # fmt: skip
            self.state.refuse(identity, tag, ErrorCode.BAD_REQUEST, problem)
            return
        limit = max(1, min(msg.limit, self.state.settings.list_page_limit))
        after = min(max(msg.after, 0), self.state.store.last_seq())
        owner = owner_filter(caller)
        page = self.state.store.page(
            after, limit, owner, status=msg.status, statistic=msg.statistic
        )
        jobs = [[job_id(seq), status.value] for seq, status in page]
        next_after = page[-1][0] if len(page) == limit else None
        self.state.reply(identity, tag, m.JobList(jobs, next_after))


def list_filter_problem(msg: m.ListJobs) -> str | None:
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
