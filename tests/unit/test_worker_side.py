"""broker.worker_side: registration, dispatch, results, leases, the poison rule and
suspects, heartbeats, through BrokerCore on both stores."""

from __future__ import annotations

import dataclasses

import pytest

from broker.access import NOBODY, OPEN
from broker.store import Store
from protocol import messages as m
from tests.unit.broker_harness import (
    ADMIN,
    ALICE,
    FP,
    SETTINGS,
    WORKER,
    Harness,
    ask,
    suspect_job_on,
)


def test_least_recently_used_worker_gets_the_next_job(store: Store) -> None:
    h = Harness(store)
    for w in (b"w1", b"w2", b"w3"):
        h.worker(m.Ready(1, FP), w)
    h.submit(2)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w1", b"job_id_1"), (b"w2", b"job_id_2")]
    h.result(b"w1", b"job_id_1")
    h.submit(1)  # w3 has waited longest, then w1 (just freed); w2 is busy
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w3", b"job_id_3")]


def test_credit_bounds_jobs_per_worker_and_spreads_them(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w1")
    h.worker(m.Ready(2, FP), b"w2")
    h.submit(6)
    _, to_workers = h.sent()
    assert [w for w, _ in h.jobs_to(to_workers)] == [b"w1", b"w2", b"w1", b"w2"]
    assert h.core.stats(h.now)["queue_depth"] == 2


def test_only_the_assigned_worker_can_finish_a_job(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.worker(m.Ready(1, FP), b"w2")
    h.submit(1)
    h.sent()
    h.result(b"w2", b"job_id_1")  # not w2's job
    assert h.core.store.count(m.JobStatus.DONE) == 0
    h.result(b"w1", b"job_id_1")
    assert h.core.store.count(m.JobStatus.DONE) == 1


def test_silent_worker_is_dropped_and_its_job_requeued(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.now += 0.5 * 5 + 0.1
    h.worker(m.Ready(1, FP), b"w2")  # joined late, so not silent
    h.core.tick(h.now)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w2", b"job_id_1")]
    assert any(isinstance(e.message, m.Disconnect) and e.identity == b"w1" for e in to_workers)


def test_a_job_that_keeps_losing_workers_fails(store: Store) -> None:
    h = Harness(store)
    h.submit(1)
    for n in range(3):
        worker = f"w{n}".encode()
        h.worker(m.Ready(1, FP), worker)
        _, to_workers = h.sent()
        kinds = [type(e.message) for e in to_workers if isinstance(e.message, m.Job)]
        assert kinds == [m.SuspectJob if n == 2 else m.Job]  # a suspect after two losses
        if n == 2:
            h.worker(m.Started(), worker, b"job_id_1")  # it was running when its worker died
        h.core.lose_worker(worker, "died", h.now)
    state = h.core.store.get(1)
    assert state is not None and state.status is m.JobStatus.ERROR
    assert "lost 3 times" in (state.reason or "")


def test_a_suspect_is_not_blamed_for_a_death_before_its_start(store: Store) -> None:
    """A worker serving several brokers queues a suspect behind their jobs: a death
    while those ran is not the suspect's doing (the 3-broker soak lost jobs so)."""
    h = Harness(store)
    suspect_job_on(h, b"w2")
    h.core.lose_worker(b"w2", "died", h.now)  # never said STARTED
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.RUNNING
    h.worker(m.Ready(1, FP), b"w3")
    _, to_workers = h.sent()
    jobs = [(type(e.message), e.identity) for e in to_workers if isinstance(e.message, m.Job)]
    assert jobs == [(m.SuspectJob, b"w3")]
    h.worker(m.Started(), b"w3", b"job_id_1")
    h.core.lose_worker(b"w3", "died", h.now)
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.ERROR
    assert "lost 4 times" in (record.reason or "")


def test_the_broker_notes_a_started_suspect_and_its_lease_starts_then(store: Store) -> None:
    h = Harness(store)
    suspect_job_on(h, b"w2")
    h.now += SETTINGS.job_timeout_s - 1  # queued behind other brokers' jobs this long
    h.worker(m.Started(), b"w2", b"job_id_1")
    _, to_workers = h.sent()
    assert [(e.message, e.tag) for e in to_workers] == [(m.Started(), b"job_id_1")]
    h.now += 2
    h.worker(m.Heartbeat(), b"w2")
    h.core.tick(h.now)
    assert b"w2" in h.core.pool  # the lease counts from STARTED
    h.result(b"w2", b"job_id_1")
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.DONE


def test_started_for_a_job_that_is_no_suspect_gets_no_answer(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.worker(m.Started(), b"w1", b"job_id_1")  # an ordinary job
    h.worker(m.Started(), b"w1", b"job_id_99")  # not its job
    assert h.sent() == ([], [])
    worker = h.core.pool.get(b"w1")
    assert worker is not None and worker.started == set()


def test_a_suspect_that_never_says_started_fails_after_three_times_the_limit(
    store: Store,
) -> None:
    h = Harness(store)
    suspect_job_on(h, b"w2")
    limit = SETTINGS.max_attempts * 3
    for n in range(2, limit):
        record = h.core.store.get(1)
        assert record is not None and record.status is m.JobStatus.RUNNING
        worker = f"w{n}".encode()
        if n > 2:
            h.worker(m.Ready(1, FP), worker)
            h.sent()
        h.core.lose_worker(worker, "died", h.now)
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.ERROR
    assert f"lost {limit} times" in (record.reason or "")


def test_a_suspect_runs_alone_so_its_neighbours_are_not_blamed(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w0")
    h.submit(2)  # job 1 is the poison, job 2 an innocent neighbour on the same worker
    h.sent()
    h.core.lose_worker(b"w0", "died", h.now)
    h.worker(m.Ready(2, FP), b"w1")  # after one loss, retried jobs fail over at once
    _, to_workers = h.sent()
    assert sorted(h.jobs_to(to_workers)) == [(b"w1", b"job_id_1"), (b"w1", b"job_id_2")]
    h.core.lose_worker(b"w1", "died", h.now)
    h.worker(m.Ready(2, FP), b"w2")  # after two, each runs alone
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w2", b"job_id_1")]
    h.worker(m.Started(), b"w2", b"job_id_1")
    h.core.lose_worker(b"w2", "died", h.now)
    h.worker(m.Ready(2, FP), b"w3")
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w3", b"job_id_2")]
    h.result(b"w3", b"job_id_2")
    poison, innocent = h.core.store.get(1), h.core.store.get(2)
    assert poison is not None and poison.status is m.JobStatus.ERROR
    assert innocent is not None and innocent.status is m.JobStatus.DONE


def test_lease_expiry_requeues_and_the_late_answer_is_ignored(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"slow")
    h.submit(1)
    h.sent()
    h.now += SETTINGS.job_timeout_s + 1
    h.worker(m.Heartbeat(), b"slow")  # alive, but stuck in the job
    h.worker(m.Ready(1, FP), b"fast")
    h.core.tick(h.now)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"fast", b"job_id_1")]
    h.result(b"slow", b"job_id_1", {"global_mean": 666.0})
    h.result(b"fast", b"job_id_1", {"global_mean": 1.0})
    record = h.core.store.get(1)
    assert record is not None and m.unpack(record.answer or b"") == {"global_mean": 1.0}


def test_wrong_fingerprint_is_refused(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, "0" * 64), b"odd")
    _, to_workers = h.sent()
    assert [e.message for e in to_workers] == [m.Disconnect("data fingerprint mismatch")]
    assert len(h.core.pool) == 0


def test_the_worker_endpoint_takes_worker_keys_only_on_every_message(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Even if the ZAP handler admitted a stranger, it gets neither jobs nor data."""
    h = Harness(store)
    for n, caller in enumerate((ALICE, ADMIN, NOBODY)):
        for message in (m.Ready(1, FP), m.FetchData(0, 10), m.Result("done", FP)):
            h.core.on_worker(m.Envelope(message, tag=b"job_id_1", identity=b"x%d" % n), h.now,
                             caller)  # fmt: skip
    h.submit(1)
    _, to_workers = h.sent()
    assert {type(e.message) for e in to_workers} == {m.Disconnect}, to_workers
    assert all(e.message.reason.startswith("forbidden") for e in to_workers)  # type: ignore[attr-defined]
    assert h.core.stats(h.now)["workers"] == [] and h.core.stats(h.now)["queue_depth"] == 1
    assert "refused Ready on the worker endpoint from client key alice" in caplog.text
    for n, caller in enumerate((WORKER, OPEN)):
        h.core.on_worker(m.Envelope(m.Ready(1, FP), identity=b"w%d" % n), h.now, caller)
    _, to_workers = h.sent()
    assert h.jobs_to(to_workers) == [(b"w0", b"job_id_1")]
    refused = ask(h, m.Ping(), WORKER)  # and a worker key may not ask on the client endpoint
    assert isinstance(refused, m.ErrorReply) and refused.code == "forbidden"


def test_a_large_job_or_request_id_is_refused_and_credit_is_capped(store: Store) -> None:
    h = Harness(store)
    big = ask(h, m.Submit("r", "global_mean", {"question": "x" * m.MAX_JOB_BYTES}), ALICE)
    long_id = ask(h, m.Submit("r" * 129, "global_mean", {"question": "Q"}), ALICE)
    assert [big.code, long_id.code] == ["too_large", "too_large"]  # type: ignore[attr-defined]
    h.worker(m.Ready(10**6, FP), b"w1")
    assert h.core.stats(h.now)["workers"][0]["credit"] == m.MAX_WORKER_CREDIT  # type: ignore[index]


def test_an_unreadable_result_from_the_holder_fails_its_job_only(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    (job,) = h.submit(1)
    h.sent()
    fail = h.core.fail_unreadable_result
    assert not fail(b"w2", job.encode(), "too_large: too big", h.now)  # not its job
    assert fail(b"w1", job.encode(), "too_large: too big", h.now)
    state = ask(h, m.Get(job), ADMIN)
    assert state == m.JobState(job, "error", "too_large: too big")
    assert h.core.pool.get(b"w1") is not None


def test_what_a_worker_sent_is_escaped_in_the_log_lines_about_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(store)
    h.core.fingerprint = None  # the first worker sets it, unless it is not text
    forged = "fp\n2026-01-01T00:00:00.000Z INFO    lss.broker[1] forged \x1b[2J"
    with caplog.at_level("DEBUG", logger="lss.broker"):
        h.worker(m.Ready(1, forged), b"w0")
        h.worker(m.Ready(1, FP), b"w1")
        (job,) = h.submit(1)
        h.sent()
        h.worker(m.Result("error", FP, reason=forged), b"w1", job.encode())
    lines = [record.getMessage() for record in caplog.records]
    assert h.core.fingerprint == FP and b"w0" not in h.core.pool
    assert sum("fp\\n2026" in line for line in lines) >= 1, lines  # the refused READY
    assert sum("forged" in line for line in lines) >= 1, lines  # the RESULT's reason
    assert not [line for line in lines if "\n" in line or "\x1b" in line], lines


def test_a_repeated_started_does_not_stretch_the_lease(store: Store) -> None:
    h = Harness(store)
    suspect_job_on(h, b"w2")
    h.worker(m.Started(), b"w2", b"job_id_1")
    h.now += SETTINGS.job_timeout_s - 1
    h.worker(m.Started(), b"w2", b"job_id_1")  # again, to keep the job longer
    h.now += 2
    h.worker(m.Heartbeat(), b"w2")
    h.core.tick(h.now)
    assert b"w2" not in h.core.pool  # hung in its job: lost, and the job blamed
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.ERROR


def test_an_unreadable_result_for_a_job_this_broker_gave_up_is_ignored(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)
    h.sent()
    h.core.forget_jobs()  # deposed: another broker runs job 1 now
    assert not h.core.fail_unreadable_result(b"w1", b"job_id_1", "oversize", h.now)
    record = h.core.store.get(1)
    assert record is not None and record.status is m.JobStatus.RUNNING


def test_a_ready_past_max_workers_is_disconnected_with_the_reason(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(store, dataclasses.replace(SETTINGS, max_workers=2))
    with caplog.at_level("WARNING", logger="lss.broker"):
        for worker in (b"w1", b"w2", b"w3", b"w4"):
            h.worker(m.Ready(1, FP, pid=7, host="h"), worker)
    h.worker(m.Ready(1, FP), b"w1")  # a known worker may register again
    refused = [e for e in h.sent()[1] if isinstance(e.message, m.Disconnect)]
    why = "too many workers: this broker registers at most 2 (LSS_MAX_WORKERS)"
    assert [(e.identity, e.message) for e in refused] == [
        (b"w3", m.Disconnect(why)), (b"w4", m.Disconnect(why)),
    ]  # fmt: skip
    assert [w.identity for w in h.core.pool.all()] == [b"w2", b"w1"]
    lines = [r.getMessage() for r in caplog.records if "registered already" in r.getMessage()]
    assert lines == [
        f"worker {w} (pid 7 on h) refused: 2 workers registered already (LSS_MAX_WORKERS)"
        for w in ("w3", "w4")
    ]


def test_one_calls_do_not_keep_a_waiting_suspect_from_the_idle_worker_it_needs(
    store: Store,
) -> None:
    """A suspect at the round's head waits for an idle worker, and the round with it:
    newcomers' jobs (broker.producers) wait too, or one-calls taking a worker's free and
    front slots one after another would keep it from ever being idle."""
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.submit(1)  # job 1, c1's, keeps w1 busy
    assert h.jobs_to(h.sent()[1]) == [(b"w1", b"job_id_1")]
    h.client(m.Submit("poison", "global_mean", {"question": "Q"}), who=b"c2", tag=b"p")
    for dead in (b"d0", b"d1"):  # job 2 becomes a suspect; w1 stays busy
        h.worker(m.Ready(1, FP), dead)
        assert h.jobs_to(h.sent()[1]) == [(dead, b"job_id_2")]
        h.core.lose_worker(dead, "died", h.now)
    one_calls = 0

    def one_call(who: bytes) -> None:
        nonlocal one_calls
        one_calls += 1
        h.client(m.Submit(f"one{one_calls}", "global_mean", {"question": "Q"}), who=who)

    one_call(b"a")
    _, to_workers = h.sent()
    h.result(b"w1", b"job_id_1")  # w1 would be idle now but for a one-call's job
    one_call(b"b")
    _, to_workers2 = h.sent()
    sent = [
        (type(e.message), e.tag)
        for e in [*to_workers, *to_workers2]
        if isinstance(e.message, m.Job)
    ]
    assert sent == [(m.SuspectJob, b"job_id_2")], "the suspect gets the first idle worker"


def test_a_front_job_gives_the_jobs_it_jumps_one_lease_more(store: Store) -> None:
    """A job gets one lease per job ahead of it on its worker; a job in the front slot
    runs before the jobs held there but the one being computed, so each of those may
    wait one job more: a worker that computes each job within its lease is never taken
    for hung."""
    h = Harness(store)
    step = SETTINGS.job_timeout_s * 0.9  # each job takes 0.9 leases

    def computed(job: int) -> None:  # at the end of the next step: tick, then its answer
        h.now += step
        h.worker(m.Heartbeat(), b"w1")
        h.core.tick(h.now)
        assert [w.identity for w in h.core.state.pool.all()] == [b"w1"], "taken for hung"
        h.result(b"w1", f"job_id_{job}".encode())
        h.sent()

    h.worker(m.Ready(2, FP), b"w1")
    h.submit(3)  # c1's: jobs 1 and 2 on w1, job 3 waits for a slot
    assert len(h.jobs_to(h.sent()[1])) == 2
    computed(1)  # job 3 takes its slot, job 2 is computed
    h.client(m.Submit("one-call", "global_mean", {"question": "Q"}), who=b"c2")
    _, to_workers = h.sent()
    assert [(type(e.message), e.tag) for e in to_workers] == [(m.FrontJob, b"job_id_4")]
    computed(2)
    computed(4)  # the front job, before job 3
    computed(3)


def test_a_stuck_job_is_not_given_more_time_by_the_front_jobs_sent_after_it(
    store: Store,
) -> None:
    h = Harness(store)
    h.worker(m.Ready(2, FP), b"w1")
    h.submit(1)  # job 1 never ends
    h.sent()
    h.client(m.Submit("one-call", "global_mean", {"question": "Q"}), who=b"c2")
    _, to_workers = h.sent()
    assert [type(e.message) for e in to_workers] == [m.FrontJob]
    h.now += SETTINGS.job_timeout_s + 1
    h.worker(m.Heartbeat(), b"w1")
    h.core.tick(h.now)
    assert h.core.state.pool.all() == [], "its lease ran out as before"
