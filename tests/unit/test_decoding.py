"""Bounded decoding: a hostile frame is refused for little CPU, a legitimate one still reads.

The hostile frames are 1 MiB (the default message cap), built to cost a decoder that
builds everything first the most per byte: empty arrays (a list each, and garbage
collector work), nested so that every array is short, or shaped like BATCH items.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgpack
import pytest

from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.logs import shown

MIB = 1 << 20
CPU_BUDGET_S = 0.005  # per hostile 1 MiB message, the broker's reading of it
PING = m.PROTOCOL_ID + bytes([m.Command.PING]) + b"t"
SUBMIT = m.PROTOCOL_ID + bytes([m.Command.SUBMIT]) + b"t"
RESULT = m.PROTOCOL_ID + bytes([m.Command.RESULT]) + b"job_id_1"


def array_of(count: int, item: bytes) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big") + item * count


def a_mib_of(item: bytes, overhead: int = 64) -> bytes:
    """An array of as many `item`s as fill a MiB (less `overhead` for the other frames)."""
    return array_of((MIB - overhead) // len(item), item)


EMPTY_ARRAYS = a_mib_of(b"\x90")
SHORT_ARRAYS = a_mib_of(b"\x9f" + b"\x90" * 15)  # each array within any length limit
FRAME_LIKE = a_mib_of(b"\x92\xc4\x00\xc4\x00")  # items of two empty binaries...
NESTED_BATCHES = array_of(1043, array_of(200, b"\x92\xc4\x00\xc4\x00"))  # ...one level down
MAPS = a_mib_of(b"\x81\xa1k\x80")
DEEP = b"\x91" * (MIB - 64) + b"\xc0"
PARAMS = b"\x81\xa6params\x81\xa1x"  # {"params": {"x": ...

HOSTILE: list[tuple[str, list[bytes]]] = [
    ("a BATCH of empty arrays", [m.BATCH_HEADER, EMPTY_ARRAYS]),
    ("a BATCH of short arrays", [m.BATCH_HEADER, SHORT_ARRAYS]),
    ("a BATCH of too many items", [m.BATCH_HEADER, FRAME_LIKE]),
    ("a BATCH of BATCH-like lists", [m.BATCH_HEADER, NESTED_BATCHES]),
    ("a BATCH of maps", [m.BATCH_HEADER, MAPS]),
    ("a BATCH nested deep", [m.BATCH_HEADER, DEEP]),
    ("a PING body of empty arrays", [PING, EMPTY_ARRAYS]),
    ("a PING body of short arrays", [PING, b"\x81\xa1x" + SHORT_ARRAYS]),
    ("a SUBMIT whose params hold short arrays", [SUBMIT, PARAMS + SHORT_ARRAYS]),
    ("a SUBMIT nested deep", [SUBMIT, PARAMS + DEEP]),
    ("a RESULT body of maps", [RESULT, MAPS]),
]  # fmt: skip


def read_like_the_broker(frames: list[bytes]) -> None:
    """What the broker does with a message from a peer: unpack a BATCH, decode each."""
    for message in m.messages_in([b"peer", *frames], routed=True):
        m.decode(message, routed=True)


def cpu_s(action: Callable[[], object]) -> float:
    """The least CPU time of three runs of `action` (which must raise ProtocolError)."""
    spent = []
    for _ in range(3):
        started = time.process_time()
        with pytest.raises(ProtocolError):
            action()
        spent.append(time.process_time() - started)
    return min(spent)


@pytest.mark.parametrize(("why", "frames"), HOSTILE, ids=[why for why, _ in HOSTILE])
def test_a_hostile_mib_is_refused_for_little_cpu(why: str, frames: list[bytes]) -> None:
    assert 0.99 * MIB < sum(map(len, frames)) <= MIB
    assert cpu_s(lambda: read_like_the_broker(frames)) < CPU_BUDGET_S


def test_a_worker_reads_a_hostile_batch_for_little_cpu() -> None:
    assert cpu_s(lambda: m.messages_in([m.BATCH_HEADER, SHORT_ARRAYS])) < CPU_BUDGET_S


def test_the_broker_checks_a_hostile_answer_for_little_cpu() -> None:
    answer = b"\x81\xa1x" + EMPTY_ARRAYS
    started = time.process_time()
    assert m.is_answer(answer)  # well-formed: the broker stores it; clients refuse it
    assert time.process_time() - started < CPU_BUDGET_S
    assert cpu_s(lambda: m.unpack(answer)) < CPU_BUDGET_S


def test_a_full_batch_still_reads() -> None:
    messages = [m.encode(m.Ping(), b"%d" % i) for i in range(m.MAX_BATCH)]
    assert m.messages_in(m.batch(messages)) == messages


@pytest.mark.parametrize(
    "message",
    [
        m.JobList([[m.job_id(seq), "done"] for seq in range(1, m.MAX_LIST_PAGE + 1)], None),
        m.RecentJobs(
            [{"job_id": "j", "params": {"question": "q", "years": [2011, 2015]}}] * m.MAX_RECENT,
            [{"job_id": "j", "reason": "\U0001f600" * m.MAX_REASON_CHARS}] * m.MAX_RECENT,
        ),
        m.StatsReply({"latency": {"best5": {"compute": {"le": [0.1, 1.0], "count": 3}}}}),
        m.DataChunk(0, b"x" * (256 * 1024), 1, "f" * 64),
        m.Submit("r" * m.MAX_REQUEST_ID_CHARS, "state_mean", {"question": "q" * m.MAX_JOB_BYTES}),
        m.Submit("r", "state_mean", {"question": "q", "state": "Ohio", "years": [2015, 2020]}),
        m.Result("error", "f" * 64, shown("\U0001f600" * 5000, m.MAX_REASON_CHARS)),
    ],
    ids=lambda message: type(message).__name__,
)
def test_the_largest_legitimate_bodies_still_read(message: m.Message) -> None:
    assert m.decode_body(type(message), m.body_of(message)) == message


REFUSED_BODIES: list[tuple[str, type[m.Message], bytes, str]] = [
    ("a string longer than a job", m.Submit,
     msgpack.packb({"request_id": "r", "statistic": "x" * (m.MAX_JOB_BYTES + 1), "params": {}}),
     "too_large"),
    ("a string longer than any", m.Result,
     msgpack.packb({"status": "error", "fingerprint": "f", "reason": "x" * (m.MAX_STR_BYTES + 1)}),
     "too_large"),
    ("binary data outside DATA_CHUNK", m.Ready,
     msgpack.packb({"credit": 1, "fingerprint": b"f"}, use_bin_type=True), "bad_request"),
    ("a long list in params", m.Submit,
     msgpack.packb({"request_id": "r", "statistic": "x", "params": {"years": list(range(17))}}),
     "too_large"),
    ("many maps in params", m.Submit,
     msgpack.packb({"request_id": "r", "statistic": "x", "params": {str(i): {} for i in range(8)}}),
     "too_large"),
    ("nesting deeper than any message", m.StatsReply,
     msgpack.packb({"stats": {"a": [[[[[[[[1]]]]]]]]}}), "bad_request"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("why", "cls", "body", "code"), REFUSED_BODIES, ids=[why for why, *_ in REFUSED_BODIES]
)
def test_a_body_past_the_protocols_caps_is_refused(
    why: str, cls: type[m.Message], body: bytes, code: str
) -> None:
    with pytest.raises(ProtocolError) as refused:
        m.decode_body(cls, body)
    assert refused.value.code == code


def test_an_answer_is_a_map_of_numbers_or_of_maps_of_numbers() -> None:
    by_state = {"Ohio": {"Age (years): 18 - 24": 30.5}}
    assert m.unpack(m.pack(by_state)) == by_state
    for refused in ({"Ohio": {"Age": {"18 - 24": 30.5}}}, {"Ohio": [30.5]}, {"k": b"\x00"}):
        with pytest.raises(ProtocolError):
            m.unpack(msgpack.packb(refused, use_bin_type=True))


@pytest.mark.parametrize(
    ("payload", "whole"),
    [
        (m.pack({"a": 1.5}), True),
        (m.pack({}), True),
        (m.pack([1.5]), False),
        (m.pack({"a": 1.5}) + b"\xc0", False),  # something after the map
        (m.pack({"a": 1.5})[:-1], False),  # cut short
        (b"\x81\xa1a" + b"\x91" * 5000 + b"\xc0", False),  # deeper than msgpack's decoder goes
        (b"", False),
    ],
    ids=["a map", "an empty map", "a list", "a map and more", "cut short", "too deep", "empty"],
)
def test_the_broker_takes_an_answer_only_if_it_is_one_whole_map(
    payload: bytes, whole: bool
) -> None:
    assert m.is_answer(payload) is whole
