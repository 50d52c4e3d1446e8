"""What one peer may hold or be sent, so that a flood costs the broker bounded memory.

The broker's per-peer caps (docs/protocol.md, "Limits"): the clients waiting for jobs
(`Waiters`), and the bytes of answers and data chunks queued in one loop turn
(`Budget`). The caps on single messages (request id, job size, credit) are protocol
constants in protocol.messages.
"""

from __future__ import annotations

from collections import Counter

MAX_WAITERS_PER_PEER = 10_000
MAX_WAITERS = 100_000
PEER_ANSWER_BYTES_PER_TURN = 8 << 20  # answers to one client in one loop turn
ANSWER_BYTES_PER_TURN = 64 << 20  # answers to all clients in one loop turn
DATA_BYTES_PER_TURN = 4 << 20  # data chunks to all workers in one loop turn

Waiter = tuple[bytes, bytes]  # (peer identity, request tag)


class Budget:
    """Bytes queued this loop turn, per peer and in all, each under its own cap."""

    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer, self.total = per_peer, total
        self._used: Counter[bytes] = Counter()
        self._used_total = 0
        self._refused: set[bytes] = set()

    def take(self, peer: bytes, size: int) -> bool:
        """Count `size` more bytes for `peer` if both caps allow it; False otherwise."""
        if self._used[peer] + size > self.per_peer or self._used_total + size > self.total:
            self._refused.add(peer)
            return False
        self._used[peer] += size
        self._used_total += size
        return True

    def spent(self, peer: bytes) -> bool:
        """Whether `take` has refused `peer` this turn (or everyone is out of bytes)."""
        return peer in self._refused or self._used_total >= self.total

    def reset(self) -> None:
        self._used.clear()
        self._refused.clear()
        self._used_total = 0


class Waiters:
    """Who waits for which unfinished job, at most MAX_WAITERS_PER_PEER per peer and
    MAX_WAITERS in all (a peer's waits end with their job, or with the broker)."""

    def __init__(self) -> None:
        self._by_job: dict[int, set[Waiter]] = {}
        self._per_peer: Counter[bytes] = Counter()
        self.total = 0

    def add(self, seq: int, identity: bytes, tag: bytes) -> bool:
        """Register a wait for job `seq`; False if the peer (or everyone) is at the cap.
        The same peer and tag twice is one wait."""
        if self._per_peer[identity] >= MAX_WAITERS_PER_PEER or self.total >= MAX_WAITERS:
            return False
        waiting = self._by_job.setdefault(seq, set())
        if (identity, tag) not in waiting:
            waiting.add((identity, tag))
            self._per_peer[identity] += 1
            self.total += 1
        return True

    def restore(self, seq: int, waiters: set[Waiter]) -> None:
        """Register again waits that `pop` ended (their answer was rolled back): they
        were admitted once, so the caps do not turn them away now."""
        for identity, tag in waiters - self._by_job.get(seq, set()):
            self._by_job.setdefault(seq, set()).add((identity, tag))
            self._per_peer[identity] += 1
            self.total += 1

    def waiting(self, seq: int) -> bool:
        return seq in self._by_job

    def jobs(self) -> list[int]:
        """The jobs someone waits for."""
        return list(self._by_job)

    def pop(self, seq: int) -> set[Waiter]:
        """The waits for job `seq`, now over."""
        done = self._by_job.pop(seq, set())
        for identity, _tag in done:
            self._per_peer[identity] -= 1
            if not self._per_peer[identity]:
                del self._per_peer[identity]
        self.total -= len(done)
        return done
