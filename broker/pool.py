"""The broker's view of its workers: who is alive, what each holds, who is next.

Dispatch is least-recently-used with credit: a worker offers `credit` job slots; the
workers with a free slot wait in a queue ordered by when they last got a job, so work
spreads across workers before any worker gets a second job, and a busy worker (no
free slot) is never given more.
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
        return 0 if self.runs_suspect else self.credit - len(self.jobs)

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
        if info.free_slots > 0:
            self._free[info.identity] = None
        return orphans

    def remove(self, identity: bytes) -> list[int]:
        """Forget a worker; return the jobs it held, oldest first."""
        info = self._workers.pop(identity, None)
        self._free.pop(identity, None)
        return sorted(info.jobs) if info else []

    def has_free(self) -> bool:
        return bool(self._free)

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
        info = self._workers[identity]
        info.jobs[seq] = now_s + lease_s * (len(info.jobs) + 1)
        if info.free_slots > 0:
            self._free[identity] = None
        return info

    def _assign_suspect(self, seq: int, deadline_s: float) -> WorkerInfo | None:
        idle = next((i for i in self._free if not self._workers[i].jobs), None)
        if idle is None:
            return None
        del self._free[idle]
        info = self._workers[idle]
        info.jobs[seq] = deadline_s
        info.runs_suspect = True
        return info

    def release(self, identity: bytes, seq: int) -> bool:
        """Take job `seq` back from a worker; False if that worker did not hold it."""
        info = self._workers.get(identity)
        if info is None or info.jobs.pop(seq, None) is None:
            return False
        info.started.discard(seq)
        info.runs_suspect = info.runs_suspect and bool(info.jobs)
        if identity not in self._free:
            self._free[identity] = None
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
