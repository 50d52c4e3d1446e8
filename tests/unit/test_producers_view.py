"""The per-producer figures and the cancelled state as `lss status`, `/metrics` and the
dashboard show them, from hand-made `stats` replies (clients.producers and its views)."""

from __future__ import annotations

import math
from typing import Any, cast

from clients import render
from clients.client import Client
from clients.http.api import GatewayRoutes, create_app
from clients.http.dashboard import STATIC_DIR
from clients.metrics import render as exposition
from clients.producers import MAX_LISTED, OTHERS, ProducerRow, producer_rows


def producer(
    name: str, queued: int = 0, running: int = 0, rate: float = 0.0, weight: float = 1.0
) -> dict[str, Any]:
    return {"producer": name, "queued": queued, "running": running,
            "finished_per_s": rate, "weight": weight}  # fmt: skip


STATS: dict[str, Any] = {
    "broker_id": "b1",
    "workers": [],
    "queue_depth": 12,
    "in_flight": 2,
    "jobs": {"running": 14, "done": 30, "error": 1, "cancelled": 5},
    "producers": [
        producer("alice", 10, 1, 12.5, 2.0),
        producer("conn-1a2b3c4d", 2, 1, 0.5, 1.0),
    ],
}


def test_rows_are_read_in_order_with_their_figures() -> None:
    assert producer_rows(STATS) == [
        ProducerRow("alice", 10, 1, 12.5, 2.0),
        ProducerRow("conn-1a2b3c4d", 2, 1, 0.5, 1.0),
    ]
    assert producer_rows({}) == []  # a broker from before per-producer queues
    assert producer_rows({"producers": "nonsense"}) == []


def test_more_than_twenty_producers_are_cut_to_twenty_and_the_others_summed() -> None:
    many = [producer(f"conn-{n:08x}", queued=n, running=1, rate=1.0) for n in range(30)]
    rows = producer_rows({"producers": [*many, producer(OTHERS, queued=100, running=4)]})
    assert len(rows) == MAX_LISTED + 1
    assert [r.producer for r in rows[:MAX_LISTED]] == [p["producer"] for p in many[:MAX_LISTED]]
    assert rows[-1] == ProducerRow(OTHERS, sum(range(20, 30)) + 100, 14, 10.0, 11.0)


def test_bad_figures_from_a_peer_are_zero_and_long_names_cut() -> None:
    odd = {"producer": "x" * 500, "queued": "7", "running": True, "finished_per_s": math.nan,
           "weight": -3}  # fmt: skip
    (row,) = producer_rows({"producers": [odd, "not a map"]})
    assert row == ProducerRow("x" * 64, 0, 0, 0.0, 0.0)


def test_lss_status_shows_the_producers_and_the_cancelled_count() -> None:
    text = render.status(STATS)
    assert "running 14   done 30   error 1   cancelled 5" in text
    lines = text.splitlines()
    start = lines.index("producers   2")
    header, _, alice, conn = lines[start + 1 : start + 5]
    assert header.split() == ["producer", "queued", "running", "finished/s", "weight"]
    assert alice.split() == ["alice", "10", "1", "12.50", "2.00"]
    assert conn.split() == ["conn-1a2b3c4d", "2", "1", "0.50", "1.00"]
    assert "producers" not in render.status({**STATS, "producers": []})


def test_lss_status_escapes_a_producers_name() -> None:
    text = render.status({**STATS, "producers": [producer("evil\x1b[2Jkey")]})
    assert "\x1b" not in text and "evil\\x1b[2Jkey" in text


def test_metrics_have_the_cancelled_count_and_a_gauge_per_producer_figure() -> None:
    lines = exposition(lambda: STATS)[0].decode().splitlines()
    for line in (
        'lss_jobs{status="cancelled"} 5.0',
        'lss_producer_queued{producer="alice"} 10.0',
        'lss_producer_running{producer="alice"} 1.0',
        'lss_producer_finished_per_second{producer="alice"} 12.5',
        'lss_producer_weight{producer="alice"} 2.0',
        'lss_producer_queued{producer="conn-1a2b3c4d"} 2.0',
    ):
        assert line in lines, line


def test_the_producer_label_takes_at_most_twenty_one_values() -> None:
    many = [producer(f"conn-{n:08x}", queued=1) for n in range(500)]
    lines = exposition(lambda: {"producers": many})[0].decode().splitlines()
    queued = [line for line in lines if line.startswith("lss_producer_queued{")]
    assert len(queued) == MAX_LISTED + 1
    assert 'lss_producer_queued{producer="(others)"} 480.0' in queued


class Stats:
    """A `Client` whose broker answers `stats` with STATS, and no recent jobs."""

    def stats(self) -> dict[str, Any]:
        return STATS

    def recent(self, limit: int) -> dict[str, list[dict[str, Any]]]:
        return {"jobs": [], "failures": []}


def test_the_dashboard_gets_the_producers_and_the_cancelled_count() -> None:
    app = create_app(GatewayRoutes(cast(Client, Stats())))
    live = app.test_client().get("/api/dashboard/live").get_json()
    assert live["jobs"]["cancelled"] == 5
    assert live["producers"] == [
        {"producer": "alice", "queued": 10, "running": 1, "finished_per_s": 12.5, "weight": 2.0},
        {"producer": "conn-1a2b3c4d", "queued": 2, "running": 1, "finished_per_s": 0.5,
         "weight": 1.0},
    ]  # fmt: skip


def test_the_dashboard_page_has_a_place_for_them() -> None:
    page = (STATIC_DIR / "index.html").read_text()
    assert 'id="jobs-cancelled"' in page and 'id="producers"' in page
    script = (STATIC_DIR / "dashboard.js").read_text()
    assert "paintProducers(live.producers)" in script and '"cancelled"' in script
