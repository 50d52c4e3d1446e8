"""The broker's unfinished jobs: one `UnfinishedJob` each, in a `JobTable` that owns
the queues (one per producer, served fairly: broker.producers) and the deadlines.

A job lives here from its submit (or its adoption from the store) until it finishes:
its body, its owner, how often its workers were lost, whether it is a suspect, and its
backoff after a finish whose commit failed. The table also keeps the journal of the
store's open transaction (jobs added, jobs finished), so that rolling a turn back is
its own operation (`roll_back`): what the failed transaction did to jobs is undone here,
and the caller is told which requests and waits to answer instead.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import NamedTuple

from broker.access import Owners
from broker.limits import Waiter
from broker.producers import ADOPTED, ProducerQueue, Producers
from broker.store import JobRecord
from protocol.errors import ProtocolError
from protocol.messages import DEFAULT_PRIORITY, Job, decode_body

# A job whose worker was lost this often is a suspect: it runs alone on an idle worker
# from then on (SUSPECT_JOB), so that a job killing workers cannot take its neighbours to
# the poison limit with it, and it is blamed for a lost worker only if that worker had
# said STARTED for it. A worker serving several brokers computes all their jobs one
# after another: a suspect queued there behind other brokers' jobs is innocent of a
# death that struck while those ran. After a single loss a job goes back to any free
# worker: a lost host must fail over fast.
SUSPECT_AFTER_LOSSES = 2
# A job finished in a transaction that failed runs again after this long, doubled at
# each failure in a row up to the maximum: an answer the store cannot take (a full
# disk) must not have its job run and fail to commit hundreds of times a second.
COMMIT_RETRY_MIN_S = 0.25
COMMIT_RETRY_MAX_S = 10.0
# Deadline entries of jobs gone from the table kept at most, beyond twice the table.
DEADLINES_SLACK = 1024


@dataclass(slots=True)
class UnfinishedJob:
    """One unfinished job of this broker."""

    seq: int
    body: bytes  # the Job message's body, as sent to workers
    owner: str | None = None  # the key that submitted it (CURVE only)
    attempts: int = 0  # how often a worker running it was lost (the store counts them)
    suspect: bool = False  # runs alone (SUSPECT_AFTER_LOSSES)
    commit_failures: int = 0  # its finish failed to commit this often in a row
    retry_at_s: float | None = None  # after such a failure: when it may run again
    producer: ProducerQueue | None = None  # whose queue it is in (broker.producers)
    priority: int = DEFAULT_PRIORITY
    deadline_s: float | None = None  # monotonic: not sent to a worker by then, never run
    queued: bool = False  # waiting in its producer's queue


class Undone(NamedTuple):
    """What `JobTable.roll_back` undid: the jobs added (forgotten now), and the jobs
    finished (unfinished again) with the waiters that had been answered."""

    added: set[int]
    restored: dict[int, set[Waiter]]


@dataclass
class _Journal:
    """What the store's open transaction did to jobs."""

    added: set[int] = field(default_factory=set)
    finished: dict[int, tuple[UnfinishedJob, set[Waiter]]] = field(default_factory=dict)


class JobTable:
    """Unfinished jobs by number, the queues of those waiting for a worker (a queue per
    producer), their deadlines, and the journal of the open transaction."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self._jobs: dict[int, UnfinishedJob] = {}
        self.producers = Producers(weights or {}, self._jobs)
        self._queued = 0
        self._owners = Owners()
        self._waiting: set[int] = set()  # jobs with a `retry_at_s`
        # (deadline, seq) of jobs with one; an entry whose job is gone or was sent is
        # skipped when it comes up, so expiry costs O(jobs expired), never a scan.
        self._deadlines: list[tuple[float, int]] = []
        self._journal = _Journal()

    def __contains__(self, seq: int) -> bool:
        return seq in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[UnfinishedJob]:
        return iter(list(self._jobs.values()))

    def get(self, seq: int) -> UnfinishedJob | None:
        return self._jobs.get(seq)

    def owner_of(self, seq: int) -> str | None:
        job = self._jobs.get(seq)
        return job.owner if job else None

    def running(self, owner: str) -> int:
        """How many unfinished jobs the key `owner` has here."""
        return self._owners.running(owner)

    def queued(self) -> int:
        return self._queued

    def holding(self, producer: Hashable) -> int:
        """How many unfinished jobs `producer` has here."""
        known = self.producers.get(producer)
        return known.unfinished if known else 0

    def retrying(self) -> int:
        """Jobs waiting for their backoff after a failed commit."""
        return len(self._waiting)

    # --- coming and going ------------------------------------------------------

    def add(
        self, seq: int, body: bytes, owner: str, *, producer: ProducerQueue | None = None,
        priority: int = DEFAULT_PRIORITY, deadline_s: float | None = None,
    ) -> None:  # fmt: skip
        """A job accepted in this turn's transaction, queued at the back of its
        producer's queue (`producers.of`; by default its owner's) at its priority."""
        producer = producer or self._producer_of(owner)
        job = UnfinishedJob(seq, body, owner or None, producer=producer, priority=priority)
        self._put(job)
        if deadline_s is not None:
            job.deadline_s = deadline_s
            heapq.heappush(self._deadlines, (deadline_s, seq))
        self._enqueue(job)
        self._journal.added.add(seq)

    def adopt(self, records: list[JobRecord], now_s: float, wall_s: float) -> int:
        """Queue unfinished jobs from the store (at start, or taken over from another
        broker); returns how many were new here. A job's producer is its owner key, or
        ADOPTED; its deadline is the one its body names, from its creation (by the wall
        clock `wall_s`, at `now_s`); its priority the default (the store keeps none)."""
        new = [record for record in records if record.seq not in self._jobs]
        for record in new:
            suspect = record.attempts >= SUSPECT_AFTER_LOSSES
            owner = record.owner or None
            producer = self._producer_of(record.owner)
            job = UnfinishedJob(
                record.seq, record.job_body, owner, record.attempts, suspect, producer=producer
            )
            self._put(job)
            deadline_ms = _deadline_ms(record.job_body)
            if deadline_ms:
                job.deadline_s = now_s + record.created_s + deadline_ms / 1000 - wall_s
                heapq.heappush(self._deadlines, (job.deadline_s, record.seq))
            self._enqueue(job)
        return len(new)

    def finish(self, seq: int, waiters: set[Waiter]) -> UnfinishedJob:
        """Take job `seq` out (finished in this turn's transaction, its answer queued for
        `waiters`)."""
        job = self._drop(seq)
        self._journal.finished[seq] = (job, waiters)
        return job

    def forget_unstored(self, seq: int) -> None:
        """Take out a job added in a committed turn that the store did not keep (its
        request id had a job already): nobody was told its number."""
        if seq in self._jobs:
            self._drop(seq)
        self._journal.added.discard(seq)

    def _producer_of(self, owner: str) -> ProducerQueue:
        """The producer of a job known only by its owner: the owner key, else ADOPTED."""
        return self.producers.of(owner or ADOPTED, owner[:8] if owner else ADOPTED)

    def forget(self, seq: int) -> UnfinishedJob:
        """Take job `seq` out without a record of this turn (another broker finished
        it: the store says so already)."""
        return self._drop(seq)

    def clear(self) -> list[int]:
        """Drop every job (this broker was deposed); returns their numbers."""
        seqs = list(self._jobs)
        for seq in seqs:
            self._drop(seq)
        self.producers.clear_queues()
        self._deadlines.clear()
        return seqs

    def _put(self, job: UnfinishedJob) -> None:
        self._jobs[job.seq] = job
        self._owners.own(job.seq, job.owner or "")
        if job.producer is not None:
            job.producer.unfinished += 1

    def _drop(self, seq: int) -> UnfinishedJob:
        job = self._jobs.pop(seq)
        self._owners.disown(seq)
        self._waiting.discard(seq)
        if job.queued:
            job.queued = False
            self._queued -= 1
            if job.producer is not None:
                self.producers.unqueued(job.producer)
        if job.producer is not None:
            job.producer.unfinished -= 1
        if len(self._deadlines) > 2 * len(self._jobs) + DEADLINES_SLACK:
            self._rebuild_deadlines()
        return job

    def _rebuild_deadlines(self) -> None:
        """The deadline heap again, of the jobs still here only: a finished job's entry
        stays until its deadline (up to 7 days), so without this the heap would grow
        with every job finished. Rebuilt when twice as big as the table: O(1) a job."""
        self._deadlines = [
            (job.deadline_s, job.seq) for job in self._jobs.values() if job.deadline_s is not None
        ]
        heapq.heapify(self._deadlines)

    def _enqueue(self, job: UnfinishedJob, front: bool = False) -> None:
        if job.queued or job.producer is None:
            return
        job.queued = True
        self._queued += 1
        self.producers.enqueue(job.producer, job.seq, job.priority, front)

    # --- the queue -------------------------------------------------------------

    def lost(self, seq: int, attempts: int) -> None:
        """Job `seq` comes back from a worker: at the front, a suspect once it was lost
        SUSPECT_AFTER_LOSSES times."""
        job = self._jobs[seq]
        job.attempts = max(job.attempts, attempts)
        self._enqueue(job, front=True)
        if attempts >= SUSPECT_AFTER_LOSSES:
            job.suspect = True

    def next(self, now_s: float) -> UnfinishedJob | None:
        """The job the producers' round serves next (within a producer: the jobs whose
        backoff is over, then those lost by a worker, first), or None."""
        if self._waiting:
            self._queue_due(now_s)
        seq = self.producers.head()
        return None if seq is None else self._jobs[seq]

    def newcomer(self) -> UnfinishedJob | None:
        """The next job of a producer that has nothing running and had nothing running
        when it was queued (broker.producers), or None: it may take a front slot."""
        seq = self.producers.newcomer()
        return None if seq is None else self._jobs[seq]

    def take(self, job: UnfinishedJob, newcomer: bool = False) -> None:
        """Take `job` (what `next` returned, or with `newcomer` what `newcomer` did) off
        its queue: a worker has it."""
        if newcomer:
            self.producers.take_newcomer()
        else:
            self.producers.take()
        job.queued = False
        self._queued -= 1

    def expired(self, now_s: float) -> list[int]:
        """The queued jobs whose deadline passed by `now_s`, in deadline order (each told
        once); costs O(entries due)."""
        due: list[int] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now_s:
            _, seq = heapq.heappop(deadlines)
            job = self._jobs.get(seq)
            if job is not None and job.queued:
                due.append(seq)
        return due

    def _queue_due(self, now_s: float) -> None:
        due = sorted(seq for seq in self._waiting if self._retry_at(seq) <= now_s)
        for seq in reversed(due):
            self._waiting.discard(seq)
            self._jobs[seq].retry_at_s = None
            self._enqueue(self._jobs[seq], front=True)

    def _retry_at(self, seq: int) -> float:
        return self._jobs[seq].retry_at_s or 0.0

    # --- the transaction -------------------------------------------------------

    def commit(self) -> None:
        """The transaction committed: the journal starts anew."""
        self._journal = _Journal()

    def roll_back(self, now_s: float) -> Undone:
        """Undo what the failed transaction did: jobs added are forgotten; jobs finished
        are unfinished again and run again after a backoff (COMMIT_RETRY_MIN_S, doubled
        at each failure in a row). Call `requeue_unheld` once workers gave back what
        they had been sent in the lost turn."""
        journal, self._journal = self._journal, _Journal()
        restored: dict[int, set[Waiter]] = {}
        for seq, (job, waiters) in journal.finished.items():
            if seq not in journal.added:
                self._put(job)
                self._delay(job, now_s)
                restored[seq] = waiters
        for seq in journal.added:
            if seq in self._jobs:
                self._drop(seq)
        return Undone(journal.added, restored)

    def _delay(self, job: UnfinishedJob, now_s: float) -> None:
        job.commit_failures += 1
        wait_s = COMMIT_RETRY_MIN_S * 2 ** (job.commit_failures - 1)
        job.retry_at_s = now_s + min(wait_s, COMMIT_RETRY_MAX_S)
        self._waiting.add(job.seq)

    def requeue_unheld(self, held: Set[int]) -> None:
        """Queue exactly the jobs no worker holds (`held`) and none waits for its
        backoff; the front for the unqueued. A job held and waiting was cancelled while it
        ran, in the turn rolled back: its worker answers it, so it waits for nothing."""
        for seq in held & self._waiting:
            self._waiting.discard(seq)
            self._jobs[seq].retry_at_s = None
        held = held | self._waiting
        order = sorted(self._jobs.values(), key=lambda job: (job.queued, job.seq))
        self.producers.clear_queues()
        self._queued = 0
        for job in order:
            job.queued = False
            if job.seq not in held:
                self._enqueue(job)


def _deadline_ms(body: bytes) -> int:
    """The deadline a stored job body names (0: none, or a body that does not read)."""
    try:
        return decode_body(Job, body).deadline_ms
    except ProtocolError:
        return 0
