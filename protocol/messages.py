"""Message types of the LSS wire protocol and their encoding (spec: docs/protocol.md).

This module owns the shape of every message that crosses a socket. A message is a
frozen dataclass with a fixed one-byte command; `encode()` turns it into the frames a
DEALER sends, `decode()` turns received frames back into an `Envelope`, raising
`ProtocolError` for anything malformed. No other module builds frames by hand.

Frames, as a DEALER sends them (a ROUTER sees the peer identity in front):

    [header, body, payload?]        header = PROTOCOL_ID + command (1 byte) + tag

`tag` is the client's correlation id (requests and their replies) or the job id (JOB,
RESULT); `body` is a msgpack map of the dataclass fields; `payload` is an optional
msgpack frame (a job's answer) that the broker stores and forwards without decoding.
Protocol id, command and tag share one frame because every frame costs the broker
several microseconds in pyzmq (docs/protocol.md has the measurement). For the same
reason a peer with several messages for the same peer at once may send them as one
BATCH (`batches`); every receiver unpacks it with `messages_in` before `decode`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union

import msgpack

from protocol import config
from protocol.decoding import Limits, frame_lists, is_whole_map, unpack_within
from protocol.errors import ProtocolError
from protocol.logs import shown

STATISTICS = (
    "states_mean",
    "state_mean",
    "best5",
    "worst5",
    "global_mean",
    "diff_from_mean",
    "state_diff_from_mean",
    "mean_by_category",
    "state_mean_by_category",
    "state_trend",
)
"""The statistics of docs/statistics.md: the original service's nine in its order, then ours."""
STATE_STATISTICS = frozenset(
    {"state_mean", "state_diff_from_mean", "state_mean_by_category", "state_trend"}
)
"""The statistics that take a `state` besides the `question`."""

PROTOCOL_ID = b"LSS1"
PROTOCOL_VERSION = 1
MAX_TAG_BYTES = 255
MAX_BATCH = 10_000
"""The most messages one BATCH may carry."""
MAX_REQUEST_ID_CHARS = 128
"""The longest `Submit.request_id` (clients send a 32-character UUID)."""
MAX_JOB_BYTES = 4096
"""The largest encoded job (statistic and parameters; real ones take about 200 bytes)."""
MAX_WORKER_CREDIT = 64
"""The most job slots a worker may offer; a larger `Ready.credit` is cut to this."""
MAX_REASON_CHARS = 1000
"""The longest error reason a worker sends (the broker cuts longer ones too)."""
MAX_STATISTIC_CHARS = 128
"""The longest statistic name a `ListJobs` filter may name."""
MAX_RECENT = 100
"""The most jobs (and failures) one RECENT reply lists."""
MAX_STR_BYTES = 4 * MAX_REASON_CHARS + 256
"""The longest string in a body, in bytes: a worker's reason of MAX_REASON_CHARS
characters (up to 4 bytes each in UTF-8) with the mark of its cut; more than a job."""
MAX_LIST_PAGE = 10_000
"""The most jobs one JOB_LIST page lists."""
MAX_STATS_WORKERS = 1024
"""The most workers one STATS_REPLY lists (`workers_registered` counts them all): each a
map of short fields, so the reply stays within StatsReply's decoding limits below and
within what a client reads (a few hundred bytes a worker, about 1.5 KB at most)."""
MAX_NESTING = 8
"""The deepest nesting of maps and lists in any frame (STATS_REPLY's histograms: 6)."""
MAX_ANSWER_ITEMS = 65_536
"""The most entries of one map in a job's answer (the real data's largest has ~2,000)."""
BATCH_ITEM_OVERHEAD = 16
"""Bytes a message adds to a BATCH beyond its frames (msgpack array and bin headers)."""


class Command(enum.IntEnum):
    """One-byte commands. 0x0_: client requests, 0x1_: broker replies, 0x2_: workers,
    0x3_: transport (BATCH, which any peer may send and every peer must accept)."""

    SUBMIT = 0x01
    GET = 0x02
    WAIT = 0x03
    LIST_JOBS = 0x04
    NUM_JOBS = 0x05
    SHUTDOWN = 0x06
    PING = 0x07
    STATS = 0x08
    RECENT = 0x09
    CANCEL = 0x0A
    SUBMITTED = 0x11
    JOB_STATE = 0x12
    JOB_LIST = 0x13
    JOB_COUNT = 0x14
    SHUTTING_DOWN = 0x15
    PONG = 0x16
    STATS_REPLY = 0x17
    RECENT_JOBS = 0x18
    ERROR = 0x1F
    READY = 0x21
    JOB = 0x22
    RESULT = 0x23
    HEARTBEAT = 0x24
    DISCONNECT = 0x25
    FETCH_DATA = 0x26
    DATA_CHUNK = 0x27
    SUSPECT_JOB = 0x28
    STARTED = 0x29
    LOAD_FAILED = 0x2A
    CANCEL_JOB = 0x2B
    FRONT_JOB = 0x2C
    BATCH = 0x30


class JobStatus(enum.StrEnum):
    """A job's status as clients see it (queued and in-flight jobs are both RUNNING).
    DONE, ERROR and CANCELLED are final."""

    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


REASON_CANCELLED = "cancelled"
"""A CANCELLED job's reason when its owner (or an admin) cancelled it."""
REASON_DEADLINE = "deadline passed"
"""A CANCELLED job's reason when it had not started by its deadline."""
MIN_PRIORITY = 0
"""The first priority served (within one producer's jobs)."""
MAX_PRIORITY = 9
"""The last priority served."""
DEFAULT_PRIORITY = 4
MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000
"""The longest deadline a submit may set (7 days); 0 sets none."""


def _within(low: int, high: int) -> Any:
    """Field metadata: the decoder refuses an int outside [low, high] (see `_checks_of`)."""
    return {"range": (low, high)}


class ErrorCode(enum.StrEnum):
    """Machine-readable reasons carried by `ErrorReply.code`."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_VERSION = "bad_version"
    INVALID_JOB_ID = "invalid_job_id"
    EXPIRED = "expired"
    QUEUE_FULL = "queue_full"
    SHUTTING_DOWN = "shutting_down"
    TOO_LARGE = "too_large"
    UNKNOWN_WORKER = "unknown_worker"
    INTERNAL = "internal"
    STORAGE = "storage"
    FORBIDDEN = "forbidden"
    OVER_LIMIT = "over_limit"
    NO_WORKER = "no_worker"


class Message:
    """Base of all message dataclasses; `COMMAND` ties a class to its command byte."""

    COMMAND: ClassVar[Command]


# --- client -> broker -------------------------------------------------------------


@dataclass(frozen=True)
class Submit(Message):
    """Create a job. `request_id` makes retries idempotent: same id, same job.

    Answered by `Submitted`; with `notify`, answered instead by the job's final
    `JobState` (which names the job) once it has finished: one round trip per job.
    """

    COMMAND: ClassVar[Command] = Command.SUBMIT
    request_id: str
    statistic: str
    params: dict[str, Any]
    notify: bool = False
    priority: int = dataclasses.field(
        default=DEFAULT_PRIORITY, metadata=_within(MIN_PRIORITY, MAX_PRIORITY)
    )
    """0 runs first, 9 last; it orders the submitting producer's own jobs only."""
    deadline_ms: int = dataclasses.field(default=0, metadata=_within(0, MAX_DEADLINE_MS))
    """0: none; else the job must start within this many ms of the broker receiving the
    submit, or it ends CANCELLED with the reason "deadline passed" and never runs."""


@dataclass(frozen=True)
class Get(Message):
    """Ask for a job's status (and answer, in the payload frame, once done)."""

    COMMAND: ClassVar[Command] = Command.GET
    job_id: str


@dataclass(frozen=True)
class Wait(Message):
    """Like `Get`, but the broker replies only once the job has finished."""

    COMMAND: ClassVar[Command] = Command.WAIT
    job_id: str


@dataclass(frozen=True)
class Cancel(Message):
    """Cancel a job: answered by its `JobState` once the cancel is committed (CANCELLED,
    or DONE/ERROR when it had finished first); unknown or another key's: invalid_job_id."""

    COMMAND: ClassVar[Command] = Command.CANCEL
    job_id: str


@dataclass(frozen=True)
class ListJobs(Message):
    """One page of the job list: up to `limit` jobs whose number is above `after`; only
    those in `status` (a `JobStatus` value) and of `statistic`, when given."""

    COMMAND: ClassVar[Command] = Command.LIST_JOBS
    after: int = 0
    limit: int = MAX_LIST_PAGE
    status: str | None = None
    statistic: str | None = None


@dataclass(frozen=True)
class NumJobs(Message):
    """Count the jobs accepted and not yet finished."""

    COMMAND: ClassVar[Command] = Command.NUM_JOBS


SHUTDOWN_BROKER = "broker"
SHUTDOWN_ALL = "all"
SHUTDOWN_SCOPES = (SHUTDOWN_BROKER, SHUTDOWN_ALL)


@dataclass(frozen=True)
class Shutdown(Message):
    """Start a graceful shutdown: of the broker that reads it (`scope` "broker"), or of
    every broker sharing its store (`scope` "all"; the same with one broker)."""

    COMMAND: ClassVar[Command] = Command.SHUTDOWN
    scope: str = SHUTDOWN_BROKER


@dataclass(frozen=True)
class Ping(Message):
    """Liveness probe; clients also use it as their heartbeat."""

    COMMAND: ClassVar[Command] = Command.PING


@dataclass(frozen=True)
class Stats(Message):
    """Ask for the broker's metrics."""

    COMMAND: ClassVar[Command] = Command.STATS


@dataclass(frozen=True)
class Recent(Message):
    """Ask for the newest jobs and the newest failures (at most `limit` of each)."""

    COMMAND: ClassVar[Command] = Command.RECENT
    limit: int = 20


# --- broker -> client -------------------------------------------------------------


@dataclass(frozen=True)
class Submitted(Message):
    """The job is committed to the store under `job_id` (docs/protocol.md, Durability)."""

    COMMAND: ClassVar[Command] = Command.SUBMITTED
    job_id: str


@dataclass(frozen=True)
class JobState(Message):
    """A job's status; a done job's answer travels in the payload frame."""

    COMMAND: ClassVar[Command] = Command.JOB_STATE
    job_id: str
    status: str
    reason: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class JobList(Message):
    """A page of `[job_id, status]` pairs; `next_after` is None on the last page."""

    COMMAND: ClassVar[Command] = Command.JOB_LIST
    jobs: list[Any]
    next_after: int | None = None


@dataclass(frozen=True)
class JobCount(Message):
    """Number of jobs accepted and not yet finished."""

    COMMAND: ClassVar[Command] = Command.JOB_COUNT
    num_jobs: int


@dataclass(frozen=True)
class ShuttingDown(Message):
    """Shutdown acknowledged; `pending` jobs are still to finish."""

    COMMAND: ClassVar[Command] = Command.SHUTTING_DOWN
    pending: int


@dataclass(frozen=True)
class Pong(Message):
    """Reply to `Ping`. `broker_id` changes at every broker start; `pid` is the broker
    process's (so that whoever started it can tell it answers, not another broker)."""

    COMMAND: ClassVar[Command] = Command.PONG
    broker_id: str
    version: int = PROTOCOL_VERSION
    shutting_down: bool = False
    pid: int = 0


@dataclass(frozen=True)
class StatsReply(Message):
    """Broker metrics: workers, queue depth, jobs by status, recent rates."""

    COMMAND: ClassVar[Command] = Command.STATS_REPLY
    stats: dict[str, Any]


@dataclass(frozen=True)
class RecentJobs(Message):
    """Newest first, from the store: each a map of job_id, statistic, params, status,
    reason, created_s and finished_s (broker clock, Unix seconds; None while running)."""

    COMMAND: ClassVar[Command] = Command.RECENT_JOBS
    jobs: list[Any]
    failures: list[Any]


@dataclass(frozen=True)
class ErrorReply(Message):
    """A request that could not be served; `code` is an `ErrorCode` value. A broker on a
    shared store sets `retry_after_ms` on a refusal that passes (`storage`) or that
    another broker would not make (`shutting_down`): the same request may be sent again
    after that long, or at once to another broker (docs/protocol.md, "Several brokers")."""

    COMMAND: ClassVar[Command] = Command.ERROR
    code: str
    reason: str
    retry_after_ms: int = 0


# --- workers <-> broker -----------------------------------------------------------


@dataclass(frozen=True)
class Ready(Message):
    """A worker (re)registers, offering `credit` job slots, with its data fingerprint."""

    COMMAND: ClassVar[Command] = Command.READY
    credit: int
    fingerprint: str
    pid: int = 0
    host: str = ""


@dataclass(frozen=True)
class Job(Message):
    """Work for a worker; the tag frame carries the job id. With `deadline_ms`, a worker
    that has not started the job that many ms after receiving it answers CANCELLED
    ("deadline passed") instead of computing it."""

    COMMAND: ClassVar[Command] = Command.JOB
    statistic: str
    params: dict[str, Any]
    deadline_ms: int = dataclasses.field(default=0, metadata=_within(0, MAX_DEADLINE_MS))


@dataclass(frozen=True)
class SuspectJob(Job):
    """A job whose workers were lost twice (docs/protocol.md, "Leases and poison jobs"):
    the worker computes it only once `Started` went to the broker and came back, so that
    the broker blames it for a lost worker only if it was the job running."""

    COMMAND: ClassVar[Command] = Command.SUSPECT_JOB


@dataclass(frozen=True)
class FrontJob(Job):
    """A job whose producer has no other job running, sent to a worker that holds other
    jobs: the worker runs it before those of them that are not front jobs, so that a
    one-call is not queued behind a bulk producer's jobs already on the worker (as
    FQ-CoDel serves a new flow first; docs/protocol.md, "Fair producers")."""

    COMMAND: ClassVar[Command] = Command.FRONT_JOB


@dataclass(frozen=True)
class Started(Message):
    """Worker: it is about to compute the suspect job in the tag, alone; broker: noted."""

    COMMAND: ClassVar[Command] = Command.STARTED


@dataclass(frozen=True)
class CancelJob(Message):
    """Broker: the job in the tag is cancelled. A worker that has not started it drops it
    and answers RESULT CANCELLED; one computing it answers as usual (the broker drops
    that answer). Every JOB a worker gets is answered by exactly one RESULT."""

    COMMAND: ClassVar[Command] = Command.CANCEL_JOB


@dataclass(frozen=True)
class LoadFailed(Message):
    """A worker cannot load the data (`reason`: the file and what is wrong with it); it
    says so instead of registering, then exits (docs/protocol.md, "Workers")."""

    COMMAND: ClassVar[Command] = Command.LOAD_FAILED
    reason: str
    pid: int = 0
    host: str = ""


@dataclass(frozen=True)
class Result(Message):
    """A worker's outcome for the job in the tag frame; answer in the payload frame."""

    COMMAND: ClassVar[Command] = Command.RESULT
    status: str
    fingerprint: str
    reason: str | None = None


@dataclass(frozen=True)
class Heartbeat(Message):
    """Sent both ways when a side has had nothing else to say for an interval."""

    COMMAND: ClassVar[Command] = Command.HEARTBEAT


@dataclass(frozen=True)
class Disconnect(Message):
    """The sender is leaving (worker) or drops the peer (broker)."""

    COMMAND: ClassVar[Command] = Command.DISCONNECT
    reason: str = ""


@dataclass(frozen=True)
class FetchData(Message):
    """A worker without the data file asks for `length` bytes at `offset`."""

    COMMAND: ClassVar[Command] = Command.FETCH_DATA
    offset: int
    length: int


@dataclass(frozen=True)
class DataChunk(Message):
    """A piece of the service's data file, with the whole file's size and SHA-256."""

    COMMAND: ClassVar[Command] = Command.DATA_CHUNK
    offset: int
    data: bytes
    total_bytes: int
    fingerprint: str


MESSAGE_TYPES: tuple[type[Message], ...] = (
    Submit, Get, Wait, ListJobs, NumJobs, Shutdown, Ping, Stats, Recent, Cancel,
    Submitted, JobState, JobList, JobCount, ShuttingDown, Pong, StatsReply, RecentJobs, ErrorReply,
    Ready, Job, SuspectJob, FrontJob, Started, Result, Heartbeat, Disconnect, FetchData, DataChunk,
    LoadFailed, CancelJob,
)  # fmt: skip
_BY_COMMAND: dict[int, type[Message]] = {cls.COMMAND: cls for cls in MESSAGE_TYPES}

# What a body may hold (protocol.decoding): a map of its fields, no string longer than a
# worker's longest reason, and (Submit's and Job's `params`) a map of a few parameters, one of them
# perhaps a short list. The three replies whose size a client chooses, and DATA_CHUNK's
# data, may hold more.
BODY_LIMITS = Limits(
    max_str_bytes=MAX_STR_BYTES, max_bin_bytes=0, max_array_items=16, max_map_items=16,
    max_containers=8, max_depth=MAX_NESTING,
)  # fmt: skip
_BODY_LIMITS: dict[type[Message], Limits] = {
    JobList: dataclasses.replace(
        BODY_LIMITS, max_array_items=MAX_LIST_PAGE, max_containers=MAX_LIST_PAGE + 2
    ),
    RecentJobs: dataclasses.replace(
        BODY_LIMITS, max_array_items=MAX_RECENT, max_containers=3 + 2 * MAX_RECENT * 3
    ),
    # Stats list the workers (MAX_STATS_WORKERS at most): far fewer than a page of jobs.
    StatsReply: dataclasses.replace(
        BODY_LIMITS,
        max_array_items=MAX_LIST_PAGE,
        max_map_items=MAX_LIST_PAGE,
        max_containers=MAX_LIST_PAGE,
    ),
    DataChunk: dataclasses.replace(BODY_LIMITS, max_bin_bytes=config.DATA_CHUNK_BYTES),
    # A job's strings fit the job.
    Submit: dataclasses.replace(BODY_LIMITS, max_str_bytes=MAX_JOB_BYTES),
    Job: dataclasses.replace(BODY_LIMITS, max_str_bytes=MAX_JOB_BYTES),
    SuspectJob: dataclasses.replace(BODY_LIMITS, max_str_bytes=MAX_JOB_BYTES),
    FrontJob: dataclasses.replace(BODY_LIMITS, max_str_bytes=MAX_JOB_BYTES),
}
ANSWER_LIMITS = Limits(
    max_str_bytes=MAX_JOB_BYTES, max_bin_bytes=0, max_array_items=0,
    max_map_items=MAX_ANSWER_ITEMS, max_containers=MAX_ANSWER_ITEMS + 1, max_depth=2,
)  # fmt: skip
"""A job's answer: a map of strings to numbers, or to such maps (the statistics contract)."""
_ANSWER_OPTIONS = ANSWER_LIMITS.unpack_options()


def _read_with(limits: Limits) -> tuple[Limits, dict[str, Any]]:
    return limits, limits.unpack_options()


_BODY_READ = {cls: _read_with(_BODY_LIMITS.get(cls, BODY_LIMITS)) for cls in MESSAGE_TYPES}

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Envelope:
    """A decoded message with its routing: `identity` is set when read from a ROUTER."""

    message: Message
    tag: bytes = b""
    payload: bytes | None = None
    identity: bytes | None = None


def encode(message: Message, tag: bytes = b"", payload: bytes | None = None) -> list[bytes]:
    """Frames for `message`, as a DEALER sends them (prefix the identity on a ROUTER)."""
    return frames_of(message.COMMAND, tag, body_of(message), payload)


def body_of(message: Message) -> bytes:
    """The body frame of `message` (a msgpack map of its fields), as `encode` sends it.

    For a body made once and sent many times without decoding: the broker keeps each
    job's `Job` body, a worker caches its `Result` bodies. Send it with `frames_of`.
    """
    # A frozen dataclass's instance dict holds exactly its fields (COMMAND is the
    # class's): cheaper than building a map field by field, on every hot path.
    return msgpack.packb(vars(message), use_bin_type=True)


def frames_of(
    command: Command, tag: bytes, body: bytes, payload: bytes | None = None
) -> list[bytes]:
    """Frames from a body made by `body_of` (used to send a body without encoding it again)."""
    if len(tag) > MAX_TAG_BYTES:
        raise ProtocolError(f"tag of {len(tag)} bytes exceeds {MAX_TAG_BYTES}")
    header = PROTOCOL_ID + bytes([command]) + tag
    return [header, body] if payload is None else [header, body, payload]


BATCH_HEADER = PROTOCOL_ID + bytes([Command.BATCH])


def batch(messages: Sequence[Sequence[bytes]]) -> list[bytes]:
    """One BATCH carrying `messages` (each the frames a DEALER would send on its own).

    A BATCH costs one frame pair however many messages it carries: pyzmq's cost per
    frame, not msgpack's per byte, is what limits the broker (docs/protocol.md).
    """
    return [BATCH_HEADER, msgpack.packb(messages, use_bin_type=True)]


def batches(messages: Sequence[list[bytes]], max_bytes: int) -> list[list[bytes]]:
    """`messages` for one peer, in order, as few frame lists as fit `max_bytes` each.

    A lone message (or one too big to share a batch) goes as itself, so a peer that
    is sent one message at a time never sees a BATCH.
    """
    out: list[list[bytes]] = []
    group: list[list[bytes]] = []
    size = 0
    for frames in messages:
        cost = sum(map(len, frames)) + BATCH_ITEM_OVERHEAD
        if group and (size + cost > max_bytes or len(group) >= MAX_BATCH):
            out.append(group[0] if len(group) == 1 else batch(group))
            group, size = [], 0
        group.append(frames)
        size += cost
    if group:
        out.append(group[0] if len(group) == 1 else batch(group))
    return out


def messages_in(frames: list[bytes], *, routed: bool = False) -> list[list[bytes]]:
    """The messages a received frame list holds: itself, or the contents of a BATCH.

    With `routed`, the identity in front of a BATCH is put in front of each message.
    Raises `ProtocolError` for a malformed BATCH, as soon as its decoding meets what a
    BATCH cannot hold (a message inside is checked by `decode` as if it had come alone).
    """
    header_at = 1 if routed else 0
    if len(frames) <= header_at or frames[header_at] != BATCH_HEADER:
        return [frames]
    if len(frames) != header_at + 2:
        raise ProtocolError(f"BATCH has {len(frames) - header_at} frames, expected 2")
    items = frame_lists(frames[header_at + 1], MAX_BATCH, BATCH_HEADER)
    return [[frames[0], *item] for item in items] if routed else items


def decode_all(frames: list[bytes]) -> tuple[list[Envelope], list[ProtocolError]]:
    """Every message a frame list received on a DEALER holds (one, or a BATCH's),
    decoded; a malformed one becomes an error without costing the others."""
    envelopes: list[Envelope] = []
    errors: list[ProtocolError] = []
    try:
        messages = messages_in(frames)
    except ProtocolError as exc:
        return envelopes, [exc]
    for message in messages:
        try:
            envelopes.append(decode(message))
        except ProtocolError as exc:
            errors.append(exc)
    return envelopes, errors


def decode(frames: Sequence[bytes], *, routed: bool = False) -> Envelope:
    """Decode frames received on a DEALER (`routed=False`) or a ROUTER (`routed=True`).

    Raises `ProtocolError` with a reason fit for an error reply; never `AssertionError`.
    """
    identity = None
    if routed:
        if not frames:
            raise ProtocolError("empty message")
        identity, frames = frames[0], frames[1:]
    if len(frames) not in (2, 3):
        raise ProtocolError(f"expected 2 or 3 frames after the identity, got {len(frames)}")
    cls, tag = parse_header(frames[0])
    message = _from_body(cls, frames[1])
    payload = frames[2] if len(frames) == 3 else None
    return Envelope(message, tag=tag, payload=payload, identity=identity)


def parse_header(header: bytes) -> tuple[type[Message], bytes]:
    """The message class and the tag named by a header frame."""
    if header[: len(PROTOCOL_ID)] != PROTOCOL_ID:
        code = "bad_version" if header[:3] == PROTOCOL_ID[:3] else "bad_request"
        raise ProtocolError(
            f"unsupported protocol {header[:4]!r}; this peer speaks {PROTOCOL_ID.decode()}", code
        )
    if len(header) < len(PROTOCOL_ID) + 1:
        raise ProtocolError("header frame has no command byte")
    if len(header) > len(PROTOCOL_ID) + 1 + MAX_TAG_BYTES:  # its reply could not carry it
        raise ProtocolError(f"tag longer than {MAX_TAG_BYTES} bytes")
    return _message_class(header[len(PROTOCOL_ID)]), header_tag(header)


def header_command(header: bytes) -> int | None:
    """The command byte of a header frame of this protocol; None for any other frame.

    For a message that did not decode, to tell what it was meant to be."""
    if len(header) <= len(PROTOCOL_ID) or header[: len(PROTOCOL_ID)] != PROTOCOL_ID:
        return None
    return header[len(PROTOCOL_ID)]


def header_tag(header: bytes) -> bytes:
    """The tag in a header frame (at most MAX_TAG_BYTES), whether or not the message
    decodes, so that an error reply can name the request it answers."""
    return header[len(PROTOCOL_ID) + 1 :][:MAX_TAG_BYTES]


def route(
    identity: bytes, message: Message, tag: bytes = b"", payload: bytes | None = None
) -> list[bytes]:
    """Frames for a ROUTER sending `message` to `identity`."""
    return [identity, *encode(message, tag, payload)]


def pack(value: Any) -> bytes:
    """msgpack-encode a payload (a job's answer)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes, max_bytes: int | None = None) -> Any:
    """Decode a payload frame (a job's answer), raising `ProtocolError` if it is not
    valid msgpack within `ANSWER_LIMITS`."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError(f"payload of {len(data)} bytes exceeds {max_bytes}")
    return unpack_within(data, ANSWER_LIMITS, _ANSWER_OPTIONS)


def is_answer(payload: bytes) -> bool:
    """Whether a payload frame is one whole msgpack map, checked without decoding it (for
    the broker, which stores and forwards answers; clients decode them with `unpack`)."""
    return is_whole_map(payload)


def _message_class(command: int) -> type[Message]:
    try:
        return _BY_COMMAND[command]
    except KeyError as exc:
        raise ProtocolError(f"unknown command 0x{command:02x}", "unknown_command") from exc


def decode_body(cls: type[M], body: bytes) -> M:
    """Decode a body frame made by `body_of` into a message of type `cls` (a kept `Job`)."""
    return _from_body(cls, body)


def _from_body(cls: type[M], body: bytes) -> M:
    fields = unpack_within(body, *_BODY_READ[cls])
    if not isinstance(fields, dict):
        raise ProtocolError(f"{cls.__name__} body must be a map, got {type(fields).__name__}")
    checks = _checks_of(cls)
    for name, value in fields.items():
        check = checks.get(name)
        if check is None:
            raise ProtocolError(f"{cls.__name__} has no field '{shown(name)}'")
        if not check(value):
            raise ProtocolError(f"{cls.__name__}.{name} {_why_not(cls, name, value)}")
    try:
        return cls(**fields)
    except TypeError as exc:  # a required field is missing
        raise ProtocolError(f"{cls.__name__}: {exc}") from exc


Check = Callable[[object], bool]
_CHECKS: dict[type[Message], dict[str, Check]] = {}


def _checks_of(cls: type[Message]) -> dict[str, Check]:
    """One check per field of `cls`, built from its annotations (and a field's "range"
    metadata: an int within it) on first use."""
    if cls not in _CHECKS:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        _CHECKS[cls] = {f.name: _check_of_field(f, hints[f.name]) for f in fields}
    return _CHECKS[cls]


def _check_of_field(field: dataclasses.Field[Any], hint: Any) -> Check:
    bounds = field.metadata.get("range")
    if bounds is None:
        return _check_for(hint)
    low, high = bounds
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _why_not(cls: type[Message], name: str, value: object) -> str:
    """Why `value` failed the check of field `name` (for the error reply)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]
    bounds = field.metadata.get("range")
    if bounds is not None and isinstance(value, int) and not isinstance(value, bool):
        return f"is {value}, outside {bounds[0]}..{bounds[1]}"
    return f"has the wrong type {type(value).__name__}"


_SIMPLE_CHECKS: dict[Any, Check] = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    Any: lambda v: True,
    type(None): lambda v: v is None,
    dict: lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
    list: lambda v: isinstance(v, list),
}


def _check_for(hint: Any) -> Check:
    """A predicate telling whether a decoded msgpack value fits `hint` (bool is no int here)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if all(isinstance(arm, type) and arm not in (int, float, dict, list) for arm in options):
            return lambda v: isinstance(v, options)  # e.g. `str | None`: one call, on hot paths
        arms = [_check_for(arm) for arm in options]
        return lambda v: any(arm(v) for arm in arms)
    simple = _SIMPLE_CHECKS.get(origin or hint)
    return simple if simple else lambda v: isinstance(v, hint)


def job_id(seq: int) -> str:
    """The public id of job number `seq`."""
    return f"job_id_{seq}"


def job_seq(job_id_text: str) -> int | None:
    """The job number in `job_id_N`, or None when the text is not a job id."""
    prefix, _, number = job_id_text.rpartition("_")
    if prefix != "job_id" or not (number.isascii() and number.isdigit()) or number[0] == "0":
        return None
    return int(number)


CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")
"""What a submit's text may not hold: C0 controls (NUL among them: PostgreSQL refuses
it in text, and the whole transaction with it), DEL and C1 controls."""


def submit_problem(msg: Submit) -> str | None:
    """Why `msg` may not be accepted, or None: a control character in its request id,
    its statistic or any text of its parameters (map keys included), or a number that
    is not finite (NaN, Infinity: JSON's `1e400`) anywhere in its parameters.

    Call it once the encoded job is known to be within MAX_JOB_BYTES: the walk is
    iterative, so its cost is bounded by that size, however deep the nesting."""
    for name, text in (("request_id", msg.request_id), ("statistic", msg.statistic)):
        if CONTROL_CHARACTER.search(text):
            return f"{name} holds a control character: {shown(text)}"
    return _params_problem(msg.params) if _suspect(msg.params) else None


def _suspect(params: dict[str, Any]) -> bool:
    """Whether `params` holds a control character or a non-finite number anywhere: the
    fast pass run on every submit; `_params_problem` then says where (paths cost)."""
    pending: list[object] = [params]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if CONTROL_CHARACTER.search(value):
                return True
        elif isinstance(value, float):
            if not math.isfinite(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _params_problem(params: dict[str, Any]) -> str | None:
    pending: list[tuple[str, object]] = [("params", params)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str) and CONTROL_CHARACTER.search(value):
            return f"{where} holds a control character: {shown(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} is {value}: numbers must be finite"
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and CONTROL_CHARACTER.search(key):
                    return f"{where} has a key with a control character: {shown(key)}"
                pending.append((f"{where}.{shown(key, 40)}", item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None
