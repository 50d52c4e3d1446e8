"""Outcomes recorded but not written yet: the overlay both SQL stores keep.

`finish` is the broker's most frequent write, and one statement per job cost more than
the rest of the broker's work on it; so the SQL stores record outcomes here and write
them all with one statement, at `commit` at the latest. Until then, one read strategy
keeps every read true: a read of one job by its number (`get`, the hot path) sees its
outcome laid over the row (`overlay`); any other query first has the store write what
is pending into the open transaction (`take`), where a rollback still takes it back.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from broker.store.interface import JobRecord, Outcome, with_outcome
from protocol.messages import JobStatus


class Finish(NamedTuple):
    """One recorded outcome: of job `seq`, at `finished_s`, of the key `owner`."""

    seq: int
    outcome: Outcome
    finished_s: float
    owner: str

    def row(self) -> tuple[int, str, bytes | None, str | None, str | None, float]:
        """(seq, status, answer, reason, fingerprint, finished_s), as the jobs table has them."""
        o = self.outcome
        return self.seq, str(o.status), o.answer, o.reason, o.fingerprint, self.finished_s


class PendingOutcomes:
    """The outcomes recorded since they were last written, by job number."""

    __slots__ = ("_by_seq",)

    def __init__(self) -> None:
        self._by_seq: dict[int, Finish] = {}

    def record(self, seq: int, outcome: Outcome, now_s: float, owner: str) -> None:
        self._by_seq[seq] = Finish(seq, outcome, now_s, owner)

    def __bool__(self) -> bool:
        return bool(self._by_seq)

    def __contains__(self, seq: int) -> bool:
        return seq in self._by_seq

    def overlay(self, record: JobRecord) -> JobRecord:
        """`record` as it reads with its pending outcome, if it has one."""
        pending = self._by_seq.get(record.seq)
        if pending is None:
            return record
        return with_outcome(record, pending.outcome, pending.finished_s)

    def take(self) -> list[Finish]:
        """Every pending outcome, in the order recorded, for the store to write now."""
        taken = list(self._by_seq.values())
        self._by_seq.clear()
        return taken

    def clear(self) -> None:
        """Forget them all (the transaction was rolled back)."""
        self._by_seq.clear()

    def shift(self, counts: Counter[JobStatus]) -> None:
        """Move each pending job from RUNNING to its outcome's status in `counts` (counts
        read from the table, where they are still running)."""
        for pending in self._by_seq.values():
            counts[JobStatus.RUNNING] -= 1
            counts[pending.outcome.status] += 1
