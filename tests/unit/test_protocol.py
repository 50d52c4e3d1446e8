"""Round trips of every message type, and malformed frames turned into ProtocolError."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgpack
import pytest

from protocol import messages as m
from protocol.errors import ProtocolError

EXAMPLES: list[m.Message] = [
    m.Submit("req-1", "state_mean", {"question": "Q", "state": "Ohio"}),
    m.Submit("req-2", "best5", {"question": "Q"}, notify=True),
    m.Get("job_id_1"), m.Wait("job_id_2"), m.ListJobs(after=5, limit=10), m.NumJobs(),
    m.Shutdown(), m.Ping(), m.Stats(), m.Recent(5), m.Submitted("job_id_3"),
    m.JobState("job_id_3", "done", None, "ab" * 32), m.JobState("job_id_4", "error", "why"),
    m.JobList([["job_id_1", "done"]], next_after=None), m.JobCount(7), m.ShuttingDown(2),
    m.Pong("b" * 32), m.StatsReply({"queue_depth": 0}), m.ErrorReply("bad_request", "no"),
    m.RecentJobs([{"job_id": "job_id_1", "status": "done"}], []),
    m.Ready(4, "f" * 64, pid=12, host="h"), m.Job("global_mean", {"question": "Q"}),
    m.SuspectJob("global_mean", {"question": "Q"}), m.FrontJob("state_mean", {"question": "Q"}),
    m.Started(),
    m.Result("done", "f" * 64), m.Heartbeat(), m.Disconnect("shutdown"),
    m.FetchData(0, 1024), m.DataChunk(0, b"\x00\x01", 2, "f" * 64),
    m.LoadFailed("data.csv: missing required column(s) 'Question'", pid=12, host="h"),
    m.Submit("req-3", "best5", {"question": "Q"}, priority=0, deadline_ms=1500),
    m.Cancel("job_id_5"), m.Job("best5", {"question": "Q"}, deadline_ms=250), m.CancelJob(),
    m.JobState("job_id_5", "cancelled", "deadline passed"),
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


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda msg: type(msg).__name__)
def test_a_body_holds_exactly_the_fields_of_its_type(message: m.Message) -> None:
    names = [field.name for field in dataclasses.fields(message)]  # type: ignore[arg-type]
    assert list(msgpack.unpackb(m.body_of(message))) == names
    assert m.decode_body(type(message), m.body_of(message)) == message


def test_a_field_added_to_a_result_fails_its_decode_by_name() -> None:
    """A newer worker's RESULT with a field this peer does not know is refused, loudly;
    the broker then fails that job at once (test_hostile shows it end to end)."""
    newer = m.pack({"status": "done", "fingerprint": "f" * 64, "elapsed_s": 0.1})
    with pytest.raises(ProtocolError, match="Result has no field 'elapsed_s'"):
        m.decode(m.frames_of(m.Command.RESULT, b"job_id_1", newer))


def test_a_header_that_does_not_decode_still_names_its_command_and_tag() -> None:
    header = m.PROTOCOL_ID + bytes([m.Command.RESULT]) + b"job_id_7"
    assert (m.header_command(header), m.header_tag(header)) == (m.Command.RESULT, b"job_id_7")
    assert m.header_command(b"LSS2\x23job_id_7") is None
    assert m.header_command(m.PROTOCOL_ID) is None
    assert m.header_tag(header + b"x" * 1000) == b"job_id_7" + b"x" * (m.MAX_TAG_BYTES - 8)


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


SUBMIT = {"request_id": "r", "statistic": "s", "params": {}}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"priority": 10}, "Submit.priority is 10, outside 0..9"),
        ({"priority": -1}, "Submit.priority is -1, outside 0..9"),
        ({"priority": True}, "Submit.priority has the wrong type bool"),
        ({"priority": 4.0}, "Submit.priority has the wrong type float"),
        ({"deadline_ms": -5}, "Submit.deadline_ms is -5, outside 0..604800000"),
        ({"deadline_ms": m.MAX_DEADLINE_MS + 1}, "outside 0..604800000"),
        ({"deadline_ms": False}, "Submit.deadline_ms has the wrong type bool"),
    ],
)
def test_a_priority_or_deadline_out_of_range_is_refused(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        m.decode([GOOD_HEADER, body(SUBMIT | fields)])


def test_the_bounds_of_priority_and_deadline_are_accepted() -> None:
    for fields in ({"priority": 0, "deadline_ms": m.MAX_DEADLINE_MS}, {"priority": 9}):
        message = m.decode([GOOD_HEADER, body(SUBMIT | fields)]).message
        assert isinstance(message, m.Submit)
        assert (message.priority, message.deadline_ms) == (
            fields["priority"],
            fields.get("deadline_ms", 0),
        )
    job_body = body({"statistic": "s", "params": {}, "deadline_ms": -1})
    with pytest.raises(ProtocolError, match=r"Job\.deadline_ms is -1"):
        m.decode(m.frames_of(m.Command.JOB, b"job_id_1", job_body))


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


# --- BATCH ---------------------------------------------------------------------------


def test_a_batch_carries_messages_in_order_and_a_router_sees_the_identity_on_each() -> None:
    messages = [
        m.encode(m.Submit(f"r{n}", "best5", {"question": "Q"}, notify=True), str(n).encode())
        for n in range(3)
    ]
    (batched,) = m.batches(messages, max_bytes=1 << 20)
    assert batched[0] == m.BATCH_HEADER and len(batched) == 2
    assert m.messages_in(batched) == messages
    routed = m.messages_in([b"peer", *batched], routed=True)
    assert [m.decode(frames, routed=True).identity for frames in routed] == [b"peer"] * 3
    assert [m.decode(frames, routed=True).tag for frames in routed] == [b"0", b"1", b"2"]


def test_a_lone_message_is_sent_as_itself_and_received_as_itself() -> None:
    lone = m.encode(m.Ping(), b"7")
    assert m.batches([lone], max_bytes=10) == [lone]
    assert m.messages_in(lone) == [lone]
    assert m.messages_in([b"peer", *lone], routed=True) == [[b"peer", *lone]]


def test_batches_keep_under_the_size_limit_and_an_oversize_message_goes_alone() -> None:
    payloads = [bytes(100), bytes(100), bytes(100), bytes(1000), bytes(100)]
    messages = [m.encode(m.Result("done", "f"), b"t", payload) for payload in payloads]
    out = m.batches(messages, max_bytes=400)
    assert [len(m.messages_in(frames)) for frames in out] == [2, 1, 1, 1]
    batched = [frames for frames in out if frames[0] == m.BATCH_HEADER]
    assert batched and all(sum(map(len, frames)) <= 400 for frames in batched)
    assert [f for frames in out for f in m.messages_in(frames)] == messages  # order kept


def _batch_of(body: Any) -> list[bytes]:
    return [m.BATCH_HEADER, msgpack.packb(body, use_bin_type=True)]


BAD_BATCHES = [
    ("no body", [m.BATCH_HEADER]),
    ("an extra frame", [*_batch_of([[b"LSS1\x07", b"\x80"]]), b"x"]),
    ("body not msgpack", [m.BATCH_HEADER, b"\xc1"]),
    ("body a map", _batch_of({"a": 1})),
    ("empty", _batch_of([])),
    ("an item not a list", _batch_of([b"LSS1\x07"])),
    ("an item of one frame", _batch_of([[b"LSS1\x07"]])),
    ("an item of four frames", _batch_of([[b"LSS1\x07", b"\x80", b"", b""]])),
    ("a frame that is text", _batch_of([["LSS1\x07", b"\x80"]])),
    ("a batch in a batch", _batch_of([[m.BATCH_HEADER, b"\x90"]])),
    ("too many", _batch_of([[b"LSS1\x07", b"\x80"]] * (m.MAX_BATCH + 1))),
]


@pytest.mark.parametrize(("why", "frames"), BAD_BATCHES, ids=[why for why, _ in BAD_BATCHES])
def test_malformed_batches_raise_protocol_error(why: str, frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        m.messages_in(frames)
    with pytest.raises(ProtocolError):
        m.messages_in([b"peer", *frames], routed=True)


def test_a_bad_message_inside_a_batch_fails_only_its_own_decode() -> None:
    good = m.encode(m.Ping(), b"1")
    bad = [b"LSS1\x07", b"\xc1"]
    inside = m.messages_in(m.batch([good, bad]))
    assert m.decode(inside[0]).message == m.Ping()
    with pytest.raises(ProtocolError):
        m.decode(inside[1])


def test_decode_all_keeps_the_good_messages_of_a_batch_with_a_bad_one() -> None:
    good = [m.encode(m.Pong("b" * 32), b"1"), m.encode(m.JobCount(3), b"3")]
    envelopes, errors = m.decode_all(m.batch([good[0], [b"LSS1\x16", b"\xc1"], good[1]]))
    assert [e.tag for e in envelopes] == [b"1", b"3"] and len(errors) == 1
    envelopes, errors = m.decode_all([m.BATCH_HEADER, b"\xc1"])
    assert envelopes == [] and len(errors) == 1
    assert m.decode_all(good[1]) == ([m.Envelope(m.JobCount(3), tag=b"3")], [])


def test_a_submit_with_text_and_finite_numbers_has_no_problem() -> None:
    params = {"question": "Q é ✓", "state": "Ohio", "years": [2011, 2012.5], "x": {"y": None}}
    assert m.submit_problem(m.Submit("r-1", "state_mean", params)) is None


def test_deep_parameters_are_walked_without_recursion() -> None:
    deep: Any = float("nan")
    for _ in range(5000):
        deep = [deep]
    problem = m.submit_problem(m.Submit("r", "best5", {"question": "Q", "x": deep}))
    assert problem is not None and problem.endswith("is nan: numbers must be finite")
