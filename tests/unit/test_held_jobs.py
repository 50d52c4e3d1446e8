"""The order in which a worker's compute thread takes the jobs it holds (workers.held):
in arrival order, front jobs before the others, on a real inproc pipe."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from workers.held import FRONT, STOP, SUSPECT, HeldJobs


@pytest.fixture
def pipe() -> Iterator[tuple[zmq.Socket[bytes], HeldJobs]]:
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    sender.bind("inproc://held-test")
    receiver.connect("inproc://held-test")
    try:
        yield sender, HeldJobs(receiver)
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        context.term()


def hand(sender: zmq.Socket[bytes], tag: bytes, mark: bytes = b"") -> None:
    sender.send_multipart([tag, b"body", b"conn", mark, b"received"])


def taken(held: HeldJobs, count: int) -> list[bytes]:
    return [held.next()[0] for _ in range(count)]


def test_front_jobs_run_before_the_held_jobs_that_are_not(
    pipe: tuple[zmq.Socket[bytes], HeldJobs],
) -> None:
    sender, held = pipe
    for tag, mark in [(b"a1", b""), (b"a2", SUSPECT), (b"b1", FRONT), (b"a3", b""), (b"c1", FRONT)]:
        hand(sender, tag, mark)
    assert taken(held, 5) == [b"b1", b"c1", b"a1", b"a2", b"a3"]
    hand(sender, b"a4")
    assert held.next()[0] == b"a4", "one job alone: taken at once"


def test_the_stop_message_waits_for_the_jobs_before_it(
    pipe: tuple[zmq.Socket[bytes], HeldJobs],
) -> None:
    sender, held = pipe
    hand(sender, b"a1")
    hand(sender, b"a2")
    sender.send_multipart([STOP, b"", b"", b"", b""])
    hand(sender, b"late", FRONT)
    assert taken(held, 4) == [b"late", b"a1", b"a2", STOP]
