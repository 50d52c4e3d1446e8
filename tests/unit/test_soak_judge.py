"""bench.soak's verdicts: every job ends in exactly one final state, cancelled among them."""

from __future__ import annotations

from bench.soak import Spec, _judge

SPEC = Spec("global_mean", {"question": "Q"}, ("done", {"global_mean": 1.0}))


def test_a_cancelled_job_is_finished_not_lost_nor_wrong() -> None:
    assert _judge({"status": "cancelled", "reason": "deadline passed"}, SPEC) == "cancelled"
    assert _judge({"status": "running"}, SPEC) == "unfinished"
    assert _judge({"status": "done", "data": {"global_mean": 1.0}}, SPEC) == "done"
