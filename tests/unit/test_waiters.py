"""broker.limits.Waiters: the caps on waits, and how the total is shared among peers."""

from __future__ import annotations

import random

from broker.limits import Waiters


def fill(waiters: Waiters, peer: bytes, count: int, seq: int = 1) -> None:
    for n in range(count):
        assert waiters.add(seq, peer, b"%s-%d" % (peer, n)).admitted


def test_a_peer_at_its_own_cap_is_refused_and_displaces_no_one() -> None:
    waiters = Waiters(per_peer=3, total=100)
    fill(waiters, b"a", 3)
    assert waiters.add(1, b"a", b"more") == (False, None)
    assert waiters.add(1, b"a", b"a-0").admitted  # the same wait again is the same wait
    assert waiters.total == 3


def test_peers_that_fill_the_total_lock_no_newcomer_out() -> None:
    waiters = Waiters(per_peer=10, total=20)
    fill(waiters, b"a", 10)
    fill(waiters, b"b", 10)
    admission = waiters.add(2, b"newcomer", b"n")
    assert admission == (True, (b"a", b"a-0"))  # the first largest holder's oldest wait
    assert waiters.total == 20 and waiters.held(b"a") == 9
    # Now b holds the most: the next newcomer takes b's oldest, not a's.
    assert waiters.add(2, b"other", b"o").displaced == (b"b", b"b-0")
    assert waiters.pop(1) == {(b"a", b"a-%d" % n) for n in range(1, 10)} | {
        (b"b", b"b-%d" % n) for n in range(1, 10)
    }
    assert waiters.pop(2) == {(b"newcomer", b"n"), (b"other", b"o")}
    assert waiters.total == 0


def test_a_largest_holder_cannot_displace_others_when_the_total_is_full() -> None:
    waiters = Waiters(per_peer=10, total=4)
    fill(waiters, b"a", 2)
    fill(waiters, b"b", 2)
    assert waiters.add(1, b"a", b"third") == (False, None)  # a and b hold as many
    assert waiters.add(1, b"c", b"c-0").displaced == (b"a", b"a-0")
    assert waiters.add(1, b"c", b"c-1").displaced == (b"b", b"b-0")  # c still held fewer
    assert waiters.add(1, b"c", b"c-2") == (False, None)  # now c holds the most
    assert (waiters.held(b"a"), waiters.held(b"b"), waiters.held(b"c")) == (1, 1, 2)


def test_restored_waits_pass_the_caps_and_count() -> None:
    waiters = Waiters(per_peer=1, total=1)
    fill(waiters, b"a", 1)
    ended = waiters.pop(1)
    waiters.add(2, b"b", b"b")
    waiters.restore(1, ended)
    assert waiters.total == 2 and waiters.held(b"a") == 1
    assert waiters.pop(1) == ended and waiters.total == 1


def test_against_a_plain_model_under_random_traffic() -> None:
    """The counts and displacements the indexes give match a brute-force recount."""
    rng = random.Random(10)
    waiters = Waiters(per_peer=6, total=15)
    held: dict[bytes, list[tuple[int, bytes]]] = {}  # peer -> its waits, oldest first
    for step in range(5000):
        peer, seq = b"p%d" % rng.randrange(8), rng.randrange(5)
        if rng.random() < 0.1:
            ended = waiters.pop(seq)
            for who, tag in ended:
                held[who].remove((seq, tag))
            continue
        tag = b"%d" % step
        most = max((len(w) for w in held.values()), default=0)
        mine = len(held.get(peer, []))
        admission = waiters.add(seq, peer, tag)
        full = sum(map(len, held.values())) >= 15
        assert admission.admitted == (mine < 6 and (not full or mine < most))
        if admission.displaced is not None:
            who, gone = admission.displaced
            assert len(held[who]) == most and held[who][0][1] == gone
            held[who].pop(0)
        if admission.admitted:
            held.setdefault(peer, []).append((seq, tag))
        assert waiters.total == sum(map(len, held.values())) <= 15
        assert all(waiters.held(p) == len(w) for p, w in held.items())
