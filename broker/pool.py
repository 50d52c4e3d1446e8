"""The broker's view of its workers: who is alive, what each holds, who is next.

Dispatch is least-recently-used with credit: a worker offers `credit` job slots; the
workers with a free slot wait in a queue ordered by when they last got a job, so work
spreads across workers before any worker gets a second job, and a busy worker (no
free slot) is never given more, but for its front slot: one job beyond its credit, kept
for a producer with nothing running (`assign_front`), so that a one-call is sent at
once instead of waiting for a bulk producer's job to finish somewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from protocol.logs import SHOWN_CHARS, shown


def peer_name(identity: bytes) -> str:
    """A socket identity fit for a log line (control characters escaped, cut short)."""
    return shown(identity)


@dataclass
class WorkerInfo:
    """One registered worker and the jobs (by number) it holds, with their deadlines."""

    identity: bytes
    credit: int
    fingerprint: str
    pid: int
    host: str
    last_seen_s: float
    last_sent_s: float
    jobs: dict[int, float] = field(default_factory=dict)  # seq -> lease deadline
    runs_suspect: bool = False  # running a suspect job, which gets the worker to itself
    started: set[int] = field(default_factory=set)  # suspect jobs it said it is computing

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        """The identity as text (workers name themselves host:pid:n)."""
        return peer_name(self.identity)

    @property
    def free_slots(self) -> int:
        return 0 if self.runs_suspect else max(0, self.credit - len(self.jobs))

    @property
    def front_slot_free(self) -> bool:
        """Full (its credit taken) and its one front slot not taken (`assign_front`)."""
        return not self.runs_suspect and len(self.jobs) == self.credit

    def jumped_by(self, front: int, lease_s: float) -> None:
        """Job `front` runs before the jobs held here but the one being computed (a front
        job): each may wait one job more, so each gets one lease more (one per job ahead
        of it). The oldest is taken for the one being computed: a worker computes its jobs
        in order, and a front job is sent only after an answer has freed its slot, or to
        the front slot while the oldest runs; so the lease of a job stuck there still runs
        out as it would have, however many front jobs come after it."""
        held = iter(self.jobs)
        next(held, None)
        for seq in held:
            if seq != front:
                self.jobs[seq] += lease_s

    def describe(self, now_s: float | None = None) -> dict[str, object]:
        """The worker for `stats`; with `now_s`, also how long ago it was last heard from."""
        described: dict[str, object] = {
            "id": self.name,
            "pid": self.pid,
            # A worker's own words, cut (STATS lists many) but not escaped: its readers
            # escape what they show, as they do every value a peer sent.
            "host": self.host[:SHOWN_CHARS],
            "credit": self.credit,
            "in_flight": len(self.jobs),
            "fingerprint": self.fingerprint[:SHOWN_CHARS],
        }
        if now_s is not None:
            described["last_seen_s_ago"] = round(max(0.0, now_s - self.last_seen_s), 3)
        return described


class WorkerPool:
    """Registered workers, and the least-recently-used order of those with free slots."""

    def __init__(self) -> None:
        self._workers: dict[bytes, WorkerInfo] = {}
        self._free: OrderedDict[bytes, None] = OrderedDict()
        self._front_free: OrderedDict[bytes, None] = OrderedDict()  # see `assign_front`

    def __len__(self) -> int:
        return len(self._workers)

    def __contains__(self, identity: object) -> bool:
        return identity in self._workers

    def get(self, identity: bytes) -> WorkerInfo | None:
        return self._workers.get(identity)

    def all(self) -> list[WorkerInfo]:
        return list(self._workers.values())

    def register(self, info: WorkerInfo) -> list[int]:
        """Add a worker; if its identity was known, return the jobs it held (to re-queue)."""
        orphans = self.remove(info.identity)
        self._workers[info.identity] = info
        self._refile(info)
        return orphans

    def remove(self, identity: bytes) -> list[int]:
        """Forget a worker; return the jobs it held, oldest first."""
        info = self._workers.pop(identity, None)
        self._free.pop(identity, None)
        self._front_free.pop(identity, None)
        return sorted(info.jobs) if info else []

    def has_free(self) -> bool:
        return bool(self._free)

    def has_front_slot(self) -> bool:
        """Whether `assign_front` would find a slot."""
        return bool(self._free or self._front_free)

    def _refile(self, info: WorkerInfo) -> None:
        """File `info` among the workers with a free slot (at the back if it was not
        there: least recently used first) and those with their front slot free."""
        identity = info.identity
        if info.free_slots > 0:
            self._free.setdefault(identity, None)
        else:
            self._free.pop(identity, None)
        if info.front_slot_free:
            self._front_free.setdefault(identity, None)
        else:
            self._front_free.pop(identity, None)

    def assign(
        self, seq: int, now_s: float, lease_s: float, suspect: bool = False
    ) -> WorkerInfo | None:
        """Give job `seq` to the least recently used worker with a free slot.

        A worker runs its jobs one after another, so a job queued behind others there
        gets a lease for each of them too. A `suspect` job (broker.jobs) goes only to an
        idle worker and keeps it to itself, so that if it kills this worker too no other
        job is blamed; None when no worker is idle.
        """
        if suspect:
            return self._assign_suspect(seq, now_s + lease_s)
        identity, _ = self._free.popitem(last=False)
        return self._give(self._workers[identity], seq, now_s, lease_s)

    def assign_front(self, seq: int, now_s: float, lease_s: float) -> WorkerInfo | None:
        """Give job `seq`, whose producer has nothing running, to the least recently used
        worker with a free slot, else to a full worker's front slot (one job beyond its
        credit, which it runs before the jobs it holds: docs/protocol.md, "Fair
        producers"); None if neither is there. A flood of such jobs takes one slot per
        worker beyond the credit, no more."""
        if self._free:
            return self.assign(seq, now_s, lease_s)
        if not self._front_free:
            return None
        identity, _ = self._front_free.popitem(last=False)
        return self._give(self._workers[identity], seq, now_s, lease_s)

    def _give(self, info: WorkerInfo, seq: int, now_s: float, lease_s: float) -> WorkerInfo:
        info.jobs[seq] = now_s + lease_s * (len(info.jobs) + 1)
        self._refile(info)
        return info

    def _assign_suspect(self, seq: int, deadline_s: float) -> WorkerInfo | None:
        idle = next((i for i in self._free if not self._workers[i].jobs), None)
        if idle is None:
            return None
        info = self._workers[idle]
        info.jobs[seq] = deadline_s
        info.runs_suspect = True
        self._refile(info)
        return info

    def release(self, identity: bytes, seq: int) -> bool:
        """Take job `seq` back from a worker; False if that worker did not hold it."""
        info = self._workers.get(identity)
        if info is None or info.jobs.pop(seq, None) is None:
            return False
        info.started.discard(seq)
        info.runs_suspect = info.runs_suspect and bool(info.jobs)
        self._refile(info)
        return True

    def holder(self, seq: int) -> WorkerInfo | None:
        """The worker holding job `seq`, if any (a walk over the workers: for a cancel)."""
        return next((w for w in self._workers.values() if seq in w.jobs), None)

    def silent_since(self, cutoff_s: float) -> list[bytes]:
        """Workers not heard from since `cutoff_s`."""
        return [w.identity for w in self._workers.values() if w.last_seen_s < cutoff_s]

    def overdue(self, now_s: float) -> list[bytes]:
        """Workers holding a job past its lease."""
        return [
            w.identity for w in self._workers.values() if any(d < now_s for d in w.jobs.values())
        ]

    def in_flight(self) -> int:
        return sum(len(w.jobs) for w in self._workers.values())
