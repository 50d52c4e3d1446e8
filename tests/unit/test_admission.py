"""One peer's bad data or appetite costs that peer only (issue 17, holes 2 and 5; issue 21).

BrokerCore on every store (MemoryStore, SQLite, a real PostgreSQL): control characters
and non-finite numbers refused at submit, worker reasons cleaned before they are stored,
a store error of one submit failing that submit only (per-key quotas of stored bytes:
test_quota), and the backoff of a job whose finish could not be committed.
"""

from __future__ import annotations

from typing import Any

import pytest

from broker.jobs import COMMIT_RETRY_MIN_S
from broker.store import MemoryStore, SqliteStore, StorageError, Store
from protocol import messages as m
from tests.unit.broker_harness import FP, Harness, commit_fails, replies

QUESTION = {"question": "Q"}


@pytest.mark.parametrize(
    ("request_id", "params", "said"),
    [
        ("nul\x00", QUESTION, "request_id holds a control character: nul\\x00"),
        ("r", {"question": "Q\x00"}, "params.question holds a control character: Q\\x00"),
        ("r", {"question": "Q", "state": "\x1b[2J"}, "params.state holds a control character"),
        ("r", {"question": "Q", "k\x85": 1}, "params has a key with a control character: k\\x85"),
        ("r", {"question": "Q", "years": [2011, float("nan")]}, "params.years[1] is nan"),
        ("r", {"question": "Q", "x": {"y": float("inf")}}, "params.x.y is inf: numbers must be"),
        ("r", {"question": "Q", "x": -float("inf")}, "params.x is -inf: numbers must be finite"),
    ],
)
def test_control_characters_and_non_finite_numbers_are_refused_at_submit(
    store: Store, request_id: str, params: dict[str, Any], said: str
) -> None:
    h = Harness(store)
    h.client(m.Submit("before", "global_mean", QUESTION), tag=b"a")
    h.client(m.Submit(request_id, "global_mean", params), tag=b"bad")
    h.client(m.Submit("after", "global_mean", QUESTION), tag=b"b")
    h.core.commit()  # PostgreSQL refused a NUL, and the whole turn with it
    got = replies(h.sent()[0])
    refusal = got[b"bad"]
    assert isinstance(refusal, m.ErrorReply) and refusal.code == "bad_request", refusal
    assert said in refusal.reason
    assert got[b"a"] == m.Submitted("job_id_1") and got[b"b"] == m.Submitted("job_id_2")
    assert store.count(m.JobStatus.RUNNING) == 2


def test_a_worker_reason_is_cleaned_before_it_is_stored(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w1")
    first, second = h.submit(2)
    h.sent()
    h.worker(m.Result("error", FP, reason="bad\x00row\x1b[2J"), b"w1", first.encode())
    h.result(b"w1", second.encode())
    h.core.commit()  # PostgreSQL refused the NUL, and every answer of the turn with it
    failed, done = store.get(1), store.get(2)
    assert failed is not None and failed.reason == "bad\\x00row\\x1b[2J"
    assert done is not None and done.status is m.JobStatus.DONE


def poison(store: Store) -> None:
    """Make the store refuse the insert of a request id starting with 'poison', as a
    real database refuses a row it cannot take (nothing else goes wrong)."""
    if isinstance(store, MemoryStore):
        pytest.skip("the memory store has no statements that can fail")
    if isinstance(store, SqliteStore):
        store._db.execute(
            "CREATE TEMP TRIGGER poison BEFORE INSERT ON jobs WHEN NEW.request_id LIKE"
            " 'poison%' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )
        return
    from broker.store.postgres import PgStore

    assert isinstance(store, PgStore)
    db = store._session.conn()
    db.execute(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF"
        " NEW.request_id LIKE 'poison%' THEN RAISE EXCEPTION 'poisoned row'; END IF;"
        " RETURN NEW; END $$"
    )
    db.execute("CREATE TRIGGER poison BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION poison()")


def test_a_store_error_of_one_submit_fails_that_submit_only(store: Store) -> None:
    poison(store)
    h = Harness(store)
    h.client(m.Submit("before", "global_mean", QUESTION), who=b"c1", tag=b"a")
    h.client(m.Submit("poison-1", "global_mean", QUESTION), who=b"c2", tag=b"bad")
    h.client(m.Submit("after", "global_mean", QUESTION), who=b"c3", tag=b"b")
    h.core.commit()
    got = replies(h.sent()[0])
    refusal = got[b"bad"]
    assert isinstance(refusal, m.ErrorReply) and refusal.code == "storage", refusal
    assert "poisoned row" in refusal.reason
    assert isinstance(got[b"a"], m.Submitted) and isinstance(got[b"b"], m.Submitted)
    assert store.find_request("before") is not None and store.find_request("after") is not None
    assert store.find_request("poison-1") is None
    assert h.core.stats(h.now)["storage_failures"] == {"add": 1}


def test_a_store_error_that_ends_the_transaction_goes_up_as_it_was(store: Store) -> None:
    """The turn is rolled back then (by the loop): no savepoint outlives its transaction."""
    if isinstance(store, MemoryStore):
        pytest.skip("the memory store has no transaction to lose")
    store.add("r", b"q", 0.0)
    if isinstance(store, SqliteStore):  # as a full disk may end SQLite's transaction
        store._db.execute(
            "CREATE TEMP TRIGGER lost BEFORE INSERT ON jobs WHEN NEW.request_id = 'lost'"
            " BEGIN SELECT RAISE(ROLLBACK, 'transaction lost'); END"
        )
    else:  # as a lost connection ends PostgreSQL's
        from broker.store.pg_connection import connect
        from broker.store.postgres import PgStore

        assert isinstance(store, PgStore)
        with connect(store.url) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (store.backend_pid(),))
    with pytest.raises(StorageError) as failure:
        store.add("lost", b"q", 0.0)
        store.commit()  # the PostgreSQL store writes a turn's jobs at its commit
    assert not failure.value.contained
    store.rollback()


def test_a_job_whose_finish_failed_to_commit_runs_again_only_after_a_backoff(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    (job,) = h.submit(1)
    h.core.commit()
    for backoff_s in (COMMIT_RETRY_MIN_S, 2 * COMMIT_RETRY_MIN_S, 4 * COMMIT_RETRY_MIN_S):
        assert h.jobs_to(h.sent()[1]) == [(b"w1", job.encode())]
        h.result(b"w1", job.encode())
        commit_fails(h, monkeypatch)
        h.now += backoff_s * 0.9
        assert h.jobs_to(h.sent()[1]) == [], "ran again before its backoff"
        assert h.core.stats(h.now)["waiting_after_failed_commit"] == 1
        h.now += backoff_s * 0.1 + 0.001  # the next turn of the loop sends it
    assert h.jobs_to(h.sent()[1]) == [(b"w1", job.encode())]
    h.result(b"w1", job.encode())
    h.core.commit()
    record = store.get(1)
    assert record is not None and record.status is m.JobStatus.DONE
    assert h.core.stats(h.now)["waiting_after_failed_commit"] == 0
    assert h.core.jobs.get(1) is None  # its failures in a row went with it: a later one waits least
