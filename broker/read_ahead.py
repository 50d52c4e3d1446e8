"""A slice of client requests' reads of the store, made at once before they are served.

On PostgreSQL each read is a round trip inside the broker's loop: a BATCH of 10,000
GETs cost 10,000 of them while workers and other clients waited. So, before the loop
serves a slice of client requests, `ReadAhead.of` reads in one query (`Store.get_many`)
every job that a GET or WAIT among them reads from the store (jobs this broker runs are
answered from its job table, broker.jobs), then, only if one was not found, the highest
job number issued (to tell an expired job from one never issued); and a key's
unfinished jobs on every broker (NUM_JOBS) are counted once per slice, then moved by
what this broker's own jobs did since. The broker.client_side handlers answer from it
exactly as they would from the store; it is dropped when the slice is served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from broker.jobs import JobTable
from broker.store import JobRecord, Store
from protocol import messages as m
from protocol.messages import Envelope, job_seq

# The largest job number a store can hold (SQLite's INTEGER, PostgreSQL's bigint): a
# larger one was never issued, and asked of a store it fails: answered without one.
MAX_SEQ = 2**63 - 1


class ReadAhead:
    """The store's answers for one slice of requests."""

    def __init__(self, last_seq: int, asked: set[int], records: dict[int, JobRecord]) -> None:
        self.last_seq = last_seq  # the highest job number issued, read if one was not found
        self.asked = asked  # the numbers read: those not in `records` were not found
        self.records = records
        # A key's unfinished jobs on every broker as read, and on this broker then.
        self._running: dict[str, tuple[int, int]] = {}

    @classmethod
    def of(cls, store: Store, jobs: JobTable, requests: Iterable[Envelope]) -> ReadAhead:
        """The jobs that `requests` read from `store` (not those `jobs` holds), read at once."""
        asked = {
            seq
            for env in requests
            if isinstance(env.message, m.Get | m.Wait)
            and (seq := job_seq(env.message.job_id)) is not None
            and seq <= MAX_SEQ
            and seq not in jobs
        }
        records = store.get_many(asked) if asked else {}
        # Whether a number not found was ever issued (expired) or not (invalid): the
        # highest one issued, read only then (the jobs' rows are usually all there).
        last_seq = store.last_seq() if len(records) < len(asked) else 0
        return cls(last_seq, asked, records)

    def stored(self, seq: int) -> tuple[bool, JobRecord | None] | None:
        """(issued, record: None if not found) of job `seq`, or None if it was not read."""
        if seq > MAX_SEQ:
            return False, None
        if seq not in self.asked:
            return None
        record = self.records.get(seq)
        return record is not None or seq <= self.last_seq, record

    def running_of(self, owner: str, count: Callable[[str], int], jobs: JobTable) -> int:
        """`count(owner)` (a key's unfinished jobs on every broker): read once a slice,
        then moved by this broker's own jobs of that key since."""
        if owner not in self._running:
            self._running[owner] = (count(owner), jobs.running(owner))
        read, here = self._running[owner]
        return read + jobs.running(owner) - here
