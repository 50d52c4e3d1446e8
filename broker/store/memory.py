"""`MemoryStore`: a `Store` in a dict, for tests; it forgets everything at exit."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import replace

from broker.store.interface import (
    RECENT_SCAN,
    InProcessStore,
    JobRecord,
    Outcome,
    cancel_if_running,
    job_statistic,
    with_outcome,
)
from protocol.messages import JobStatus


class MemoryStore(InProcessStore):
    """A `Store` in a dict: fast, forgets everything at exit. For tests.

    Rollback is real (an undo log), so that the broker's tests can run on either store.
    """

    def __init__(self) -> None:
        self._jobs: dict[int, JobRecord] = {}
        self._by_request: dict[str, int] = {}
        self._counts: Counter[JobStatus] = Counter()
        self._usage: Counter[str] = Counter()  # stored bytes by owner
        self._last_seq = 0
        self._undo: list[Callable[[], object]] = []

    def add(
        self, request_id: str, job_body: bytes, now_s: float, owner: str = "", statistic: str = ""
    ) -> tuple[int, bool]:
        """The job for `request_id`: a new one (True), or the one it already has (False)."""
        known = self._by_request.get(request_id)
        if known is not None:
            return known, False
        self._last_seq += 1
        seq = self._last_seq
        self._put(
            seq,
            JobRecord(seq, request_id, job_body, JobStatus.RUNNING, created_s=now_s, owner=owner),
        )
        self._by_request[request_id] = seq
        self._undo.append(lambda: self._by_request.pop(request_id, None))
        return seq, True

    def _put(self, seq: int, record: JobRecord | None) -> None:
        """Set (or with None delete) job `seq`, keeping counts and the undo log."""
        old = self._jobs.pop(seq, None)
        if old is not None:
            self._counts[old.status] -= 1
            self._usage[old.owner] -= old.stored_bytes
        if record is not None:
            self._jobs[seq] = record
            self._counts[record.status] += 1
            self._usage[record.owner] += record.stored_bytes
        self._undo.append(lambda: self._put(seq, old))

    def find_request(self, request_id: str) -> int | None:
        return self._by_request.get(request_id)

    def get(self, seq: int) -> JobRecord | None:
        return self._jobs.get(seq)

    def get_many(self, seqs: Collection[int]) -> dict[int, JobRecord]:
        return {seq: self._jobs[seq] for seq in seqs if seq in self._jobs}

    def finish(self, seq: int, outcome: Outcome, now_s: float, owner: str = "") -> None:
        self._put(seq, with_outcome(self._jobs[seq], outcome, now_s))

    def cancel(self, seq: int, reason: str, now_s: float) -> bool:
        return cancel_if_running(self, seq, reason, now_s)

    def stored_bytes(self, owner: str) -> int:
        return self._usage[owner]

    def add_attempt(self, seq: int) -> int:
        record = self._jobs[seq]
        self._put(seq, replace(record, attempts=record.attempts + 1))
        return record.attempts + 1

    def page(
        self,
        after: int,
        limit: int,
        owner: str | None = None,
        *,
        status: str | None = None,
        statistic: str | None = None,
    ) -> list[tuple[int, JobStatus]]:
        """Up to `limit` jobs numbered above `after` (only `owner`'s, in `status`, of
        `statistic`: those given)."""
        wanted = (
            seq
            for seq, r in self._jobs.items()
            if seq > after
            and (owner is None or r.owner == owner)
            and (status is None or r.status == status)
            and (statistic is None or job_statistic(r.job_body) == statistic)
        )
        return [(seq, self._jobs[seq].status) for seq in sorted(wanted)[:limit]]

    def recent(
        self, limit: int, status: JobStatus | None = None, owner: str | None = None
    ) -> list[JobRecord]:
        """Up to `limit` of the last `RECENT_SCAN` jobs (of `status`, of `owner`), newest
        first, without their answers."""
        newest = sorted((s for s in self._jobs if s > self._last_seq - RECENT_SCAN), reverse=True)
        found = [
            record
            for record in map(self._jobs.__getitem__, newest)
            if (status is None or record.status is status)
            and (owner is None or record.owner == owner)
        ]
        return [replace(record, answer=None) for record in found[:limit]]

    def unfinished(self) -> list[JobRecord]:
        return [r for _, r in sorted(self._jobs.items()) if r.status is JobStatus.RUNNING]

    def count(self, status: JobStatus) -> int:
        return self._counts[status]

    def last_seq(self) -> int:
        return self._last_seq

    def expire(self, finished_before_s: float) -> int:
        old = [
            r
            for r in self._jobs.values()
            if r.finished_s is not None and r.finished_s < finished_before_s
        ]
        for record in old:
            self._put(record.seq, None)
            self._by_request.pop(record.request_id, None)
            self._undo.append(
                functools.partial(self._by_request.setdefault, record.request_id, record.seq)
            )
        return len(old)

    def commit(self) -> None:
        """Nothing to make durable: forget the undo log."""
        self._undo = []

    def rollback(self) -> None:
        """Undo every write since the last commit; numbers handed out stay used."""
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            step()
        self._undo = []  # what the steps themselves logged

    def has_changes(self) -> bool:
        return bool(self._undo)

    def close(self) -> None:
        """Nothing to release."""
