"""The dashboard's server side: the page, its assets, and the JSON it polls.

    GET /                        the page (clients/http/static/index.html)
    GET /static/<asset>          its script and style sheet (no other files)
    GET /api/dashboard/live      workers (also those that left lately), queue, jobs by
                                 status, producers (queued, running, finished/s, weight),
                                 latency p50/p99 per statistic and phase, recent jobs and
                                 failures from the store, the data's fingerprint
    GET /api/dashboard/questions the nine questions and which way is best

The page reads these and runs statistics through the original routes (POST
/api/<statistic>, GET /api/get_results/<id>), like any producer: it can start nothing
else. From a service that has them it also reads GET /api/questions (the questions' ids)
and runs `state_trend` and statistics with `years`; where they answer 404 or 405 it does
without. Every value it shows that came from a peer is set as text, never as markup, and the
Content-Security-Policy allows scripts from this gateway only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, send_from_directory

from clients.client import Client
from clients.producers import producer_rows
from protocol.errors import BrokerUnavailable
from protocol.fingerprint import is_standin
from protocol.questions import BEST_IS_MIN, QUESTIONS

STATIC_DIR = Path(__file__).with_name("static")
ASSETS = frozenset({"dashboard.js", "dashboard.css", "favicon.svg"})
GONE_SHOWN_S = 120.0  # a worker that left stays on the page, greyed, this long
RECENT_LIMIT = 15
QUANTILES = {"p50_ms": 0.5, "p99_ms": 0.99}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class Roster:
    """The workers seen lately: those in the last `stats`, and those gone since (greyed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, dict[str, Any]] = {}
        self._gone: dict[str, tuple[float, dict[str, Any]]] = {}

    def update(self, workers: Sequence[dict[str, Any]], now_s: float) -> list[dict[str, Any]]:
        """The live `workers` (marked `"gone": False`), then those that left, newest first."""
        current = {str(w.get("id")): w for w in workers}
        with self._lock:
            for name, worker in self._last.items():
                if name not in current:
                    self._gone[name] = (now_s, worker)
            for name in current:
                self._gone.pop(name, None)
            self._gone = {n: g for n, g in self._gone.items() if now_s - g[0] < GONE_SHOWN_S}
            self._last = current
            gone = sorted(self._gone.items(), key=lambda item: -item[1][0])
        live = [{**w, "gone": False} for w in current.values()]
        return live + [{**w, "gone": True, "left_s_ago": now_s - t} for _, (t, w) in gone]


def quantile(histogram: dict[str, Any], q: float) -> float | None:
    """The `q` quantile (seconds) of a cumulative histogram, linear within its bucket."""
    count = histogram.get("count", 0)
    if not count:
        return None
    rank, lower, below = q * count, 0.0, 0
    for upper, cumulative in zip(histogram["le"], histogram["cumulative"], strict=True):
        if cumulative >= rank:
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return float(lower + (upper - lower) * share)
        lower, below = upper, cumulative
    return float(lower)  # in the +Inf bucket: at least the last bound


def latency_summary(latency: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """{statistic: {phase: {"count", "p50_ms", "p99_ms"}}} from the broker's histograms."""
    summary: dict[str, Any] = {}
    for statistic, phases in latency.items():
        for phase, histogram in phases.items():
            cell: dict[str, Any] = {"count": histogram.get("count", 0)}
            for name, q in QUANTILES.items():
                seconds = quantile(histogram, q)
                cell[name] = None if seconds is None else round(seconds * 1000, 3)
            summary.setdefault(statistic, {})[phase] = cell
    return summary


class Dashboard:
    """The dashboard's routes, over the gateway's shared `Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.roster = Roster()

    def page(self) -> Response:
        return _secured(send_from_directory(STATIC_DIR, "index.html"))

    def asset(self, name: str) -> Response | tuple[Response, int]:
        if name not in ASSETS:
            return jsonify({"status": "error", "reason": "no such file"}), 404
        return _secured(send_from_directory(STATIC_DIR, name))

    def live(self) -> Response:
        try:
            stats = self.client.stats()
            recent = self.client.recent(RECENT_LIMIT)
        except BrokerUnavailable as exc:  # the page says so, and asks again
            return jsonify({"up": False, "reason": str(exc)})
        fingerprint = stats.get("fingerprint")
        return jsonify(
            {
                "up": True,
                "now_s": time.time(),
                "broker_id": stats.get("broker_id"),
                "fingerprint": fingerprint,
                "standin": is_standin(fingerprint),
                "shutting_down": stats.get("shutting_down", False),
                "no_worker": stats.get("no_worker"),
                "workers": self.roster.update(stats.get("workers", []), time.monotonic()),
                "queue_depth": stats.get("queue_depth", 0),
                "in_flight": stats.get("in_flight", 0),
                "jobs": stats.get("jobs", {}),
                "producers": [asdict(row) for row in producer_rows(stats)],
                "last_job": stats.get("last_job"),
                "rates_per_s": stats.get("rates_per_s", {}),
                "latency": latency_summary(stats.get("latency", {})),
                "recent": recent["jobs"],
                "failures": recent["failures"],
            }
        )

    def questions(self) -> Response:
        listed = [{"text": q, "best_is_min": q in BEST_IS_MIN} for q in QUESTIONS]
        return jsonify({"questions": listed})


def register(app: Flask, dashboard: Dashboard) -> None:
    """Add the dashboard's routes to the gateway's application."""
    app.add_url_rule("/", view_func=dashboard.page)
    app.add_url_rule("/static/<name>", view_func=dashboard.asset)
    app.add_url_rule("/api/dashboard/live", view_func=dashboard.live)
    app.add_url_rule("/api/dashboard/questions", view_func=dashboard.questions)


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
