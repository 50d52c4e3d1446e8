"""What one peer may hold or be sent, so that a flood costs the broker bounded memory.

The broker's per-peer caps (docs/protocol.md, "Limits"): the messages read from one
peer in a loop turn, the clients waiting for jobs (`Waiters`), and the bytes of answers
and data chunks queued in one loop turn (`Budget`). The caps on single messages
(request id, job size, credit) are protocol constants in protocol.messages.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import NamedTuple

MAX_WAITERS_PER_PEER = 10_000
PEER_MESSAGES_PER_TURN = 10_000  # more from one peer in one turn are dropped, and logged
MAX_WAITERS = 50_000  # 200-byte tags: ~35 MB of waits (docs/protocol.md, "Limits")
PEER_ANSWER_BYTES_PER_TURN = 8 << 20  # answers to one client in one loop turn
ANSWER_BYTES_PER_TURN = 64 << 20  # answers to all clients in one loop turn
DATA_BYTES_PER_TURN = 4 << 20  # data chunks to all workers in one loop turn
# A message up to this many times the message limit is read and refused with a reply;
# a larger one makes libzmq drop the connection.
HARD_LIMIT_FACTOR = 4
# Messages queued for one peer that does not read; more are dropped by ZeroMQ (ROUTER),
# so such a peer holds at most this many messages (each at most the message limit) in
# the broker. Peers that read never get near it: a turn sends a peer one message per
# message limit's worth of replies, and their ZeroMQ I/O thread reads them at once.
SEND_HWM = 16
# Messages read ahead from one peer (each up to HARD_LIMIT_FACTOR x the limit); a full
# queue only makes ZeroMQ stop reading that peer's connection until the loop catches up.
RECEIVE_HWM = 8

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


class Admission(NamedTuple):
    """What `Waiters.add` did: whether the wait was taken, and the wait it displaced."""

    admitted: bool
    displaced: Waiter | None = None


class Waiters:
    """Who waits for which unfinished job: at most `per_peer` waits per peer and `total`
    in all (a peer's waits end with their job, or with the broker).

    The total is shared fairly: when it is full, a peer holding fewer waits than the
    largest holder still gets its wait, and the largest holder's oldest wait ends (its
    peer is told `over_limit`). So peers that fill the total between them lock no one
    out; they only trade waits among themselves. Every operation is O(1) per wait.
    """

    def __init__(self, per_peer: int = MAX_WAITERS_PER_PEER, total: int = MAX_WAITERS) -> None:
        self.per_peer, self.cap = per_peer, total
        self._by_job: dict[int, set[Waiter]] = {}
        # Each peer's waits, oldest first, as (job, tag).
        self._by_peer: dict[bytes, OrderedDict[tuple[int, bytes], None]] = {}
        # Peers by how many waits they hold (each count's peers in the order they got
        # there), and the largest count held: the holder to displace is found at once.
        self._holding: dict[int, OrderedDict[bytes, None]] = {}
        self._most = 0
        self.total = 0

    def add(self, seq: int, identity: bytes, tag: bytes) -> Admission:
        """Register a wait for job `seq` (the same peer and tag twice is one wait). Refused
        when the peer is at `per_peer`, or when the total is full and no peer holds more
        waits than this one; else admitted, displacing the largest holder's oldest wait
        when the total is full."""
        if (seq, tag) in self._by_peer.get(identity, ()):
            return Admission(True)
        held = self.held(identity)
        if held >= self.per_peer:
            return Admission(False)
        displaced = None
        if self.total >= self.cap:
            if held >= self._most:  # this peer is (one of) the largest holders
                return Admission(False)
            displaced = self._displace()
        self._insert(seq, identity, tag)
        return Admission(True, displaced)

    def held(self, identity: bytes) -> int:
        """How many waits `identity` holds."""
        return len(self._by_peer.get(identity, ()))

    def restore(self, seq: int, waiters: set[Waiter]) -> None:
        """Register again waits that `pop` ended (their answer was rolled back): they
        were admitted once, so the caps do not turn them away now."""
        for identity, tag in waiters - self._by_job.get(seq, set()):
            self._insert(seq, identity, tag)

    def waiting(self, seq: int) -> bool:
        return seq in self._by_job

    def jobs(self) -> list[int]:
        """The jobs someone waits for."""
        return list(self._by_job)

    def pop(self, seq: int) -> set[Waiter]:
        """The waits for job `seq`, now over."""
        done = self._by_job.pop(seq, set())
        for identity, tag in done:
            self._forget(seq, identity, tag)
        return done

    def _displace(self) -> Waiter:
        """End the largest holder's oldest wait (the first peer to reach that count)."""
        identity = next(iter(self._holding[self._most]))
        seq, tag = next(iter(self._by_peer[identity]))
        waiting = self._by_job[seq]
        waiting.discard((identity, tag))
        if not waiting:
            del self._by_job[seq]
        self._forget(seq, identity, tag)
        return identity, tag

    def _insert(self, seq: int, identity: bytes, tag: bytes) -> None:
        self._by_job.setdefault(seq, set()).add((identity, tag))
        mine = self._by_peer.setdefault(identity, OrderedDict())
        mine[seq, tag] = None
        self._move(identity, len(mine) - 1, len(mine))
        self._most = max(self._most, len(mine))
        self.total += 1

    def _forget(self, seq: int, identity: bytes, tag: bytes) -> None:
        """Drop one wait from the peer's count (not from `_by_job`: the caller does)."""
        mine = self._by_peer[identity]
        del mine[seq, tag]
        self._move(identity, len(mine) + 1, len(mine))
        if not mine:
            del self._by_peer[identity]
        if self._most not in self._holding:  # the largest holder went down by one
            self._most -= 1
        self.total -= 1

    def _move(self, identity: bytes, old: int, new: int) -> None:
        if old:
            peers = self._holding[old]
            del peers[identity]
            if not peers:
                del self._holding[old]
        if new:
            self._holding.setdefault(new, OrderedDict())[identity] = None
