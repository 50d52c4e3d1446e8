"""Every peer is bounded: the attacks of issue 10, each against a real broker.

Each attack is bounded in count and time, and measured: the broker's peak resident
memory during the attack (VmHWM, reset just before it) must stay within RSS_BOUND_MB of
its resident memory before it, and the store (SQLite file and WAL) within
STORE_BOUND_MB. Attackers are raw DEALER sockets that do not read (a receive
high-water mark of 1) until the end, when they read until the broker answers a fresh
request: proof that it has handled everything they sent. Run with `-s` to see the
figures.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from bench import procstat
from bench.harness import Service
from bench.service import wait_until
from broker.limits import ANSWER_BYTES_PER_TURN, MAX_WAITERS, MAX_WAITERS_PER_PEER, SEND_HWM
from protocol import config
from protocol import messages as m
from tests.integration.test_hostile import RawPeer, fake_worker, peers, raw

pytestmark = pytest.mark.integration

__all__ = ["peers"]  # the fixture, shared with test_hostile

OBESITY = "Percent of adults aged 18 years and older who have obesity"
RSS_BOUND_MB = 50.0
STORE_BOUND_MB = 4.0
SETTLE_TIMEOUT_S = 60.0
C = m.Command
Peers = Callable[..., RawPeer]


@dataclass
class Footprint:
    """The broker's memory and the store's size at one moment, in MB."""

    rss_mb: float
    peak_mb: float
    store_mb: float


def footprint(svc: Service) -> Footprint:
    assert svc.broker is not None
    status = Path(f"/proc/{svc.broker.pid}/status").read_text()
    store = sum(p.stat().st_size for p in svc.state_dir.glob("jobs.sqlite3*")) / 1e6
    return Footprint(_mb(status, "VmRSS"), _mb(status, "VmHWM"), store)


def _mb(status: str, field: str) -> float:
    """A /proc/PID/status memory figure in MB (VmHWM: peak resident memory)."""
    found = re.search(rf"{field}:\s+(\d+) kB", status)
    assert found, field
    return int(found[1]) / 1024


@contextmanager
def measured(svc: Service, attack: str, rss_bound_mb: float = RSS_BOUND_MB) -> Iterator[None]:
    """Assert that what runs inside keeps the broker and its store within bounds."""
    assert svc.broker is not None
    Path(f"/proc/{svc.broker.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = footprint(svc)
    yield
    after = footprint(svc)
    print(
        f"\n{attack}: RSS {before.rss_mb:.1f} -> peak {after.peak_mb:.1f}, after "
        f"{after.rss_mb:.1f} MB; store {before.store_mb:.2f} -> {after.store_mb:.2f} MB"
    )
    assert after.peak_mb - before.rss_mb <= rss_bound_mb, (before, after)
    assert after.store_mb - before.store_mb <= STORE_BOUND_MB, (before, after)
    assert svc.broker.poll() is None, "the broker died"


def attacker(peers: Peers, endpoint: str, name: bytes) -> RawPeer:
    """A DEALER named `name` that reads nothing until told to (receive HWM of one)."""
    return peers(zmq.DEALER, endpoint, {zmq.RCVHWM: 1, zmq.ROUTING_ID: name})


def settle(
    peer: RawPeer, probe: list[bytes], done: Callable[[m.Envelope], bool]
) -> list[m.Envelope]:
    """Read everything the broker sent `peer`, sending `probe` until a reply satisfies
    `done`: the broker handles a peer's messages in order, so by then it has handled all
    the peer sent before. Returns the replies read (some were dropped at the HWM)."""
    got: list[m.Envelope] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        peer.send(probe)
        until = time.monotonic() + 0.5
        while (frames := peer.recv(max(until - time.monotonic(), 0.01))) is not None:
            envelopes, _ = m.decode_all(frames)
            got.extend(envelopes)
            if any(done(e) for e in envelopes):
                return got
    raise AssertionError(f"the broker did not answer {probe!r:.80} within {SETTLE_TIMEOUT_S} s")


def pong(envelope: m.Envelope) -> bool:
    return isinstance(envelope.message, m.Pong) and envelope.tag == b"settle"


def codes(envelopes: list[m.Envelope]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in envelopes:
        key = e.message.code if isinstance(e.message, m.ErrorReply) else type(e.message).__name__
        out[key] = out.get(key, 0) + 1
    return out


def batched(messages: list[list[bytes]], max_bytes: int = 900_000) -> Iterator[list[bytes]]:
    """`messages` as BATCHes of at most `max_bytes` (the broker's limit is 1 MiB)."""
    group: list[list[bytes]] = []
    size = 0
    for frames in messages:
        cost = sum(map(len, frames)) + m.BATCH_ITEM_OVERHEAD
        if group and (size + cost > max_bytes or len(group) >= m.MAX_BATCH):
            yield m.batch(group)
            group, size = [], 0
        group.append(frames)
        size += cost
    if group:
        yield m.batch(group)


def test_400000_waits_on_a_running_job(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()  # no workers: the job stays running
    with svc.client() as client:
        job = client.submit("global_mean", question=OBESITY)
    body = m.body_of(m.Wait(job))
    waits = [m.frames_of(C.WAIT, b"%0200d" % n, body) for n in range(410_000)]
    peer = attacker(peers, svc.client_endpoint, b"waiter")
    with measured(svc, "400,000 WAITs with 200-byte tags"):
        for frames in batched(waits[:400_000]):
            peer.send(frames)
        replies = settle(peer, raw(C.PING, {}, b"settle"), pong)
        # More than a turn's share was dropped; now fill the peer's waits to their cap.
        assert "dropped" in _log(svc) and "from client peer waiter" in _log(svc)
        for frames in batched(waits[400_000:]):
            peer.send(frames)
            replies += settle(peer, raw(C.PING, {}, b"settle"), pong)
    assert codes(replies).get("over_limit", 0) > 0, codes(replies)
    with svc.client() as client:
        assert client.stats()["waiters"] == MAX_WAITERS_PER_PEER
        assert client.get(job) == {"status": "running"}


def test_peers_holding_every_wait_lock_no_client_out(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    svc.start_workers(2, diagnostics=True)
    with svc.client() as client:
        job = client.submit("_sleep", seconds=600.0)  # runs while the peers wait for it
    body = m.body_of(m.Wait(job))
    waits = [m.frames_of(C.WAIT, b"%0200d" % n, body) for n in range(MAX_WAITERS_PER_PEER)]
    hogs = [attacker(peers, svc.client_endpoint, b"hog-%d" % n)
            for n in range(MAX_WAITERS // MAX_WAITERS_PER_PEER + 1)]  # fmt: skip
    with measured(svc, f"{len(hogs)} peers x 10,000 WAITs with 200-byte tags on a running job"):
        for hog in hogs:
            for frames in batched(waits):
                hog.send(frames)
        for hog in hogs:
            settle(hog, raw(C.PING, {}, b"settle"), pong)
        with svc.client() as client:
            assert client.stats()["waiters"] == MAX_WAITERS
            answer = client.run("global_mean", question=OBESITY)
            assert "global_mean" in answer, answer
            assert client.get(job) == {"status": "running"}
    assert "ended the oldest wait of hog-" in _log(svc)


def test_100_submits_with_1_mb_parameters(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    peer = attacker(peers, svc.client_endpoint, b"big-params")
    with measured(svc, "100 submits with 1 MB parameters"):
        for n in range(100):
            params = {"question": "x" * 1_000_000}
            peer.send(m.encode(m.Submit(f"big-{n}", "global_mean", params), b"%d" % n))
        replies = settle(peer, raw(C.PING, {}, b"settle"), pong)
    assert codes(replies) == {"too_large": 100, "Pong": 1}, codes(replies)
    question = "\x7f" * 300_000  # made a worker's error reason 1.2 MB
    refusal = peers(zmq.DEALER, svc.client_endpoint)
    reply = refusal.ask(m.encode(m.Submit("del", "state_mean", {"question": question})))
    assert isinstance(reply.message, m.ErrorReply) and reply.message.code == "too_large"
    assert len(reply.message.reason) < 200
    with svc.client() as client:
        assert client.stats()["jobs"] == {"running": 0, "done": 0, "error": 0, "cancelled": 0}


def test_fetch_data_floods_from_a_peer_that_does_not_read(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    fetch = m.encode(m.FetchData(0, 256 * 1024))
    flood = m.batch([fetch] * 400)  # 12 KB asking for 100 MB
    assert len(flood[1]) < 13_000
    peer = attacker(peers, svc.worker_endpoint, b"fetcher")
    with measured(svc, "20 BATCHes of 400 FETCH_DATA, not read"):
        for _ in range(20):
            peer.send(flood)
        replies = settle(
            peer, m.encode(m.Heartbeat()), lambda e: isinstance(e.message, m.Disconnect)
        )
    chunks = codes(replies).get("DataChunk", 0)
    assert 0 < chunks < 20 * 400, codes(replies)
    assert "dropped a data request from fetcher" in _log(svc)


def test_3000_gets_of_a_72_kb_answer_in_one_batch(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc, job, gets = _gets_of_a_72_kb_answer(service_factory)
    peer = attacker(peers, svc.client_endpoint, b"getter")
    with measured(svc, "5 BATCHes of 3,000 GETs of a 72 KB answer, not read"):
        for _ in range(5):
            peer.send(gets)
        replies = settle(peer, raw(C.PING, {}, b"settle"), pong)
    assert codes(replies).get("over_limit", 0) > 0, codes(replies)
    # The budget is per loop turn: the same peer's next GET, in a later turn, is answered.
    answered = settle(peer, m.encode(m.Get(job), b"again"), lambda e: e.tag == b"again")
    assert isinstance(answered[-1].message, m.JobState), answered[-1]
    with svc.client() as client:
        assert client.get(job)["status"] == "done"


def _gets_of_a_72_kb_answer(
    service_factory: Callable[..., Service],
) -> tuple[Service, str, list[bytes]]:
    """A service with one worker, a finished job whose answer takes over 70 KB, and a
    BATCH of 3,000 GETs of it (under 100 KB). Its loop turns serve every request waiting
    (no slicing, LSS_CLIENT_SLICE_MS): each turn's answers meet the budgets at once."""
    svc = service_factory(client_slice_ms=60_000)
    svc.start_workers(1)
    with svc.client() as client:
        job = client.submit("mean_by_category", question=OBESITY)
        assert len(m.pack(client.wait(job))) > 70_000
    gets = m.batch([m.encode(m.Get(job), b"%d" % n) for n in range(3000)])
    assert sum(map(len, gets)) < 100_000
    return svc, job, gets


@pytest.mark.parametrize("clients", [4, pytest.param(10, marks=pytest.mark.slow)])
def test_several_clients_that_do_not_read(
    service_factory: Callable[..., Service], peers: Peers, clients: int
) -> None:
    """Each connection that stops reading holds at most SEND_HWM messages (each at most
    the message limit) in the broker, on top of one turn's answers (ANSWER_BYTES_PER_TURN,
    built, then copied into BATCHes): the sum grows with the number of connections, and
    nothing else caps it (docs/protocol.md, "Limits")."""
    svc, _, gets = _gets_of_a_72_kb_answer(service_factory)
    getters = [attacker(peers, svc.client_endpoint, b"getter-%d" % n) for n in range(clients)]
    turn_mb = 2 * ANSWER_BYTES_PER_TURN / 1e6
    bound_mb = clients * SEND_HWM * svc_message_mb() + turn_mb + RSS_BOUND_MB
    with measured(svc, f"{clients} clients x 10 BATCHes of 3,000 GETs, not read", bound_mb):
        for getter in getters:
            for _ in range(10):
                getter.send(gets)
        for getter in getters:
            settle(getter, raw(C.PING, {}, b"settle"), pong)


def test_2000_recents_of_100_kb_each_in_two_batches(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    svc.start_workers(1)
    with svc.client() as client:  # 100 failures with long parameters: ~100 KB per RECENT
        jobs = [client.submit("states_mean", question=f"{n}" + "Z" * 3000) for n in range(110)]
        wait_until(lambda: client.num_jobs() == 0 or None, 60, f"{len(jobs)} failures")
        assert len(m.pack(client.recent(100))) > 90_000
    recents = [m.batch([m.encode(m.Recent(100), b"%d" % n) for n in range(1000)])] * 2
    assert sum(map(len, recents[0])) < 30_000
    peer = attacker(peers, svc.client_endpoint, b"recent")
    with measured(svc, "2 BATCHes of 1,000 RECENTs of ~100 KB, not read"):
        for batch in recents:
            peer.send(batch)
        replies = settle(peer, raw(C.PING, {}, b"settle"), pong)
    assert codes(replies).get("over_limit", 0) > 0, codes(replies)


def test_a_worker_credit_is_capped(service_factory: Callable[..., Service], peers: Peers) -> None:
    svc = service_factory()
    greedy, _ = fake_worker(svc, peers, credit=1_000_000)
    (worker,) = svc.wait_workers(1)
    with svc.client() as client:
        jobs = [client.submit("global_mean", question=OBESITY) for _ in range(100)]
        got = wait_until(
            lambda: client.stats()["in_flight"] == m.MAX_WORKER_CREDIT, 10, "a full worker"
        )
        assert got and client.stats()["queue_depth"] == len(jobs) - m.MAX_WORKER_CREDIT
    assert worker["credit"] == m.MAX_WORKER_CREDIT
    handed = greedy.envelopes(m.MAX_WORKER_CREDIT)
    assert all(isinstance(e.message, m.Job) for e in handed)
    assert "asked for 1000000" in _log(svc)


def test_a_huge_field_name_gets_a_short_error_and_a_short_log_line(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    log_before = len(_log(svc))
    peer = peers(zmq.DEALER, svc.client_endpoint)
    with measured(svc, "a 1 MB field name of NULs"):
        reply = peer.ask(raw(C.SUBMIT, {"\x00" * 1_000_000: 1}))
    assert isinstance(reply.message, m.ErrorReply) and reply.message.code == "too_large"
    assert len(reply.message.reason) < 200, len(reply.message.reason)
    assert len(_log(svc)) - log_before < 2_000


def test_one_flooding_peer_cannot_hide_another_peers_warnings(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    bad = raw(C.GET, {"job_id": 5})  # the wrong type: a warning and an error reply
    flood = attacker(peers, svc.client_endpoint, b"flooder")
    with measured(svc, "50,000 malformed requests from one peer"):
        for _ in range(10):
            flood.send(m.batch([bad] * 5_000))
        settle(flood, raw(C.PING, {}, b"settle"), pong)
        other = peers(zmq.DEALER, svc.client_endpoint, {zmq.ROUTING_ID: b"bystander"})
        assert isinstance(other.ask(bad).message, m.ErrorReply)
    lines = _log(svc).splitlines()
    assert len([line for line in lines if "from flooder" in line]) <= 10
    assert [line for line in lines if "malformed client message" in line and "bystander" in line]


def test_many_peers_flooding_at_once(service_factory: Callable[..., Service], peers: Peers) -> None:
    svc = service_factory()
    bad = raw(C.GET, {"job_id": 5}, b"t" * 200)  # each answered by an error echoing the tag
    flooders = [attacker(peers, svc.client_endpoint, b"many-%d" % n) for n in range(20)]
    with measured(svc, "20 peers x 2 BATCHes of 5,000 malformed requests, not read"):
        for flooder in flooders:
            for _ in range(2):
                flooder.send(m.batch([bad] * 5_000))
        for flooder in flooders:
            settle(flooder, raw(C.PING, {}, b"settle"), pong)


def test_control_characters_from_a_worker_are_escaped_in_the_log(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    name = b"w\n2026-01-01T00:00:00.000Z INFO forged"
    host = "h\n2026-01-01T00:00:00.000Z INFO lss.broker forged \x1b[2J"
    fake_worker(svc, peers, host=host, options={zmq.ROUTING_ID: name})
    (worker,) = svc.wait_workers(1)
    assert worker["host"] == host  # stats carry the value; its readers escape it
    log = _log(svc)
    assert "forged" in log
    assert all(line[:4].isdigit() or not line for line in log.splitlines()), "a forged line"
    assert "\x1b" not in log and "h\\n2026" in log


def test_an_oversize_result_fails_its_job_and_keeps_the_worker(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    svc = service_factory()
    worker, fingerprint = fake_worker(svc, peers)
    with svc.client() as client:
        job = client.submit("global_mean", question=OBESITY)
        (handed,) = worker.envelopes(1)
        assert handed.tag == job.encode()
        payload = m.pack({"x": "y" * 1_500_000})  # over the 1 MiB limit, under 4 MiB
        worker.send(m.encode(m.Result("done", fingerprint), handed.tag, payload))
        state = wait_until(
            lambda: (s := client.get(job))["status"] != "running" and s, 10, "the job to end"
        )
        assert state["status"] == "error" and state["reason"].startswith("too_large"), state
        worker.send(m.encode(m.Heartbeat()))
        second = client.submit("global_mean", question=OBESITY)
        (again,) = worker.envelopes(1)
        assert again.tag == second.encode(), "the worker was dropped"
    assert "lost" not in _log(svc)


def svc_message_mb() -> float:
    """The largest message the broker sends a client, in MB."""
    return config.MAX_MESSAGE_BYTES / 1e6


def _log(svc: Service) -> str:
    return (svc.state_dir / "broker.stderr").read_text(errors="replace")


# --- decoding (issue 17, hole 3) ---------------------------------------------------

HOSTILE_MESSAGES = 4  # of each kind, on each endpoint
HOSTILE_CPU_BUDGET_S = 0.005  # per hostile 1 MiB message


def _mib_array_of(item: bytes) -> bytes:
    count = (config.MAX_MESSAGE_BYTES - 64) // len(item)
    return b"\xdd" + count.to_bytes(4, "big") + item * count


def test_a_hostile_mib_costs_the_broker_little_cpu_on_either_endpoint(
    service_factory: Callable[..., Service], peers: Peers
) -> None:
    """Issue 17's attack: 1 MiB of empty arrays, as a BATCH (nested into short arrays
    too) or as a body, to both endpoints; each is refused with a reply, for < 5 ms."""
    svc = service_factory()
    assert svc.broker is not None
    empty, short = _mib_array_of(b"\x90"), _mib_array_of(b"\x9f" + b"\x90" * 15)
    kinds = [[m.BATCH_HEADER, empty], [m.BATCH_HEADER, short], raw(C.PING, b"\x81\xa1x" + short)]
    senders = [peers(zmq.DEALER, svc.client_endpoint), peers(zmq.DEALER, svc.worker_endpoint)]
    started_s = procstat.cpu_s(svc.broker.pid)
    for peer in senders:
        for frames in kinds * HOSTILE_MESSAGES:
            peer.send(frames)
    for peer in senders:
        replies = peer.envelopes(len(kinds) * HOSTILE_MESSAGES, timeout_s=SETTLE_TIMEOUT_S)
        assert all(isinstance(e.message, m.ErrorReply) for e in replies), replies[:1]
    per_message_s = (procstat.cpu_s(svc.broker.pid) - started_s) / (
        2 * len(kinds) * HOSTILE_MESSAGES
    )
    print(f"\nbroker CPU per hostile 1 MiB message: {per_message_s * 1000:.2f} ms")
    assert per_message_s < HOSTILE_CPU_BUDGET_S
    assert isinstance(senders[0].ask(raw(C.PING, {})).message, m.Pong)
