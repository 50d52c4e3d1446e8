"""Client requests read and not served yet: per peer, taken in fair shares.

The broker's loop serves client requests in slices of bounded time (broker.broker), so
that a BATCH of 10,000 requests does not hold back worker heartbeats and every other
client for as long as serving it takes. What a slice leaves waits here, each peer's
requests in order; `take` gives each waiting peer an equal share, so a lone PING waits
behind one share of a flood, not behind all of it. A peer holds at most
PEER_MESSAGES_PER_TURN requests here (broker.limits): the broker drops more; and the
broker reads no more while BACKLOG_BYTES wait here (the rest wait in ZeroMQ's queues).

A lone request (its peer's only one waiting, from a producer with nothing unfinished: a
one-call) is also listed apart, and `take_lone` gives those first, so that the loop can
serve them before the slice and again in the middle of a turn (broker.broker).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from broker.access import Caller
from protocol.messages import BATCH_HEADER

BACKLOG_BYTES = 16 << 20  # of requests waiting, in all: past it, the broker reads no more
# Lone requests listed at most: past it, a lone request waits for its peer's share too.
LONE_LISTED = 1024
Request = tuple[list[bytes], Caller]
"""A request as read (its frames, decoded when it is served) and who sent it."""


def announced(routed: list[bytes]) -> int:
    """How many messages a received frame list says it carries: a BATCH's count as its
    body's msgpack array header gives it (unchecked: unpacking it checks), else 1. A
    flood over its share is dropped on this, without the cost of unpacking it."""
    if len(routed) != 3 or routed[1] != BATCH_HEADER or not routed[2]:
        return 1
    body = routed[2]
    if 0x90 <= body[0] <= 0x9F:  # fixarray
        return body[0] & 0x0F
    width = {0xDC: 2, 0xDD: 4}.get(body[0], 0)  # array 16, array 32
    return int.from_bytes(body[1 : 1 + width], "big") if width else 1


class ClientBacklog:
    """Requests by peer, in the order they were read; peers in turn."""

    def __init__(self) -> None:
        self._by_peer: OrderedDict[bytes, deque[Request]] = OrderedDict()
        # Peers whose one request came alone, unlisted when their requests are taken.
        self._lone: OrderedDict[bytes, None] = OrderedDict()
        self._size = 0
        self.bytes = 0  # the frames' bytes of the requests waiting

    def __len__(self) -> int:
        return self._size

    def held(self, peer: bytes) -> int:
        """Requests of `peer` waiting here."""
        queue = self._by_peer.get(peer)
        return len(queue) if queue is not None else 0

    def add(self, peer: bytes, requests: list[Request], lone: bool = False) -> None:
        """Add `peer`'s `requests`; `lone`: its producer has nothing unfinished, so one
        request with none of the peer's waiting is listed for `take_lone`."""
        if lone and len(requests) == 1 and peer not in self._by_peer and self._room():
            self._lone[peer] = None
        self._by_peer.setdefault(peer, deque()).extend(requests)
        self._size += len(requests)
        self.bytes += sum(len(frame) for frames, _ in requests for frame in frames)

    def _room(self) -> bool:
        return len(self._lone) < LONE_LISTED

    def take_lone(self, limit: int) -> list[Request]:
        """Up to `limit` lone requests, in the order they came: each listed peer's one
        request, if it is still alone (else the peer waits for its share in `take`)."""
        taken: list[Request] = []
        while self._lone and len(taken) < limit:
            peer, _ = self._lone.popitem(last=False)
            queue = self._by_peer.get(peer)
            if queue is not None and len(queue) == 1:
                del self._by_peer[peer]
                taken.append(queue[0])
        self._size -= len(taken)
        self.bytes -= sum(len(frame) for frames, _ in taken for frame in frames)
        return taken

    def full(self, most: int) -> bool:
        """Whether `most` requests, or BACKLOG_BYTES, wait: the broker reads no more."""
        return self._size >= most or self.bytes >= BACKLOG_BYTES

    def take(self, limit: int) -> list[Request]:
        """Up to `limit` requests: an equal share from each waiting peer, in turn (a
        peer served last goes to the back), each peer's in order."""
        taken: list[Request] = []
        while self._by_peer and len(taken) < limit:
            share = max(1, (limit - len(taken)) // len(self._by_peer))
            for peer in list(self._by_peer):
                queue = self._by_peer[peer]
                for _ in range(min(share, len(queue), limit - len(taken))):
                    taken.append(queue.popleft())
                if queue:
                    self._by_peer.move_to_end(peer)
                else:
                    del self._by_peer[peer]
                    self._lone.pop(peer, None)
                if len(taken) >= limit:
                    break
        self._size -= len(taken)
        self.bytes -= sum(len(frame) for frames, _ in taken for frame in frames)
        return taken
