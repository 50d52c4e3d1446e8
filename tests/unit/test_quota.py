"""broker.quota: each key's quota of bytes in the store (LSS_KEY_QUOTA_MB), through
BrokerCore on every store (issue 21)."""

from __future__ import annotations

from broker.access import Caller
from broker.core import CoreSettings
from broker.store import Store
from protocol import messages as m
from tests.unit.broker_harness import ALICE, BOB, FP, SETTINGS, Harness, ask

QUESTION = {"question": "Q"}
ANSWER = {"mean_by_category": "x" * 400}  # about 420 bytes stored
QUOTA_BYTES = 1000


def quota(quota_bytes: int = QUOTA_BYTES) -> CoreSettings:
    return CoreSettings(**{**vars(SETTINGS), "key_quota_mb": quota_bytes / (1 << 20)})


def test_a_key_over_its_quota_is_refused_and_other_keys_go_on(store: Store) -> None:
    h = Harness(store, quota())
    h.worker(m.Ready(8, FP), b"w1")
    jobs = [ask(h, m.Submit(f"a{n}", "mean_by_category", QUESTION), ALICE) for n in range(3)]
    assert all(isinstance(job, m.Submitted) for job in jobs)
    for job in jobs:  # the third answer would take Alice past 1000 bytes: not kept
        h.result(b"w1", job.job_id.encode(), ANSWER)  # type: ignore[attr-defined]
    h.core.commit()
    h.sent()
    third = store.get(3)
    assert third is not None and third.status is m.JobStatus.ERROR and third.answer is None
    assert third.reason is not None and third.reason.startswith("quota: answer of")
    assert store.stored_bytes(ALICE.owner) <= 1000 + len(third.reason)  # within a reason
    refused = ask(h, m.Submit("a3", "mean_by_category", QUESTION), ALICE)
    assert isinstance(refused, m.ErrorReply) and refused.code == "over_limit", refused
    assert "quota" in refused.reason and "LSS_KEY_QUOTA_MB" in refused.reason
    assert isinstance(ask(h, m.Submit("b0", "mean_by_category", QUESTION), BOB), m.Submitted)
    again = ask(h, m.Submit("a0", "mean_by_category", QUESTION), ALICE)
    assert again == jobs[0]  # a retry of an accepted request still names its job
    stats = ask(h, m.Stats(), ALICE)
    assert isinstance(stats, m.StatsReply)
    assert stats.stats["key"] == {"quota_bytes": 1000, "stored_bytes": store.stored_bytes("A" * 40)}


LONG_REASON = "é" * 150  # 300 bytes


def test_long_failure_reasons_do_not_take_a_key_past_its_quota(store: Store) -> None:
    """A worker's reason (up to MAX_REASON_CHARS, a client may provoke it) is stored like
    an answer: jobs in flight when the key reaches its quota must not each add one."""
    h = Harness(store, quota())
    h.worker(m.Ready(64, FP), b"w1")
    jobs = [ask(h, m.Submit(f"a{n}", "best5", QUESTION), ALICE) for n in range(10)]
    accepted = [job.job_id for job in jobs if isinstance(job, m.Submitted)]
    assert len(accepted) == 10  # 36 bytes each
    h.sent()
    for job_id in accepted:
        h.worker(m.Result("error", FP, LONG_REASON), b"w1", job_id.encode())
    h.core.commit()
    # Past the quota, a short note in the reason's place: over it by a note a job at most.
    assert store.stored_bytes(ALICE.owner) <= QUOTA_BYTES + len(accepted) * 100
    records = [store.get(m.job_seq(job_id) or 0) for job_id in accepted]
    reasons = [record.reason or "" for record in records if record is not None]
    assert len(reasons) == len(accepted)
    assert reasons[0] == LONG_REASON  # within the quota: kept whole
    assert reasons[-1].startswith("quota: reason of") and "LSS_KEY_QUOTA_MB" in reasons[-1]


def test_quota_is_freed_as_results_expire(store: Store) -> None:
    h = Harness(store, quota())
    h.worker(m.Ready(8, FP), b"w1")
    jobs = [ask(h, m.Submit(f"a{n}", "mean_by_category", QUESTION), ALICE) for n in range(3)]
    for job in jobs:
        h.result(b"w1", job.job_id.encode(), ANSWER)  # type: ignore[attr-defined]
    h.core.commit()
    h.sent()
    assert isinstance(ask(h, m.Submit("a3", "best5", QUESTION), ALICE), m.ErrorReply)
    h.now += SETTINGS.result_ttl_s + 1
    h.core.expire_results()  # by the harness's wall clock, h.now
    h.core.commit()
    assert store.stored_bytes(ALICE.owner) == 0
    assert isinstance(ask(h, m.Submit("a4", "best5", QUESTION), ALICE), m.Submitted)


def test_a_quota_of_zero_is_no_quota(store: Store) -> None:
    h = Harness(store, quota(0))
    assert isinstance(ask(h, m.Submit("a", "best5", QUESTION), Caller(None)), m.Submitted)
    stats = ask(h, m.Stats(), Caller(None))
    assert isinstance(stats, m.StatsReply) and stats.stats["key"]["quota_bytes"] == 0


# --- backoff after a failed commit ---------------------------------------------------
