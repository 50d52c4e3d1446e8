"""Outcomes recorded but not written yet: the overlay both SQL stores keep.

`finish` is the broker's most frequent write, and one statement per job cost more than
the rest of the broker's work on it; so the SQL stores record outcomes here and write
them all with one statement, at `commit` at the latest. Until then, one read strategy
keeps every read true: a read of one job by its number (`get`, the hot path) sees its
outcome laid over the row (`overlay`); any other query first has the store write what
is pending into the open transaction (`take`), where a rollback still takes it back.
"""

from __future__ import annotations

from broker.store.interface import JobRecord, Outcome, with_outcome

Finish = tuple[Outcome, float, str]
"""A recorded outcome of a job: the outcome, when (`finished_s`), and the key that owns it."""
Row = tuple[int, str, bytes | None, str | None, str | None, float]


def rows_of(taken: dict[int, Finish]) -> list[Row]:
    """(seq, status, answer, reason, fingerprint, finished_s) of each job in `taken`, as
    the jobs table has them (one comprehension: this runs for every job)."""
    return [
        (seq, str(o.status), o.answer, o.reason, o.fingerprint, finished_s)
        for seq, (o, finished_s, _) in taken.items()
    ]


class PendingOutcomes:
    """The outcomes recorded since they were last written, by job number."""

    __slots__ = ("_by_seq",)

    def __init__(self) -> None:
        self._by_seq: dict[int, Finish] = {}

    def record(self, seq: int, outcome: Outcome, now_s: float, owner: str) -> None:
        self._by_seq[seq] = (outcome, now_s, owner)

    def __bool__(self) -> bool:
        return bool(self._by_seq)

    def __contains__(self, seq: int) -> bool:
        return seq in self._by_seq

    def overlay(self, record: JobRecord) -> JobRecord:
        """`record` as it reads with its pending outcome, if it has one."""
        pending = self._by_seq.get(record.seq)
        if pending is None:
            return record
        return with_outcome(record, pending[0], pending[1])

    def take(self) -> dict[int, Finish]:
        """Every pending outcome, in the order recorded, for the store to write now
        (`rows_of` gives them as rows)."""
        taken, self._by_seq = self._by_seq, {}
        return taken

    def clear(self) -> None:
        """Forget them all (the transaction was rolled back)."""
        self._by_seq.clear()
