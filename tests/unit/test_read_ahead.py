"""broker.read_ahead and broker.backlog: a slice of client requests served from reads
made at once answers exactly as each read alone did, in a constant number of round
trips on PostgreSQL; the backlog gives every waiting peer its share, in order."""

from __future__ import annotations

import pytest

from broker.access import Caller
from broker.backlog import BACKLOG_BYTES, ClientBacklog, announced
from broker.store import Store
from protocol import messages as m
from protocol.messages import job_id
from tests.postgres import statements_run
from tests.unit.broker_harness import ALICE, BOB, FP, Harness, ask

Answer = tuple[bytes, m.Message, bytes | None]


def jobs_of_two_keys(h: Harness) -> None:
    """Jobs 1-3 alice's, 4-5 bob's; 1, 2 and 4 done (1 at t+1, then expired), 3 and 5 running."""
    for n, caller in enumerate([ALICE, ALICE, ALICE, BOB, BOB]):
        reply = ask(h, m.Submit(f"r{n}", "global_mean", {"question": "Q"}), caller)
        assert isinstance(reply, m.Submitted)
    h.worker(m.Ready(5, FP), b"w1")
    _, to_worker = h.sent()
    assert sorted(e.tag for e in to_worker) == [job_id(seq).encode() for seq in range(1, 6)]
    for seq in (1, 2, 4):
        h.now += 1.0
        h.result(b"w1", job_id(seq).encode())
    h.sent()
    h.core.commit()
    assert h.core.store.expire(finished_before_s=h.now - 1.5) == 1  # job 1's answer
    h.core.commit()


def requests() -> list[m.Message]:
    ids = [job_id(seq) for seq in (*range(1, 8), 2**63, 10**20)]  # 6, 7 and up never issued
    return [*(m.Get(j) for j in ids), *(m.Wait(j) for j in ids), m.Get("nonsense"), m.NumJobs()]


def served(h: Harness, asked: list[m.Message], caller: Caller, ahead: bool) -> list[Answer]:
    envelopes = [m.Envelope(msg, tag=str(n).encode(), identity=b"c") for n, msg in enumerate(asked)]
    if ahead:
        with h.core.read_ahead(envelopes):
            for envelope in envelopes:
                h.core.on_client(envelope, h.now, caller)
    else:
        for envelope in envelopes:
            h.core.on_client(envelope, h.now, caller)
    clients, _ = h.sent()
    return [(e.tag, e.message, e.payload) for e in clients]


@pytest.mark.parametrize("caller", [ALICE, BOB], ids=["alice", "bob"])
def test_requests_read_ahead_answer_exactly_as_each_read_alone(
    store: Store, caller: Caller
) -> None:
    h = Harness(store)
    jobs_of_two_keys(h)
    alone = served(h, requests(), caller, ahead=False)
    assert served(h, requests(), caller, ahead=True) == alone
    codes = [getattr(message, "code", getattr(message, "status", "")) for _, message, _ in alone]
    assert "expired" in codes and "invalid_job_id" in codes and "done" in codes


def test_a_batch_of_gets_takes_a_constant_number_of_round_trips(
    postgres: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.conftest import pg_store

    store = pg_store(postgres.database())  # type: ignore[attr-defined]
    try:
        h = Harness(store)
        jobs_of_two_keys(h)
        answered_alone = len(served(h, requests(), ALICE, ahead=False))  # waits: no answer
        run = statements_run(monkeypatch)
        answers = served(h, requests() * 300, ALICE, ahead=True)
        assert len(answers) == 300 * answered_alone
        assert len(run) <= 2, run  # the highest number issued, then the jobs
    finally:
        store.close()


def test_the_backlog_gives_each_peer_its_share_in_order() -> None:
    backlog = ClientBacklog()
    flood = [(m.encode(m.Get(job_id(n)), str(n).encode()), ALICE) for n in range(1, 101)]
    ping = (m.encode(m.Ping(), b"p"), ALICE)
    backlog.add(b"flood", flood)
    backlog.add(b"pinger", [ping])
    assert backlog.held(b"flood") == 100 and len(backlog) == 101
    first = backlog.take(10)
    assert ping in first and [r for r in first if r is not ping] == flood[:9]
    assert backlog.take(1000) == flood[9:] and len(backlog) == 0 and backlog.bytes == 0


def test_a_lone_request_is_taken_first_and_only_while_it_is_alone() -> None:
    backlog = ClientBacklog()
    flood = [(m.encode(m.Get(job_id(n)), str(n).encode()), ALICE) for n in range(1, 11)]
    one, two, three = ((m.encode(m.Ping(), tag), ALICE) for tag in (b"1", b"2", b"3"))
    backlog.add(b"flood", flood, lone=True)  # many at once: never lone
    backlog.add(b"person", [one], lone=True)
    backlog.add(b"other", [two], lone=True)
    backlog.add(b"other", [three], lone=True)  # no longer alone: waits for its share
    backlog.add(b"busy", [three])  # its producer has jobs unfinished
    assert backlog.take_lone(10) == [one] and len(backlog) == 13
    assert backlog.take_lone(10) == []
    assert backlog.take(100) == [*flood, two, three, three]
    assert len(backlog) == 0 and backlog.bytes == 0


@pytest.mark.parametrize("count", [1, 15, 16, 10_000])
def test_a_batch_is_counted_from_its_header_without_unpacking_it(count: int) -> None:
    frames = [b"peer", *m.batch([m.encode(m.Ping(), b"t")] * count)]
    assert announced(frames) == count == len(m.messages_in(frames, routed=True))
    assert announced([b"peer", *m.encode(m.Ping(), b"t")]) == 1


def test_the_backlog_is_full_at_its_bytes_as_at_its_count() -> None:
    backlog = ClientBacklog()
    big = [b"peer", b"x" * (1 << 20)]
    backlog.add(b"peer", [(big, ALICE)] * (BACKLOG_BYTES >> 20))
    assert backlog.full(most=50_000) and not ClientBacklog().full(most=50_000)
    backlog.take(1)
    assert not backlog.full(most=50_000)


def test_a_lone_request_taken_in_its_share_leaves_no_listing_behind() -> None:
    """A lone request served by `take` (the lone ones past a chunk are) is unlisted with
    it: the peer's next request, not a lone one, waits for its share like the others."""
    backlog = ClientBacklog()
    one, two, three = ((m.encode(m.Ping(), tag), ALICE) for tag in (b"1", b"2", b"3"))
    backlog.add(b"person", [one], lone=True)
    assert backlog.take(10) == [one]
    backlog.add(b"other", [two])
    backlog.add(b"person", [three])  # its producer now has a job unfinished: not lone
    assert backlog.take_lone(10) == []
    assert backlog.take(10) == [two, three]
