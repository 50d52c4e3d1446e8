"""What PostgreSQL adds to the Store suite: several brokers on one database.

Two `PgStore`s on one real database stand for two brokers: numbers unique across them,
one job per request id whichever broker takes it, leases, adoption, and the fencing
that refuses a deposed broker's late answer. Skipped (with the reason) without
PostgreSQL binaries.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bench.service import wait_until
from broker.store import Outcome, StorageError
from broker.store.pg_lease import FINISHED_CHANNEL
from broker.store.pg_schema import SCHEMA_VERSION, SchemaTooNew
from broker.store.postgres import SEQ_BLOCK, PgStore
from protocol.messages import JobStatus

DONE = Outcome(JobStatus.DONE, answer=b"\x81\xa1a\x01", fingerprint="f")


def test_numbers_are_reserved_in_blocks_unique_across_brokers(
    brokers: tuple[PgStore, PgStore],
) -> None:
    a, b = brokers
    seqs = [s.add(f"{s.broker_id}-{n}", b"q", 0.0)[0] for n in range(10) for s in (a, b)]
    a.commit()
    b.commit()
    assert seqs[0::2] == list(range(1, 11))  # a's block, then b's: a gap between them
    assert seqs[1::2] == list(range(SEQ_BLOCK + 1, SEQ_BLOCK + 11))
    assert {r.seq for r in (a.get(seq) for seq in seqs) if r} == set(seqs)
    # A broker's own unused numbers name no job; another's unused block counts.
    assert (a.last_seq(), b.last_seq()) == (2 * SEQ_BLOCK, SEQ_BLOCK + 10)


def test_a_request_id_is_one_job_whichever_broker_takes_it(
    brokers: tuple[PgStore, PgStore],
) -> None:
    a, b = brokers
    seq, new = a.add("same", b"q", 0.0)
    a.commit()
    assert new and b.find_request("same") == seq
    provisional, _ = b.add("same", b"other", 1.0)  # numbered at once, written at commit
    b.commit()
    assert b.superseded() == {provisional: seq}
    record = b.get(seq)
    assert record is not None and record.job_body == b"q" and b.get(provisional) is None
    assert a.add("same", b"again", 2.0) == (seq, False)  # a knows it: no query


def test_any_broker_reads_any_job(brokers: tuple[PgStore, PgStore]) -> None:
    a, b = brokers
    seq, _ = a.add("r", b"q", 0.0, "KEY")
    a.finish(seq, DONE, 1.0)
    a.commit()
    record = b.get(seq)
    assert record is not None and (record.status, record.answer) == (JobStatus.DONE, DONE.answer)
    assert b.page(0, 10, "KEY") == [(seq, JobStatus.DONE)]
    assert b.unfinished() == []  # b dispatches none of them


def test_an_expired_lease_is_adopted_and_the_deposed_broker_fenced(pg_url: str) -> None:
    a, b = PgStore(pg_url, "broker-a"), PgStore(pg_url, "broker-b")
    try:
        a.register(lease_s=0.2)
        b.register(lease_s=60.0)
        seqs = [a.add(f"r{n}", b"q", 0.0)[0] for n in range(3)]
        a.commit()
        adopted = wait_until(b.adopt, 10, "b to adopt a's jobs once a's lease ran out")
        assert [r.seq for r in adopted] == seqs
        assert b.adopt() == []  # adopted once
        a.finish(seqs[0], DONE, 1.0)  # written with the turn's other outcomes, at commit
        with pytest.raises(StorageError, match="deposed"):
            a.commit()
        a.rollback()
        assert a.deposed and not a.renew(60.0)
        b.finish(seqs[0], DONE, 2.0)
        b.commit()
        record = b.get(seqs[0])
        assert record is not None and (record.status, record.finished_s) == (JobStatus.DONE, 2.0)
        assert a.add_attempt(seqs[1]) == 0  # refused too: b owns it
    finally:
        a.close()
        b.close()


def test_a_finish_recorded_before_a_lost_commit_reply_is_not_refused(
    brokers: tuple[PgStore, PgStore],
) -> None:
    a, _ = brokers
    seq, _ = a.add("r", b"q", 0.0)
    a.finish(seq, DONE, 1.0)
    a.commit()
    a.finish(seq, Outcome(JobStatus.ERROR, reason="again"), 2.0)  # as after a retried turn
    a.commit()
    record = a.get(seq)
    assert record is not None and record.status is JobStatus.DONE and not a.deposed


def test_a_broker_registering_again_takes_back_what_nobody_runs(pg_url: str) -> None:
    a = PgStore(pg_url, "broker-a")
    try:
        first = a.register(lease_s=60.0)
        seq, _ = a.add("r", b"q", 0.0)
        a.commit()
        assert a.register(lease_s=60.0) > first
        assert a.unfinished() == []
        assert [r.seq for r in a.adopt()] == [seq]
    finally:
        a.close()


def test_shutdown_of_every_broker_is_seen_by_all(brokers: tuple[PgStore, PgStore]) -> None:
    a, b = brokers
    assert not b.shutdown_requested()
    a.request_shutdown()
    a.commit()
    assert a.shutdown_requested() and b.shutdown_requested()


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PgStore(pg_url, "broker-a").close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match="newer than this broker"):
        PgStore(pg_url, "broker-a")


def test_an_unreachable_database_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="connect"):
        PgStore("postgresql:///none?host=/nonexistent&connect_timeout=1", "broker-a")


def test_finished_jobs_are_notified_in_payloads_under_postgresql_limit(
    brokers: tuple[PgStore, PgStore], pg_url: str
) -> None:
    a, _ = brokers
    seqs = [a.add(f"r{n}", b"q", 0.0)[0] for n in range(700)]
    a.commit()
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {FINISHED_CHANNEL}")
        for seq in seqs:
            a.finish(seq, DONE, 1.0)
        a.commit()  # the statement NOTIFYs, delivered at its commit
        payloads = [n.payload for n in listener.notifies(timeout=5.0, stop_after=3)]
    assert len(payloads) == 3 and all(len(p) < 8000 for p in payloads)
    assert sorted(int(s) for p in payloads for s in p.split(",")) == seqs


def test_a_broker_stopped_in_mid_turn_blocks_the_others_for_two_seconds_at_most(
    brokers: tuple[PgStore, PgStore],
) -> None:
    """A holds a request id in a transaction it never finishes (as if SIGSTOPped): the
    server ends A's session, and B takes the request id instead of waiting forever."""
    a, b = brokers
    a.add("contended", b"q", 0.0)
    a.page(0, 10)  # a listing writes the turn's job first; A's turn stops here, its lock held
    seq, new = b.add("contended", b"q", 1.0)
    b.commit()  # waits for A's session to be ended
    assert new and b.superseded() == {}
    with pytest.raises(StorageError):
        a.commit()  # A's transaction is gone with its session
    a.rollback()
    assert a.find_request("contended") == seq  # A serves again on a new connection


def test_stored_bytes_of_a_key_are_shared_by_every_broker(
    brokers: tuple[PgStore, PgStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = brokers
    monkeypatch.setattr("broker.store.postgres.COUNTS_MAX_AGE_S", 0.0)  # read the table each time
    first, _ = a.add("a", b"body-a", 0.0, "KEY")
    second, _ = b.add("b", b"body-b", 0.0, "KEY")
    a.finish(first, DONE, 1.0, "KEY")
    b.finish(second, DONE, 1.0, "KEY")
    a.commit()
    b.commit()
    expected = 2 * (len(b"body-a") + len(DONE.answer or b""))
    assert a.stored_bytes("KEY") == b.stored_bytes("KEY") == expected
    assert a.expire(finished_before_s=2.0) == 2
    a.commit()
    assert b.expire(finished_before_s=2.0) == 0  # freed once, by the broker that deleted
    b.commit()
    assert a.stored_bytes("KEY") == b.stored_bytes("KEY") == 0


def test_a_finish_another_broker_recorded_first_is_not_counted_twice(
    brokers: tuple[PgStore, PgStore],
) -> None:
    a, _ = brokers
    seq, _ = a.add("r", b"q", 0.0, "KEY")
    a.finish(seq, DONE, 1.0, "KEY")
    a.commit()
    a.finish(seq, Outcome(JobStatus.ERROR, reason="again"), 2.0, "KEY")  # a retried turn
    a.commit()
    assert a.stored_bytes("KEY") == len(b"q") + len(DONE.answer or b"")


def test_a_turn_is_written_and_committed_in_one_round_trip_however_many_jobs_it_holds(
    brokers: tuple[PgStore, PgStore],
) -> None:
    a, _ = brokers
    a.add("warm-up", b"q", 0.0)  # the first block of numbers is reserved here
    a.commit()
    trips = []
    for size in (1, 10, 400):
        seqs = [a.add(f"r{size}-{n}", b"q", 0.0, "KEY")[0] for n in range(size)]
        before = a.round_trips()[0]
        a.commit()
        for seq in seqs:
            a.finish(seq, DONE, 1.0, "KEY")
        a.commit()  # the outcomes, their NOTIFYs and the keys' bytes: one round trip too
        trips.append(a.round_trips()[0] - before)
    assert trips == [2, 2, 2]  # one a commit
    assert len(a.page(0, 1000, status="done")) == 411


def test_a_turn_s_write_is_prepared_from_the_first_turn_and_sent_without_a_pipeline(
    brokers: tuple[PgStore, PgStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = brokers
    a.add("warm-up", b"q", 0.0)  # the first block of numbers is reserved here
    a.commit()
    db = a._session.conn()
    pipelines: list[int] = []
    piped = db.pipeline

    def counted_pipeline() -> Any:
        pipelines.append(1)
        return piped()

    monkeypatch.setattr(db, "pipeline", counted_pipeline)
    trips_before = a.round_trips()[0]
    seq, _ = a.add("r", b"q", 0.0, "KEY")
    a.commit()
    a.finish(seq, DONE, 1.0, "KEY")
    a.commit()
    assert a.round_trips()[0] - trips_before == 2 and not pipelines
    statements = db.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert any("INSERT INTO jobs" in text for (text,) in statements)


def test_a_row_the_batch_cannot_take_fails_its_own_job_only(pg_url: str) -> None:
    a = PgStore(pg_url, "broker-a")
    try:
        a.register(lease_s=60.0)
        db = a._session.conn()
        db.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF"
            " NEW.request_id = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF;"
            " RETURN NEW; END $$"
        )
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION poison()"
        )
        seqs = [a.add(rid, b"q", 0.0)[0] for rid in ("before", "poison", "after")]
        a.commit()
        superseded = a.superseded()
        assert list(superseded) == [seqs[1]] and "poisoned row" in str(superseded[seqs[1]])
        assert [a.find_request(rid) for rid in ("before", "poison", "after")] == [
            seqs[0], None, seqs[2]
        ]  # fmt: skip
        assert a.get(seqs[1]) is None and a.add("poison", b"q", 1.0)[1]  # not known: new again
    finally:
        a.close()


def test_a_turn_taking_request_ids_another_broker_has_answers_with_its_jobs(
    brokers: tuple[PgStore, PgStore],
) -> None:
    a, b = brokers
    theirs = {rid: a.add(rid, b"q", 0.0)[0] for rid in ("x", "y")}
    a.commit()
    mine = {rid: b.add(rid, b"q", 0.0)[0] for rid in ("w", "x", "y", "z")}
    assert b.get(mine["x"]) is not None  # read before the commit, as the turn made it
    b.commit()
    assert b.superseded() == {mine["x"]: theirs["x"], mine["y"]: theirs["y"]}
    assert b.superseded() == {}  # told once
    assert [b.find_request(rid) for rid in "wxyz"] == [
        mine["w"], theirs["x"], theirs["y"], mine["z"]
    ]  # fmt: skip
    assert b.count(JobStatus.RUNNING) == 4
