"""The broker's latency histograms, fed by hand-made times."""

from __future__ import annotations

from typing import Any

from broker.latency import BUCKETS_S, LatencyRecorder


def test_each_phase_is_recorded_once_per_finished_job() -> None:
    recorder = LatencyRecorder()
    recorder.accepted(1, "best5", 0.0)
    recorder.dispatched(1, 0.002)  # waited 2 ms
    recorder.finished(1, 0.077)  # computed 75 ms
    recorder.accepted(2, "no_such_statistic", 100.0)
    recorder.dispatched(2, 100.0)
    recorder.finished(2, 100.0)
    recorder.accepted(3, "best5", 100.0)
    recorder.finished(3, 101.0)  # never dispatched (failed in the queue): not a latency
    recorder.finished(4, 101.0)  # unknown to this broker
    described: dict[str, Any] = recorder.describe()
    assert set(described) == {"best5", "other"}
    best5 = described["best5"]
    assert {phase: h["count"] for phase, h in best5.items()} == {
        "queue_wait": 1,
        "compute": 1,
        "end_to_end": 1,
    }
    wait = best5["queue_wait"]
    assert wait["le"] == list(BUCKETS_S)
    assert wait["cumulative"][BUCKETS_S.index(0.001)] == 0
    assert wait["cumulative"][BUCKETS_S.index(0.0025)] == 1
    compute = best5["compute"]
    assert compute["cumulative"][BUCKETS_S.index(0.05)] == 0
    assert compute["cumulative"][BUCKETS_S.index(0.1)] == 1
    assert abs(best5["end_to_end"]["sum_s"] - 0.077) < 1e-9
