"""Producers and their fair share of the workers: a queue per producer, served in turn.

A producer is who submits: the CURVE key (the job's owner) when CURVE is on, else the
client connection (its ROUTER identity); unfinished jobs adopted from the store without
an owner share one producer, ADOPTED. Each producer's queue is one FIFO per priority
(0 first); across producers with queued work, jobs go by deficit round robin (Shreedhar
and Varghese, 1995): at its turn a producer earns its quantum (its weight over the
smallest weight, so at least one job), spends one per job taken, and yields its turn
when less than one is left. A dispatch costs O(1) (amortized); priorities order a
producer's own jobs only, so no producer jumps another by raising them.

A newcomer, a producer that had nothing running when a job of its was queued (a
one-call, or the first job of a batch), is also listed apart: while it still has
nothing running, its next job may go before the round's, into a free slot or a
worker's front slot (broker.pool, `assign_front`), without spending its deficit. It
gains one job on a worker at a time by it, as a new flow does in FQ-CoDel.

Entries are removed lazily: a job taken out of its queue (cancelled, expired, failed)
only has its producer's count lowered; `head` skips its entry when it reaches it.
The admission rule per producer (`queue_refusal`) and the STATS figures per producer
(`describe`) live here too, from counters kept on every change, never a scan of jobs.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from protocol.messages import MAX_PRIORITY

ADOPTED = "(adopted)"
"""The producer of jobs adopted from the store without an owner key."""
OTHERS = "(others)"
"""STATS sums the producers past its first MAX_LISTED under this name."""
MAX_LISTED = 20
RATE_WINDOW_S = 10
IDLE_FORGET_S = 60.0
"""A producer with nothing unfinished is forgotten this long after its last finish (at
a STATS, or when new producers double the number known since the last sweep)."""
SWEEP_MIN = 1024


def connection_name(identity: bytes) -> str:
    """What STATS calls a producer that is a connection (no CURVE): its identity's hash."""
    return "conn-" + hashlib.blake2b(identity, digest_size=4).hexdigest()


def _fifos() -> list[deque[int]]:
    return [deque() for _ in range(MAX_PRIORITY + 1)]


class Queued(Protocol):
    """What a FIFO entry's job tells: whether it still waits in its queue."""

    queued: bool


@dataclass(eq=False, slots=True)
class ProducerQueue:
    """One producer's queue (a FIFO per priority) and counters."""

    key: Hashable
    name: str
    weight: float
    quantum: float  # jobs earned per turn: weight / the smallest weight, >= 1
    fifos: list[deque[int]] = field(
        default_factory=lambda: [deque() for _ in range(MAX_PRIORITY + 1)]
    )
    lowest: int = MAX_PRIORITY + 1  # no FIFO below this one holds an entry
    queued: int = 0  # live entries in the FIFOs
    unfinished: int = 0  # its jobs in the table: queued, running or waiting for a retry
    deficit: float = 0.0
    in_round: bool = False
    newcomer: bool = False  # listed among the newcomers (see the module's docstring)
    finished: deque[list[int]] = field(default_factory=deque)  # [second, count]
    last_finish_s: float = 0.0

    def running(self) -> int:
        """Its jobs on workers (or waiting for a retry): unfinished and not queued."""
        return self.unfinished - self.queued

    def finished_per_s(self, now_s: float) -> float:
        since = int(now_s) - RATE_WINDOW_S
        return sum(n for second, n in self.finished if second > since) / RATE_WINDOW_S


class Producers:
    """The producers of one broker's unfinished jobs and the round that serves them."""

    def __init__(self, weights: Mapping[str, float], jobs: Mapping[int, Queued]) -> None:
        self._weights = dict(weights)
        self._smallest = min([1.0, *self._weights.values()])
        self._jobs = jobs  # a FIFO entry counts while its job is there and queued
        self._by_key: dict[Hashable, ProducerQueue] = {}
        self._round: deque[ProducerQueue] = deque()
        self._newcomers: deque[ProducerQueue] = deque()
        self._latest_s = 0.0  # the last finish's time: the clock `forget_idle` needs
        self._sweep_at = SWEEP_MIN  # producers known when `of` next forgets idle ones

    def __len__(self) -> int:
        return len(self._by_key)

    def of(self, key: Hashable, name: str) -> ProducerQueue:
        """The producer `key` (made on first use); `name` is its key name or label."""
        producer = self._by_key.get(key)
        if producer is None:
            if len(self._by_key) >= self._sweep_at:  # amortized: connections may be many
                self.forget_idle(self._latest_s)
                self._sweep_at = max(SWEEP_MIN, 2 * len(self._by_key))
            producer = ProducerQueue(key, name, 1.0, 1.0)
            self.name(producer, name)
            self._by_key[key] = producer
        return producer

    def name(self, producer: ProducerQueue, name: str) -> None:
        """Name `producer` (known by its key only, from adopted jobs): its weight follows."""
        producer.name = name
        producer.weight = self._weights.get(name, 1.0)
        producer.quantum = producer.weight / self._smallest

    def get(self, key: Hashable) -> ProducerQueue | None:
        return self._by_key.get(key)

    def all(self) -> list[ProducerQueue]:
        return list(self._by_key.values())

    # --- the queues and the round ----------------------------------------------

    def enqueue(
        self, producer: ProducerQueue, seq: int, priority: int, front: bool = False
    ) -> None:
        """Queue job `seq` (at the front of its FIFO: a job coming back)."""
        fifo = producer.fifos[priority]
        if front:
            fifo.appendleft(seq)
        else:
            fifo.append(seq)
        producer.lowest = min(producer.lowest, priority)
        producer.queued += 1
        if not producer.in_round:
            producer.in_round = True
            producer.deficit = 0.0
            self._round.append(producer)
        if not producer.running() and not producer.newcomer:
            producer.newcomer = True
            self._newcomers.append(producer)

    def head(self) -> int | None:
        """The job the round serves next (`take` takes it), or None if none is queued."""
        while self._round:
            producer = self._round[0]
            if producer.queued and (seq := self._front(producer)) is not None:
                if producer.deficit < 1.0:  # its turn begins
                    producer.deficit += producer.quantum
                return seq
            self._round.popleft()  # nothing queued (its entries were stale)
            producer.in_round, producer.deficit, producer.queued = False, 0.0, 0
        return None

    def take(self) -> None:
        """Take the job `head` returned: its producer spends one, and yields its turn
        when it has less than one left or nothing more queued."""
        producer = self._round[0]
        producer.fifos[producer.lowest].popleft()
        producer.queued -= 1
        producer.deficit -= 1.0
        if not producer.queued:
            self._round.popleft()
            producer.in_round, producer.deficit = False, 0.0
        elif producer.deficit < 1.0 and len(self._round) > 1:
            self._round.rotate(-1)  # alone in the round, it begins its next turn in place

    def newcomer(self) -> int | None:
        """The next job of the first newcomer that still has nothing running (its
        producer's `take_newcomer` takes it), or None."""
        while self._newcomers:
            producer = self._newcomers[0]
            if producer.queued and not producer.running():
                seq = self._front(producer)
                if seq is not None:
                    return seq
            self.pass_newcomer()
        return None

    def take_newcomer(self) -> None:
        """Take the job `newcomer` returned, out of the round's order: its producer
        stays in the round for its other jobs, its deficit as it was."""
        producer = self._newcomers[0]
        self.pass_newcomer()
        producer.fifos[producer.lowest].popleft()
        producer.queued -= 1

    def pass_newcomer(self) -> None:
        """Unlist the first newcomer (its job is for the round to serve)."""
        self._newcomers.popleft().newcomer = False

    def _front(self, producer: ProducerQueue) -> int | None:
        fifos = producer.fifos
        while producer.lowest <= MAX_PRIORITY:
            fifo = fifos[producer.lowest]
            while fifo:
                job = self._jobs.get(fifo[0])
                if job is not None and job.queued:
                    return fifo[0]
                fifo.popleft()  # a job no longer queued (see the module's docstring)
            producer.lowest += 1
        return None

    def unqueued(self, producer: ProducerQueue) -> None:
        """One of `producer`'s queued jobs left its queue other than by `take`."""
        producer.queued -= 1

    def clear_queues(self) -> None:
        """Empty every queue (`JobTable.requeue_unheld` queues them again)."""
        for producer in self._by_key.values():
            producer.fifos = _fifos()
            producer.lowest, producer.queued = MAX_PRIORITY + 1, 0
            producer.in_round, producer.deficit, producer.newcomer = False, 0.0, False
        self._round.clear()
        self._newcomers.clear()

    # --- finishing and forgetting ------------------------------------------------

    def finished(self, producer: ProducerQueue, now_s: float) -> None:
        """One of `producer`'s jobs finished (for finished_per_s)."""
        second = int(now_s)
        if producer.finished and producer.finished[-1][0] == second:
            producer.finished[-1][1] += 1
        else:
            producer.finished.append([second, 1])
            while producer.finished[0][0] <= second - RATE_WINDOW_S:
                producer.finished.popleft()
        producer.last_finish_s = self._latest_s = now_s

    def forget_idle(self, now_s: float) -> None:
        """Forget producers with nothing unfinished whose last finish is old."""
        idle = [
            key
            for key, p in self._by_key.items()
            if not p.unfinished and not p.in_round and now_s - p.last_finish_s >= IDLE_FORGET_S
        ]
        for key in idle:
            del self._by_key[key]

    def describe(self, now_s: float) -> list[dict[str, object]]:
        """STATS' per-producer figures: the MAX_LISTED busiest, then OTHERS summing the rest."""
        self.forget_idle(now_s)
        rates = {p.key: p.finished_per_s(now_s) for p in self._by_key.values()}
        ranked = sorted(self._by_key.values(), key=lambda p: (-p.unfinished, -rates[p.key]))
        rows = [_row(p.name, [p], rates) for p in ranked[:MAX_LISTED]]
        if len(ranked) > MAX_LISTED:
            rows.append(_row(OTHERS, ranked[MAX_LISTED:], rates))
        return rows


def _row(
    name: str, producers: list[ProducerQueue], rates: dict[Hashable, float]
) -> dict[str, object]:
    queued = sum(p.queued for p in producers)
    return {
        "producer": name,
        "queued": queued,
        "running": sum(p.unfinished for p in producers) - queued,
        "finished_per_s": round(sum(rates[p.key] for p in producers), 3),
        "weight": sum(p.weight for p in producers),
    }


@dataclass(frozen=True)
class QueueRule:
    """The per-producer admission rule's settings (docs/protocol.md, "Limits")."""

    max_queue: int  # unfinished jobs above which only producers under the reserve get in
    reserve: int  # a producer holding fewer never gets queue_full for others' backlogs
    max_producers: int  # producers the hard bound allows for

    @property
    def bound(self) -> int:
        """The most unfinished jobs a broker ever holds."""
        return self.max_queue + self.reserve * self.max_producers


def queue_refusal(rule: QueueRule, total: int, holding: int) -> str | None:
    """Why a producer holding `holding` unfinished jobs, of `total`, may not add one; None
    if it may. Past `max_queue` only producers under the reserve are admitted: those
    holding the most are refused first, and a producer under the reserve is refused
    only at the hard bound (max_queue + reserve x max_producers), which more than
    `max_producers` producers under the reserve at once would be needed to reach."""
    if total < rule.max_queue:
        return None
    if holding >= rule.reserve:
        return (
            f"queue full ({rule.max_queue} jobs waiting, this producer holds {holding}:"
            f" past the reserve of {rule.reserve} per producer)"
        )
    if total >= rule.bound:
        return f"queue full ({total} jobs waiting: the bound of {rule.bound})"
    return None
