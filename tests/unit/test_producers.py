"""broker.producers and broker.jobs: a queue per producer served by deficit round robin
(with weights), priorities within a producer, deadlines, and the admission rule."""

from __future__ import annotations

from collections import Counter

from broker.jobs import JobTable
from broker.producers import MAX_LISTED, OTHERS, QueueRule, queue_refusal


def _table(weights: dict[str, float] | None = None) -> JobTable:
    return JobTable(weights)


def _add(table: JobTable, seq: int, producer: str, priority: int = 4, **kw: float) -> None:
    table.add(seq, b"body", "", producer=table.producers.of(producer, producer),
              priority=priority, deadline_s=kw.get("deadline_s"))  # fmt: skip


def _served(table: JobTable, n: int | None = None, now_s: float = 0.0) -> list[int]:
    """The next `n` jobs dispatched (all if None), taken off the queues."""
    order: list[int] = []
    while (n is None or len(order) < n) and (job := table.next(now_s)) is not None:
        order.append(job.seq)
        table.take(job)
    return order


def _owner(seq: int) -> str:
    return "abc"[seq // 1000]


def test_weights_one_one_two_share_every_round_exactly() -> None:
    table = _table({"c": 2.0})
    for base, name in ((0, "a"), (1000, "b"), (2000, "c")):
        for i in range(400):
            _add(table, base + i, name)
    served = _served(table, 400)  # 100 rounds of 4 jobs
    for start in range(0, 400, 4):
        assert Counter(map(_owner, served[start : start + 4])) == {"a": 1, "b": 1, "c": 2}
    assert [seq % 1000 for seq in served if _owner(seq) == "a"] == list(range(100)), "FIFO"


def test_a_new_producer_waits_at_most_one_round_behind_a_backlog() -> None:
    table = _table()
    for i in range(1000):
        _add(table, i, "bulk")
    assert _served(table, 3) == [0, 1, 2]
    _add(table, 5000, "person")
    assert _served(table, 2) == [3, 5000]


def test_a_newcomers_job_goes_before_the_round_once_while_it_has_nothing_running() -> None:
    table = _table()
    for i in range(10):
        _add(table, i, "bulk")
    assert _served(table, 2) == [0, 1]
    assert table.newcomer() is None, "bulk has jobs running"
    _add(table, 100, "person", priority=9)
    _add(table, 101, "person", priority=0)
    newcomer = table.newcomer()
    assert newcomer is not None and newcomer.seq == 101, "its first by priority"
    table.take(newcomer, newcomer=True)
    assert table.newcomer() is None, "one at a time: it has a job running now"
    assert _served(table) == [2, 100, *range(3, 10)], "its other job waits in the round"


def test_priorities_order_a_producers_own_jobs_only() -> None:
    table = _table()
    _add(table, 1, "a", priority=9)
    _add(table, 2, "a", priority=4)
    _add(table, 3, "a", priority=0)
    _add(table, 4, "b", priority=9)
    _add(table, 5, "b", priority=9)
    # a's priority 0 goes first among a's jobs, but never ahead of b's turn.
    assert _served(table) == [3, 4, 2, 5, 1]


def test_a_lost_job_goes_back_to_the_front_of_its_producers_queue() -> None:
    table = _table()
    for seq in (1, 2, 3):
        _add(table, seq, "a")
    _add(table, 4, "b")
    assert _served(table, 1) == [1]
    table.lost(1, attempts=1)
    assert _served(table) == [4, 1, 2, 3]


def test_jobs_taken_out_while_queued_are_skipped_and_counted_out() -> None:
    table = _table()
    for seq in (1, 2, 3):
        _add(table, seq, "a")
    table.finish(2, set())  # cancelled while queued
    assert table.queued() == 2 and table.holding("a") == 2
    assert _served(table) == [1, 3]
    assert table.queued() == 0 and table.holding("a") == 2  # both running now


def test_deadlines_expire_in_order_and_cost_only_what_is_due() -> None:
    table = _table()
    for seq in range(1, 10_001):  # far deadlines
        _add(table, seq, "a", deadline_s=1000.0 + seq)
    _add(table, 20_001, "b", deadline_s=5.0)
    _add(table, 20_002, "b", deadline_s=3.0)
    _add(table, 20_003, "b", deadline_s=4.0)
    _served(table, 1)  # job 1 went to a worker: its deadline no longer applies
    pending = len(table._deadlines)
    assert table.expired(4.5) == [20_002, 20_003]
    assert pending - len(table._deadlines) == 2, "only the due entries were looked at"
    assert table.expired(1001.5) == [20_001]  # job 1 (due at 1001) was sent: skipped
    assert table.expired(1002.0) == [2]


def test_stats_list_the_busiest_producers_and_sum_the_others() -> None:
    table = _table({"p0": 3.0})
    seq = 0
    for p in range(MAX_LISTED + 5):
        for _ in range(p + 1):
            seq += 1
            _add(table, seq, f"p{p}")
    rows = table.producers.describe(now_s=0.0)
    assert len(rows) == MAX_LISTED + 1
    assert rows[0] == {"producer": f"p{MAX_LISTED + 4}", "queued": MAX_LISTED + 5,
                       "running": 0, "finished_per_s": 0.0, "weight": 1.0}  # fmt: skip
    assert rows[-1]["producer"] == OTHERS
    assert rows[-1]["queued"] == sum(range(1, 6)) and rows[-1]["weight"] == 3.0 + 4


def test_the_admission_rule() -> None:
    rule = QueueRule(max_queue=100, reserve=10, max_producers=5)
    assert rule.bound == 150
    assert queue_refusal(rule, total=99, holding=99) is None
    assert queue_refusal(rule, total=100, holding=9) is None, "under the reserve: admitted"
    refusal = queue_refusal(rule, total=100, holding=10)
    assert refusal is not None and "reserve of 10" in refusal
    assert queue_refusal(rule, total=149, holding=0) is None
    assert queue_refusal(rule, total=150, holding=0) is not None, "the hard bound"


def test_a_producer_under_the_reserve_is_never_refused_while_a_backlog_fills_the_queue() -> None:
    rule = QueueRule(max_queue=100, reserve=10, max_producers=5)
    holding = Counter[str]()

    def submit(who: str) -> bool:
        if queue_refusal(rule, holding.total(), holding[who]) is None:
            holding[who] += 1
            return True
        return False

    while submit("bulk"):
        pass
    assert holding["bulk"] == 100
    assert all(submit(f"small{k}") for k in range(5) for _ in range(10))
    assert not submit("bulk") and not submit("small0")
    assert holding.total() == 150 <= rule.bound
