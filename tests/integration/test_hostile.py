"""Hostile input against a real broker: malformed frames, wrong types, oversize, fuzz.

Raw ZeroMQ sockets (and a raw TCP socket) talk to BOTH broker endpoints. Every message
that can be answered must get an error reply; nothing may crash, stall or replace the
broker or the workers; afterwards normal jobs still give correct answers.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
import pytest
import zmq

from bench.harness import Service
from bench.service import wait_until
from protocol import messages as m

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
REPLY_TIMEOUT_S = 5.0
FUZZ_MESSAGES = 10_000  # at least this many, split across both endpoints
FUZZ_SEED = 20240603
MAX_MESSAGE_BYTES = 64 * 1024  # the broker under test caps messages at this size
HUGE = 2**64 - 1
STALL_LIMIT_S = 5.0  # a busy 2-core machine may take this long to answer; a stall never does


class RawPeer:
    """A bare ZeroMQ socket with a deadline on every receive."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        kind: int,
        endpoint: str,
        options: Mapping[int, int | bytes] | None = None,
    ) -> None:
        self.sock: zmq.Socket[bytes] = context.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        for option, value in (options or {}).items():
            self.sock.setsockopt(option, value)
        self.sock.connect(endpoint)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout_s: float = REPLY_TIMEOUT_S) -> list[bytes] | None:
        """The next message, or None if nothing arrives before the deadline."""
        if self.sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return self.sock.recv_multipart()
        return None

    def ask(self, frames: list[bytes], timeout_s: float = REPLY_TIMEOUT_S) -> m.Envelope:
        """Send `frames` and decode the reply; fail the test if none comes."""
        self.send(frames)
        reply = self.recv(timeout_s)
        assert reply is not None, f"no reply within {timeout_s:g} s to {frames!r:.200}"
        return m.decode(reply)

    def envelopes(self, count: int, timeout_s: float = REPLY_TIMEOUT_S) -> list[m.Envelope]:
        """The next `count` messages, batched or not, decoded; fail the test on a timeout."""
        got: list[m.Envelope] = []
        while len(got) < count:
            frames = self.recv(timeout_s)
            assert frames is not None, f"{len(got)} of {count} replies within {timeout_s:g} s"
            got.extend(m.decode(message) for message in m.messages_in(frames))
        return got

    def drain(self) -> int:
        """Discard whatever has arrived; return how many messages that was."""
        count = 0
        while self.sock.poll(0, zmq.POLLIN):
            self.sock.recv_multipart()
            count += 1
        return count

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def peers() -> Iterator[Callable[..., RawPeer]]:
    """Make raw sockets (kind, endpoint, socket options before connecting); all of them,
    and their context, are closed at teardown."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    made: list[RawPeer] = []

    def make(kind: int, endpoint: str, options: Mapping[int, int | bytes] | None = None) -> RawPeer:
        peer = RawPeer(context, kind, endpoint, options)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()
    context.term()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, standin_csv: Path) -> Iterator[Service]:
    """One broker with a small message cap and two real workers (no diagnostics), shared
    by this module's tests; stopped at the end of the module."""
    state = tmp_path_factory.mktemp("hostile")
    with Service(state, standin_csv, max_message_bytes=MAX_MESSAGE_BYTES) as svc:
        yield svc


def fake_worker(
    svc: Service,
    peers: Callable[..., RawPeer],
    credit: int = 1,
    host: str = "fake",
    options: Mapping[int, int | bytes] | None = None,
) -> tuple[RawPeer, str]:
    """A raw DEALER registered as a worker with the service's fingerprint (returned too)."""
    with svc.client() as client:
        fingerprint: str = client.stats()["fingerprint"]
    worker = peers(zmq.DEALER, svc.worker_endpoint, options)
    worker.send(m.encode(m.Ready(credit, fingerprint, 1, host)))
    svc.wait_workers(1)
    return worker, fingerprint


def raw(command: int, body: Any, tag: bytes = b"t", proto: bytes = m.PROTOCOL_ID) -> list[bytes]:
    """A hand-built DEALER message (header, body): any command byte, any msgpack body."""
    packed = body if isinstance(body, bytes) else msgpack.packb(body, use_bin_type=True)
    return [proto + bytes([command]) + tag, packed]


def reply_tag(frames: list[bytes]) -> bytes:
    """The tag the broker echoes for a malformed message: what follows id and command."""
    return m.header_tag(frames[0]) if frames else b""


def expect_error(envelope: m.Envelope, code: str, tag: bytes | None = None) -> m.ErrorReply:
    assert isinstance(envelope.message, m.ErrorReply), envelope
    assert envelope.message.code == code, envelope.message
    if tag is not None:
        assert envelope.tag == tag
    return envelope.message


# --- the client endpoint ----------------------------------------------------------

C = m.Command
MALFORMED_CLIENT_REQUESTS: list[tuple[str, list[bytes], str]] = [
    ("wrong protocol version", raw(C.PING, {}, b"v", b"LSS9"), "bad_version"),
    ("another protocol", raw(C.PING, {}, b"v", b"MDPC"), "bad_request"),
    ("empty protocol id", raw(C.PING, {}, b"v", b""), "bad_request"),
    ("unknown command", raw(0x7F, {}), "unknown_command"),
    ("no command byte", [m.PROTOCOL_ID, b"\x80"], "bad_request"),
    ("empty header", [b"", b"\x80"], "bad_request"),
    ("body is not msgpack", raw(C.PING, b"\xc1\xff\x00"), "bad_request"),
    ("truncated msgpack", raw(C.GET, b"\x81\xa6job_id\xa5job_"), "bad_request"),
    ("body is a list", raw(C.GET, ["job_id_1"]), "bad_request"),
    ("body is an int", raw(C.PING, HUGE), "bad_request"),
    ("job_id of the wrong type", raw(C.GET, {"job_id": 5}), "bad_request"),
    ("job_id as bytes", raw(C.WAIT, {"job_id": b"job_id_1"}), "bad_request"),
    ("unknown field", raw(C.PING, {"evil": True}), "bad_request"),
    ("non-string map key", raw(C.GET, {1: "job_id_1"}), "bad_request"),
    ("missing field", raw(C.SUBMIT, {"request_id": "r"}), "bad_request"),
    ("bool where an int goes", raw(C.LIST_JOBS, {"after": True}), "bad_request"),
    ("params not a map", raw(C.SUBMIT, {"request_id": "r", "statistic": "x", "params": [1]}),
     "bad_request"),
    ("empty request id", raw(C.SUBMIT, {"request_id": "", "statistic": "x", "params": {}}),
     "bad_request"),
    ("a broker reply sent as a request", raw(C.PONG, {"broker_id": "x"}), "unknown_command"),
    ("a worker message on the client side", raw(C.HEARTBEAT, {}), "unknown_command"),
    ("header only", raw(C.PING, {})[:1], "bad_request"),
    ("one empty frame", [b""], "bad_request"),
    ("tag too long to echo", raw(C.PING, {}, b"x" * (m.MAX_TAG_BYTES + 1)), "bad_request"),
    ("extra frames", [*raw(C.PING, {}), b"payload", b"extra"], "bad_request"),
    ("a delimiter in front (old layout)", [b"", *raw(C.PING, {})], "bad_request"),
    ("never-issued job id", raw(C.GET, {"job_id": "job_id_99999999999999999999"}),
     "invalid_job_id"),
    ("not a job id", raw(C.WAIT, {"job_id": "job_id_007"}), "invalid_job_id"),
    ("negative job id", raw(C.GET, {"job_id": "job_id_-1"}), "invalid_job_id"),
    ("a batch that is a map", raw(C.BATCH, {"a": 1}, b""), "bad_request"),
    ("an empty batch", raw(C.BATCH, [], b""), "bad_request"),
    ("a batch of text frames", raw(C.BATCH, [["LSS1", "x"]], b""), "bad_request"),
    ("a batch in a batch", raw(C.BATCH, [raw(C.BATCH, [raw(C.PING, {})], b"")], b""),
     "bad_request"),
    ("a batch with a payload frame", [*raw(C.BATCH, [raw(C.PING, {})], b""), b"x"],
     "bad_request"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frames", "code"),
    [pytest.param(f, c, id=name) for name, f, c in MALFORMED_CLIENT_REQUESTS],
)
def test_client_endpoint_answers_malformed_requests_with_errors(
    capped: Service, peers: Callable[[int, str], RawPeer], frames: list[bytes], code: str
) -> None:
    peer = peers(zmq.DEALER, capped.client_endpoint)
    reply = peer.ask(frames)
    error = expect_error(reply, code, reply_tag(frames))
    assert error.reason
    assert isinstance(peer.ask(raw(C.PING, {})).message, m.Pong)


def test_requests_with_odd_but_legal_values_are_served(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    peer = peers(zmq.DEALER, capped.client_endpoint)
    # `after` is clamped to the jobs there are, `limit` to 1..the page limit: past the
    # last job a page is empty; from the start a page of one holds at most one job.
    for after, limit, most in [(HUGE, 1, 0), (2**63, HUGE, 0), (-(2**63), -5, 1), (0, 0, 1)]:
        reply = peer.ask(raw(C.LIST_JOBS, {"after": after, "limit": limit})).message
        assert isinstance(reply, m.JobList), (after, limit, reply)
        assert len(reply.jobs) <= most, (after, limit, reply)
    with_payload = [*raw(C.PING, {}), b"an unexpected payload"]
    assert isinstance(peer.ask(with_payload).message, m.Pong)
    # (within the caps of a body: protocol.messages.BODY_LIMITS)
    junk = {"nested": [[{"deep": [HUGE, -(2**63), 1e308, None]}]], "q": {"a": {}}}
    submit = {"request_id": "junk-1", "statistic": "global_mean", "params": junk}
    job = peer.ask(raw(C.SUBMIT, submit)).message
    assert isinstance(job, m.Submitted)
    state = peer.ask(raw(C.WAIT, {"job_id": job.job_id}), timeout_s=15).message
    assert isinstance(state, m.JobState) and state.status == "error", state
    assert "unexpected parameter" in (state.reason or "")


def test_random_multipart_garbage_gets_error_replies(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    rng = random.Random(3)
    for endpoint in (capped.client_endpoint, capped.worker_endpoint):
        peer = peers(zmq.DEALER, endpoint)
        for count in range(1, 9):
            frames = [rng.randbytes(rng.randrange(300)) for _ in range(count)]
            error = expect_error(peer.ask(frames), "bad_request")
            assert error.reason
    assert "malformed client message" in broker_log(capped)
    assert "malformed worker message" in broker_log(capped)


def test_req_socket_garbage_does_no_harm(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    """A REQ socket puts an empty delimiter in front: the broker answers with an error, in
    its own layout, which REQ cannot take; the broker goes on serving."""
    for endpoint in (capped.client_endpoint, capped.worker_endpoint):
        req = peers(zmq.REQ, endpoint)
        req.send([b"not", b"our", b"protocol"])  # REQ then waits for a reply it cannot take
    assert_service_serves(capped, peers)


def test_wrong_socket_types_and_raw_tcp_garbage_do_no_harm(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    """PUSH/PUB cannot speak to a ROUTER, and raw TCP is not ZMTP: the broker drops them."""
    for endpoint in (capped.client_endpoint, capped.worker_endpoint):
        for kind in (zmq.PUSH, zmq.PUB):
            peers(kind, endpoint).send(raw(C.PING, {}))
        host, port = _tcp_address(endpoint)
        for garbage in _tcp_garbage():
            with contextlib.suppress(OSError), socket.create_connection((host, port), 2) as tcp:
                tcp.sendall(garbage)
    assert_service_serves(capped, peers)


def test_oversize_messages_are_refused_or_dropped_on_both_endpoints(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    big = os.urandom(MAX_MESSAGE_BYTES + 1)
    huge = os.urandom(4 * MAX_MESSAGE_BYTES + 1)
    for endpoint in (capped.client_endpoint, capped.worker_endpoint):
        peer = peers(zmq.DEALER, endpoint)
        peer.send(raw(C.PING, big))
        peer.send([*raw(C.SUBMIT, {}), big])  # an oversize payload frame
        peer.send(raw(C.PING, huge))
    assert_service_serves(capped, peers)
    # Over the limit: read, refused with a reason and logged.
    peer = peers(zmq.DEALER, capped.client_endpoint)
    peer.send(raw(C.PING, big, b"big"))
    reply = peer.recv(5.0)
    assert reply is not None
    refusal = m.decode(reply)
    assert isinstance(refusal.message, m.ErrorReply) and refusal.message.code == "too_large"
    assert "exceeds the limit" in broker_log(capped)
    # Far over it: libzmq drops the connection before reading, so no reply can come.
    peer.send(raw(C.PING, huge))
    assert peer.recv(1.0) is None
    # The same socket reconnects after the broker dropped it, and is served again.

    def pong() -> bool:
        peer.send(raw(C.PING, {}, b"again"))
        reply = peer.recv(0.5)
        return reply is not None and isinstance(m.decode(reply).message, m.Pong)

    wait_until(pong, 10, "a pong on a socket that sent an oversize message")


def test_a_batch_gets_a_reply_for_each_of_its_requests_bad_ones_included(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    peer = peers(zmq.DEALER, capped.client_endpoint)
    submits = [
        m.encode(m.Submit(f"batch-{n}", "global_mean", {"question": OBESITY}, True), b"s%d" % n)
        for n in range(5)
    ]
    inside = [raw(C.PING, {}, b"p"), raw(C.GET, {"job_id": 5}, b"bad"), *submits]
    peer.send(m.batch(inside))
    replies = {envelope.tag: envelope.message for envelope in peer.envelopes(len(inside))}
    assert isinstance(replies[b"p"], m.Pong)
    expect_error(m.Envelope(replies[b"bad"]), "bad_request")
    states = [replies[b"s%d" % n] for n in range(5)]
    assert all(isinstance(s, m.JobState) and s.status == "done" for s in states), states
    assert len({s.job_id for s in states if isinstance(s, m.JobState)}) == 5


# --- the worker endpoint ----------------------------------------------------------

MALFORMED_WORKER_MESSAGES: list[tuple[str, list[bytes], str]] = [
    ("wrong protocol version", raw(C.HEARTBEAT, {}, b"", b"LSS0"), "bad_version"),
    ("another protocol", raw(C.HEARTBEAT, {}, b"", b"MDPW01"), "bad_request"),
    ("unknown command", raw(0xEE, {}), "unknown_command"),
    ("body not msgpack", raw(C.READY, b"\xc1"), "bad_request"),
    ("credit of the wrong type", raw(C.READY, {"credit": "4", "fingerprint": "f"}),
     "bad_request"),
    ("fingerprint missing", raw(C.READY, {"credit": 4}), "bad_request"),
    ("result status as int", raw(C.RESULT, {"status": 1, "fingerprint": "f"}),
     "bad_request"),
    ("header only", [m.PROTOCOL_ID + bytes([C.HEARTBEAT])], "bad_request"),
    ("four frames", [*raw(C.HEARTBEAT, {}), b"", b""], "bad_request"),
    ("a batch that is not msgpack", raw(C.BATCH, b"\xc1", b""), "bad_request"),
    ("a batch in a batch", raw(C.BATCH, [raw(C.BATCH, [raw(C.HEARTBEAT, {})], b"")], b""),
     "bad_request"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frames", "code"),
    [pytest.param(f, c, id=name) for name, f, c in MALFORMED_WORKER_MESSAGES],
)
def test_worker_endpoint_answers_malformed_messages_with_errors(
    capped: Service, peers: Callable[[int, str], RawPeer], frames: list[bytes], code: str
) -> None:
    peer = peers(zmq.DEALER, capped.worker_endpoint)
    error = expect_error(peer.ask(frames), code)
    assert error.reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (m.Heartbeat(), "unknown worker"),
        (m.Result("done", "f" * 64), "unknown worker"),
        (m.Disconnect("bye"), "unknown worker"),
        (m.Submit("r", "global_mean", {}), "unknown worker"),
        (m.Ready(4, "0" * 64), "fingerprint mismatch"),
        (m.Ready(-1, "0" * 64), "fingerprint mismatch"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, m.Message) else None,
)
def test_worker_endpoint_drops_strangers(
    capped: Service, peers: Callable[[int, str], RawPeer], message: m.Message, reason: str
) -> None:
    peer = peers(zmq.DEALER, capped.worker_endpoint)
    reply = peer.ask(m.encode(message, b"job_id_1", m.pack({"x": 1.0})))
    assert isinstance(reply.message, m.Disconnect), reply
    assert reason in reply.message.reason


def test_fetch_data_out_of_range_is_refused(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    peer = peers(zmq.DEALER, capped.worker_endpoint)
    for offset, length in [(-1, 10), (HUGE, 10), (0, 0), (0, -(2**63))]:
        expect_error(peer.ask(m.encode(m.FetchData(offset, length))), "bad_request")
    chunk = peer.ask(m.encode(m.FetchData(0, HUGE))).message
    assert isinstance(chunk, m.DataChunk) and 0 < len(chunk.data) <= MAX_MESSAGE_BYTES


def test_a_registered_impostor_cannot_corrupt_other_jobs(
    service_factory: Callable[..., Service], peers: Callable[[int, str], RawPeer]
) -> None:
    """A peer that registers correctly, then answers garbage: only its own job fails."""
    svc = service_factory()
    impostor, fingerprint = fake_worker(svc, peers)
    with svc.client() as client:
        job = client.submit("global_mean", question=OBESITY)
        handed = impostor.recv()
        assert handed is not None and m.decode(handed).tag == job.encode()
        result = m.Result("done", fingerprint)
        impostor.send(m.encode(result, b"job_id_999999", m.pack({"x": 1.0})))  # not its job
        impostor.send(m.encode(result, job.encode(), b"\xc1 not msgpack"))
        impostor.send(m.encode(result, job.encode(), m.pack({"late": 1.0})))  # already over
        wait_until(lambda: client.get(job)["status"] != "running", 10, "the job to end")
        state = client.get(job)
    assert state == {"status": "error", "reason": "worker sent a malformed answer"}
    assert "ignored a result for job_id_999999" in broker_log(svc)
    assert "Traceback" not in broker_log(svc)


def test_a_result_with_a_field_the_broker_does_not_know_fails_its_job_at_once(
    service_factory: Callable[..., Service], peers: Callable[[int, str], RawPeer]
) -> None:
    """The decode stays strict: a RESULT with an added field (a newer worker's) is refused,
    the worker is told why, and the job ends as an error naming the field at once, not
    when its lease (60 s by default) runs out."""
    svc = service_factory()
    worker, fingerprint = fake_worker(svc, peers)
    newer = m.pack({**m.unpack(m.body_of(m.Result("done", fingerprint))), "elapsed_s": 0.1})
    with svc.client() as client:
        job = client.submit("global_mean", question=OBESITY)
        (handed,) = worker.envelopes(1)
        worker.send(m.frames_of(m.Command.RESULT, handed.tag, newer, m.pack({"x": 1.0})))
        state = client.wait_all([job], timeout=10)[job]
        told = wait_until(
            lambda: [e.message for e in worker.envelopes(1) if isinstance(e.message, m.ErrorReply)],
            10, "the worker to be told",
        )  # fmt: skip
    why = "Result has no field 'elapsed_s'"
    assert state == {"status": "error", "reason": f"worker sent a malformed result: {why}"}
    assert told == [m.ErrorReply("bad_request", why)]
    assert why in broker_log(svc) and "Traceback" not in broker_log(svc)


# --- fuzz -------------------------------------------------------------------------


def test_fuzz_both_endpoints_then_jobs_still_succeed(
    capped: Service, peers: Callable[[int, str], RawPeer]
) -> None:
    broker_pid, worker_pids = _pids(capped)
    with capped.client() as client:
        before = _reference_answers(client)
    rng = random.Random(FUZZ_SEED)
    fuzzer = Fuzzer(rng)
    sockets = {
        "client": [peers(zmq.DEALER, capped.client_endpoint) for _ in range(4)],
        "worker": [peers(zmq.DEALER, capped.worker_endpoint) for _ in range(4)],
    }
    started = time.monotonic()
    sent = 0
    for i in range(FUZZ_MESSAGES):
        side = "client" if i % 2 == 0 else "worker"
        frames = fuzzer.message(side)
        sockets[side][rng.randrange(4)].send(frames)
        sent += 1
        if i % 200 == 0:
            for peer in sockets["client"] + sockets["worker"]:
                peer.drain()
    fuzz_s = time.monotonic() - started
    assert sent >= 10_000
    probe = peers(zmq.DEALER, capped.client_endpoint)
    probed = time.monotonic()
    assert isinstance(probe.ask(raw(C.PING, {}), timeout_s=STALL_LIMIT_S).message, m.Pong)
    pong_s = time.monotonic() - probed
    assert_service_serves(capped, peers)
    with capped.client(timeout=30) as client:
        wait_until(lambda: client.num_jobs() == 0, 60, "every fuzzed job to end")
        assert _reference_answers(client) == before
        stats = client.stats()
    assert (broker_pid, worker_pids) == _pids(capped), "a process was replaced"
    assert sorted(w["pid"] for w in stats["workers"]) == worker_pids
    log = broker_log(capped)
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:4000]
    print(f"fuzz: {sent} messages in {fuzz_s:.1f} s, pong {pong_s:.2f} s later; {fuzzer.kinds}")


class Fuzzer:
    """Random and garbled messages, mostly mutations of valid frames."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kinds: dict[str, int] = {}
        self.seeds = {"client": _client_seeds(), "worker": _worker_seeds()}

    def message(self, side: str) -> list[bytes]:
        mutations = (
            self._flip, self._truncate, self._extra_frames, self._drop_frames,
            self._junk_body, self._wrong_field_types, self._random_command,
            self._random_frames, self._valid,
        )  # fmt: skip
        mutate = self.rng.choice(mutations)
        self.kinds[mutate.__name__] = self.kinds.get(mutate.__name__, 0) + 1
        frames = mutate([bytes(f) for f in self.rng.choice(self.seeds[side])])
        return _defused(frames)

    def _valid(self, frames: list[bytes]) -> list[bytes]:
        return frames

    def _flip(self, frames: list[bytes]) -> list[bytes]:
        index = self.rng.randrange(len(frames))
        data = bytearray(frames[index] or b"\x00")
        for _ in range(self.rng.randint(1, 4)):
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        frames[index] = bytes(data)
        return frames

    def _truncate(self, frames: list[bytes]) -> list[bytes]:
        index = self.rng.randrange(len(frames))
        frames[index] = frames[index][: self.rng.randrange(len(frames[index]) + 1)]
        return frames

    def _extra_frames(self, frames: list[bytes]) -> list[bytes]:
        return frames + [self.rng.randbytes(self.rng.randrange(64)) for _ in range(3)]

    def _drop_frames(self, frames: list[bytes]) -> list[bytes]:
        return frames[: self.rng.randrange(len(frames))] or [b""]

    def _junk_body(self, frames: list[bytes]) -> list[bytes]:
        frames[1] = msgpack.packb(self._junk(3), use_bin_type=True)
        return frames

    def _wrong_field_types(self, frames: list[bytes]) -> list[bytes]:
        body = msgpack.unpackb(frames[1], raw=False)
        for key in list(body) if isinstance(body, dict) else range(len(body)):  # a BATCH: list
            if self.rng.random() < 0.5:
                body[key] = self._junk(2)
        if self.rng.random() < 0.2 and isinstance(body, dict):
            body[self._junk(0)] = self._junk(1)
        frames[1] = msgpack.packb(body, use_bin_type=True)
        return frames

    def _random_command(self, frames: list[bytes]) -> list[bytes]:
        header = bytearray(frames[0])
        header[len(m.PROTOCOL_ID)] = self.rng.randrange(256)
        frames[0] = bytes(header)
        return frames

    def _random_frames(self, _frames: list[bytes]) -> list[bytes]:
        count = self.rng.randint(1, 8)
        return [self.rng.randbytes(self.rng.randrange(100)) for _ in range(count)]

    def _junk(self, depth: int) -> Any:
        scalars: list[Callable[[], Any]] = [
            lambda: self.rng.choice([HUGE, -(2**63), 2**63, 0, -1]),
            lambda: self.rng.choice([float("nan"), float("inf"), -0.0, 1e308]),
            lambda: self.rng.randbytes(self.rng.randrange(16)),
            lambda: "job_id_" + str(self.rng.choice([1, 0, HUGE, -3])),
            lambda: self.rng.choice([None, True, False]),
            lambda: msgpack.ExtType(self.rng.randrange(128), self.rng.randbytes(4)),
        ]
        if depth > 0:
            scalars.append(lambda: [self._junk(depth - 1) for _ in range(self.rng.randrange(4))])
            scalars.append(lambda: {"k": self._junk(depth - 1), self._key(): self._junk(depth - 1)})
        return self.rng.choice(scalars)()

    def _key(self) -> Any:
        return self.rng.choice(["job_id", "params", "credit", 7, None, b"raw"])


def _client_seeds() -> list[list[bytes]]:
    submit = m.Submit("fuzz", "global_mean", {"question": OBESITY}, notify=True)
    messages: list[m.Message] = [
        submit, m.Get("job_id_1"), m.Wait("job_id_1"), m.ListJobs(0, 5), m.NumJobs(),
        m.Ping(), m.Stats(), m.Submit("fuzz-2", "state_mean", {"question": OBESITY, "state": "x"}),
    ]  # fmt: skip
    seeds = [m.encode(message, b"tag") for message in messages]
    return [*seeds, m.batch(seeds[:4])]


def _worker_seeds() -> list[list[bytes]]:
    bogus = "0" * 64  # never the service's fingerprint, so a fuzzer never registers
    messages: list[m.Message] = [
        m.Ready(4, bogus, 1, "fuzz"), m.Heartbeat(), m.Disconnect("fuzz"), m.FetchData(0, 100),
        m.Result("done", bogus), m.Result("error", bogus, "reason"),
    ]  # fmt: skip
    seeds = [m.encode(message, b"job_id_1", m.pack({"a": 1.0})) for message in messages]
    return [*seeds, m.batch(seeds[1:4])]


def _defused(frames: list[bytes]) -> list[bytes]:
    """Never send a SHUTDOWN: it is a legitimate request (without CURVE), not an attack."""
    shutdown, ping = m.PROTOCOL_ID + bytes([C.SHUTDOWN]), m.PROTOCOL_ID + bytes([C.PING])
    if frames[0].startswith(shutdown):
        frames[0] = ping + frames[0][len(shutdown) :]
    if frames[0] == m.BATCH_HEADER and len(frames) > 1:  # headers inside are plain bytes
        frames[1] = frames[1].replace(shutdown, ping)
    return frames


# --- helpers ----------------------------------------------------------------------


def broker_log(svc: Service) -> str:
    return svc.log("broker")


def assert_service_serves(svc: Service, peers: Callable[[int, str], RawPeer]) -> None:
    """The broker answers a fresh client promptly, and a job gets a right answer."""
    assert svc.broker is not None and svc.broker.poll() is None, "the broker died"
    assert all(w.poll() is None for w in svc.workers), "a worker died"
    fresh = peers(zmq.DEALER, svc.client_endpoint)
    assert isinstance(fresh.ask(raw(C.PING, {}), timeout_s=STALL_LIMIT_S).message, m.Pong)
    with svc.client() as client:
        answer = client.global_mean(OBESITY)
    assert 10 < answer["global_mean"] < 60


def _reference_answers(client: Any) -> list[dict[str, Any]]:
    return [
        client.global_mean(OBESITY),
        client.best5(OBESITY),
        client.state_mean_by_category(OBESITY, "Ohio"),
    ]


def _pids(svc: Service) -> tuple[int, list[int]]:
    assert svc.broker is not None
    return svc.broker.pid, sorted(w.pid for w in svc.workers if w.poll() is None)


def _tcp_address(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    assert parts.hostname and parts.port, endpoint
    return parts.hostname, parts.port


def _tcp_garbage() -> Iterator[bytes]:
    rng = random.Random(7)
    yield rng.randbytes(4096)
    yield b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\x00" * 48  # bad greeting
    yield b"\xff" + b"\xff" * 8 + b"\x7f" + b"\x03"  # greeting claiming a huge identity
    yield b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
