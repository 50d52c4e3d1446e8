"""The broker's outbox grouping: several messages for one peer in a turn become a BATCH."""

from __future__ import annotations

from broker.broker import group_by_peer
from protocol import messages as m


def _to(peer: bytes, tag: bytes) -> list[bytes]:
    return m.route(peer, m.Pong("b" * 32), tag)


def test_messages_for_one_peer_become_one_batch_in_their_order() -> None:
    outbox = [_to(b"a", b"1"), _to(b"b", b"2"), _to(b"a", b"3"), _to(b"a", b"4")]
    sent = group_by_peer(outbox, max_bytes=1 << 20)
    assert [frames[0] for frames in sent] == [b"a", b"b"]
    to_a = m.messages_in(sent[0], routed=True)
    assert [m.decode(frames, routed=True).tag for frames in to_a] == [b"1", b"3", b"4"]
    assert sent[1] == outbox[1]  # alone: sent as itself


def test_a_single_message_is_untouched() -> None:
    outbox = [_to(b"a", b"1")]
    assert group_by_peer(outbox, max_bytes=1 << 20) == outbox


def test_batches_for_a_peer_respect_the_size_limit() -> None:
    outbox = [_to(b"a", str(n).encode()) for n in range(10)]
    one = sum(map(len, outbox[0][1:])) + m.BATCH_ITEM_OVERHEAD
    sent = group_by_peer(outbox, max_bytes=3 * one)
    counts = [len(m.messages_in(frames, routed=True)) for frames in sent]
    assert counts == [3, 3, 3, 1]
