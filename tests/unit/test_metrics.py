"""The Prometheus exposition of a `stats` reply, and of a broker that does not answer."""

from __future__ import annotations

from typing import Any

from clients.metrics import render
from protocol.errors import BrokerUnavailable

STATS: dict[str, Any] = {
    "broker_id": "b1",
    "fingerprint": "abc",
    "workers": [
        {"id": "w1", "credit": 4, "in_flight": 1},
        {"id": "w2", "credit": 2, "in_flight": 0},
    ],
    "queue_depth": 7,
    "in_flight": 1,
    "jobs": {"running": 8, "done": 100, "error": 3},
    "rates_per_s": {"10s": {"done": 12.5, "submitted": 13.0}},
    "shutting_down": False,
    "store": {"round_trips": 1234, "round_trips_per_job": 0.5},
}


def test_every_stat_becomes_a_gauge() -> None:
    body, content_type = render(lambda: STATS)
    text = body.decode()
    assert content_type.startswith("text/plain")
    for line in (
        "lss_up 1.0",
        "lss_workers 2.0",
        'lss_worker_credit{worker="w1"} 4.0',
        'lss_worker_in_flight{worker="w1"} 1.0',
        "lss_queue_depth 7.0",
        "lss_in_flight 1.0",
        'lss_jobs{status="done"} 100.0',
        'lss_job_rate_per_second{event="done",window="10s"} 12.5',
        "lss_shutting_down 0.0",
        'lss_broker_info{broker_id="b1",fingerprint="abc"} 1.0',
        "lss_store_round_trips_total 1234.0",
    ):
        assert line in text.splitlines(), line


def test_an_unreachable_broker_is_lss_up_0() -> None:
    def fetch() -> dict[str, Any]:
        raise BrokerUnavailable("no reply")

    text = render(fetch)[0].decode()
    assert "lss_up 0.0" in text.splitlines()
    assert "lss_workers" not in text


def test_latency_histograms_per_statistic_and_phase() -> None:
    histogram = {"le": [0.01, 0.1], "cumulative": [1, 3], "count": 4, "sum_s": 0.5}
    stats = {**STATS, "latency": {"best5": {"compute": histogram, "end_to_end": histogram}}}
    lines = render(lambda: stats)[0].decode().splitlines()
    for line in (
        'lss_job_compute_seconds_bucket{le="0.01",statistic="best5"} 1.0',
        'lss_job_compute_seconds_bucket{le="0.1",statistic="best5"} 3.0',
        'lss_job_compute_seconds_bucket{le="+Inf",statistic="best5"} 4.0',
        'lss_job_compute_seconds_count{statistic="best5"} 4.0',
        'lss_job_compute_seconds_sum{statistic="best5"} 0.5',
        'lss_job_end_to_end_seconds_count{statistic="best5"} 4.0',
    ):
        assert line in lines, line
    assert not any(line.startswith("lss_job_queue_wait_seconds_count") for line in lines)
