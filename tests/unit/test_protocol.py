"""Round trips of every message type, and malformed frames turned into ProtocolError."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from protocol import messages as m
from protocol.errors import ProtocolError

EXAMPLES: list[m.Message] = [
    m.Submit("req-1", "state_mean", {"question": "Q", "state": "Ohio"}),
    m.Submit("req-2", "best5", {"question": "Q"}, notify=True),
    m.Get("job_id_1"), m.Wait("job_id_2"), m.ListJobs(after=5, limit=10), m.NumJobs(),
    m.Shutdown(), m.Ping(), m.Stats(), m.Submitted("job_id_3"),
    m.JobState("job_id_3", "done", None, "ab" * 32), m.JobState("job_id_4", "error", "why"),
    m.JobList([["job_id_1", "done"]], next_after=None), m.JobCount(7), m.ShuttingDown(2),
    m.Pong("b" * 32), m.StatsReply({"queue_depth": 0}), m.ErrorReply("bad_request", "no"),
    m.Ready(4, "f" * 64, pid=12, host="h"), m.Job("global_mean", {"question": "Q"}),
    m.Result("done", "f" * 64), m.Heartbeat(), m.Disconnect("shutdown"),
    m.FetchData(0, 1024), m.DataChunk(0, b"\x00\x01", 2, "f" * 64),
]  # fmt: skip


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda msg: type(msg).__name__)
def test_round_trip(message: m.Message) -> None:
    frames = m.encode(message, tag=b"42", payload=m.pack({"x": 1.5}))
    envelope = m.decode(frames)
    assert envelope.message == message
    assert envelope.tag == b"42"
    assert m.unpack(envelope.payload or b"") == {"x": 1.5}


def test_every_message_type_has_an_example() -> None:
    assert {type(msg) for msg in EXAMPLES} == set(m.MESSAGE_TYPES)


def test_router_side_sees_the_identity() -> None:
    envelope = m.decode(m.route(b"peer", m.Ping(), b"7"), routed=True)
    assert (envelope.identity, envelope.tag, envelope.message) == (b"peer", b"7", m.Ping())


def body(fields: dict[str, Any]) -> bytes:
    return msgpack.packb(fields)


GOOD_HEADER = m.PROTOCOL_ID + bytes([m.Command.SUBMIT]) + b"1"
MALFORMED: list[tuple[list[bytes], str]] = [
    ([], "expected 2 or 3 frames"),
    ([GOOD_HEADER], "expected 2 or 3 frames"),
    ([GOOD_HEADER, b"\x80", b"", b""], "expected 2 or 3 frames"),
    ([b"LSS2\x01", b"\x80"], "unsupported protocol"),
    ([b"HTTP/1.1 GET", b"\x80"], "unsupported protocol"),
    ([m.PROTOCOL_ID, b"\x80"], "no command byte"),
    ([m.PROTOCOL_ID + b"\xee", b"\x80"], "unknown command 0xee"),
    ([GOOD_HEADER, b"\xc1"], "not valid msgpack"),
    ([GOOD_HEADER, b"\x93\x01\x02\x03"], "must be a map"),
    ([GOOD_HEADER, body({"request_id": 1, "statistic": "s", "params": {}})], "wrong type int"),
    ([GOOD_HEADER, body({"request_id": "r", "statistic": "s", "params": []})], "wrong type list"),
    ([GOOD_HEADER, body({"request_id": "r", "statistic": "s", "params": {1: 2}})], "map key"),
    ([GOOD_HEADER, body({"request_id": "r", "statistic": "s"})], "missing"),
    ([GOOD_HEADER, body({"request_id": "r", "statistic": "s", "params": {}, "x": 1})], "no field"),
    (
        [GOOD_HEADER, body({"request_id": "r", "statistic": "s", "params": {}, "notify": 1})],
        "notify",
    ),
]


@pytest.mark.parametrize(("frames", "reason"), MALFORMED)
def test_malformed_frames_raise_protocol_error(frames: list[bytes], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        m.decode(frames)


def test_bad_version_and_unknown_command_have_their_codes() -> None:
    with pytest.raises(ProtocolError) as version:
        m.decode([b"LSS9\x01", b"\x80"])
    with pytest.raises(ProtocolError) as command:
        m.decode([m.PROTOCOL_ID + b"\x7f", b"\x80"])
    assert (version.value.code, command.value.code) == ("bad_version", "unknown_command")


def test_bool_is_not_an_int_and_ints_are_floats() -> None:
    with pytest.raises(ProtocolError):
        m.decode(m.frames_of(m.Command.JOB_COUNT, b"", body({"num_jobs": True})))
    ok = m.decode(m.frames_of(m.Command.FETCH_DATA, b"", body({"offset": 0, "length": 5})))
    assert ok.message == m.FetchData(0, 5)


def test_long_tags_are_refused() -> None:
    with pytest.raises(ProtocolError, match="tag"):
        m.encode(m.Ping(), tag=b"x" * (m.MAX_TAG_BYTES + 1))


@pytest.mark.parametrize(
    ("text", "seq"),
    [("job_id_1", 1), ("job_id_123", 123), ("job_id_0", None), ("job_id_01", None),
     ("job_id_", None), ("job_1", None), ("job_id_-1", None), ("job_id_\u0661", None), ("", None)],
)  # fmt: skip
def test_job_ids(text: str, seq: int | None) -> None:
    assert m.job_seq(text) == seq
    if seq is not None:
        assert m.job_id(seq) == text


def test_messages_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.Get("job_id_1").job_id = "job_id_2"  # type: ignore[misc]
