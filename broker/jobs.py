"""The broker's unfinished jobs: one `UnfinishedJob` each, in a `JobTable` that owns
the queue.

A job lives here from its submit (or its adoption from the store) until it finishes:
its body, its owner, how often its workers were lost, whether it is a suspect, and its
backoff after a finish whose commit failed. The table also keeps the journal of the
store's open transaction (jobs added, jobs finished), so that rolling a turn back is
its own operation (`roll_back`): what the failed transaction did to jobs is undone here,
and the caller is told which requests and waits to answer instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from typing import NamedTuple

from broker.access import Owners
from broker.limits import Waiter
from broker.store import JobRecord

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


@dataclass
class UnfinishedJob:
    """One unfinished job of this broker."""

    seq: int
    body: bytes  # the Job message's body, as sent to workers
    owner: str | None = None  # the key that submitted it (CURVE only)
    attempts: int = 0  # how often a worker running it was lost (the store counts them)
    suspect: bool = False  # runs alone (SUSPECT_AFTER_LOSSES)
    commit_failures: int = 0  # its finish failed to commit this often in a row
    retry_at_s: float | None = None  # after such a failure: when it may run again


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
    """Unfinished jobs by number, the queue of those waiting for a worker, and the
    journal of the open transaction."""

    def __init__(self) -> None:
        self._jobs: dict[int, UnfinishedJob] = {}
        self._queue: deque[int] = deque()
        self._owners = Owners()
        self._waiting: set[int] = set()  # jobs with a `retry_at_s`
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
        return len(self._queue)

    def retrying(self) -> int:
        """Jobs waiting for their backoff after a failed commit."""
        return len(self._waiting)

    # --- coming and going ------------------------------------------------------

    def add(self, seq: int, body: bytes, owner: str) -> None:
        """A job accepted in this turn's transaction, queued at the back."""
        self._put(UnfinishedJob(seq, body, owner or None))
        self._queue.append(seq)
        self._journal.added.add(seq)

    def adopt(self, records: list[JobRecord]) -> int:
        """Queue unfinished jobs from the store (at start, or taken over from another
        broker); returns how many were new here."""
        new = [record for record in records if record.seq not in self._jobs]
        for record in new:
            suspect = record.attempts >= SUSPECT_AFTER_LOSSES
            owner = record.owner or None
            self._put(UnfinishedJob(record.seq, record.job_body, owner, record.attempts, suspect))
            self._queue.append(record.seq)
        return len(new)

    def finish(self, seq: int, waiters: set[Waiter]) -> UnfinishedJob:
        """Take job `seq` out (finished in this turn's transaction, its answer queued for
        `waiters`)."""
        job = self._drop(seq)
        self._journal.finished[seq] = (job, waiters)
        return job

    def forget(self, seq: int) -> None:
        """Take out a job added in a committed turn that the store did not keep (its
        request id had a job already): nobody was told its number."""
        if seq in self._jobs:
            self._drop(seq)
        self._journal.added.discard(seq)

    def clear(self) -> list[int]:
        """Drop every job (this broker was deposed); returns their numbers."""
        seqs = list(self._jobs)
        for seq in seqs:
            self._drop(seq)
        self._queue.clear()
        return seqs

    def _put(self, job: UnfinishedJob) -> None:
        self._jobs[job.seq] = job
        self._owners.own(job.seq, job.owner or "")

    def _drop(self, seq: int) -> UnfinishedJob:
        job = self._jobs.pop(seq)
        self._owners.disown(seq)
        self._waiting.discard(seq)
        return job

    # --- the queue -------------------------------------------------------------

    def lost(self, seq: int, attempts: int) -> None:
        """Job `seq` comes back from a worker: at the front, a suspect once it was lost
        SUSPECT_AFTER_LOSSES times."""
        job = self._jobs[seq]
        job.attempts = max(job.attempts, attempts)
        self._queue.appendleft(seq)
        if attempts >= SUSPECT_AFTER_LOSSES:
            job.suspect = True

    def next(self, now_s: float) -> UnfinishedJob | None:
        """The job at the front of the queue (those whose backoff is over first), or None."""
        if self._waiting:
            self._queue_due(now_s)
        while self._queue:
            job = self._jobs.get(self._queue[0])
            if job is not None:
                return job
            self._queue.popleft()  # finished while queued (a poison job failed)
        return None

    def take(self) -> None:
        """Take the front job (`next`) off the queue: a worker has it."""
        self._queue.popleft()

    def _queue_due(self, now_s: float) -> None:
        due = sorted(seq for seq in self._waiting if self._retry_at(seq) <= now_s)
        for seq in reversed(due):
            self._waiting.discard(seq)
            self._jobs[seq].retry_at_s = None
            self._queue.appendleft(seq)

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
        backoff; the front for the unqueued."""
        held = held | self._waiting
        queued = [seq for seq in self._queue if seq in self._jobs and seq not in held]
        missing = sorted(set(self._jobs) - held - set(queued))
        self._queue = deque(missing + queued)
