"""Prometheus exposition of the broker's `stats` operation (needs `prometheus-client`).

The HTTP gateway serves it at `GET /metrics`, and `lss status --prometheus` prints it
(for node_exporter's textfile collector). Each scrape asks the broker once: nothing is
cached or counted here, so the numbers are the broker's own. When the broker does not
answer, the scrape still succeeds with `lss_up 0`.

    lss_up                                   1 when the broker answered this scrape
    lss_workers                              registered workers
    lss_worker_credit{worker}                job slots a worker offers
    lss_worker_in_flight{worker}             jobs a worker is running
    lss_queue_depth / lss_in_flight          jobs waiting for / held by a worker
    lss_jobs{status}                         jobs in the store by status (running, done,
                                             error, cancelled)
    lss_job_rate_per_second{event,window}    recent rates (submitted, done, error)
    lss_shutting_down                        1 once a graceful shutdown has begun
    lss_producer_queued{producer}            jobs a producer has waiting for a worker
    lss_producer_running{producer}           jobs of a producer held by workers
    lss_producer_finished_per_second{producer}  a producer's jobs finished per second lately
    lss_producer_weight{producer}            a producer's weight in the fair share
    lss_job_queue_wait_seconds{statistic}    histogram: accepted -> handed to a worker
    lss_job_compute_seconds{statistic}       histogram: handed to a worker -> result
    lss_job_end_to_end_seconds{statistic}    histogram: accepted -> finished
    lss_store_round_trips_total              round trips to the store's database (0 on SQLite)

The histograms are the broker's own (broker/latency.py), over the jobs that finished
since it started. A producer is a CURVE key's name, or "conn-" and a hash of a connection
without CURVE; at most 20 are named, the rest summed as "(others)" (clients.producers),
so the `producer` label takes at most 21 values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from clients.producers import ProducerRow, producer_rows
from protocol.errors import LssError

StatsSource = Callable[[], dict[str, Any]]


class StatsCollector(Collector):
    """Turns one `stats` reply per scrape into Prometheus gauges."""

    def __init__(self, fetch: StatsSource) -> None:
        self._fetch = fetch

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._fetch()
        except LssError:
            yield _gauge("lss_up", "1 when the broker answered this scrape", 0)
            return
        yield _gauge("lss_up", "1 when the broker answered this scrape", 1)
        yield from families(stats)


def families(stats: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one `stats` reply (see the module docstring)."""
    info = InfoMetricFamily("lss_broker", "the broker's id and data fingerprint")
    info.add_metric([], {k: str(stats.get(k, "")) for k in ("broker_id", "fingerprint")})
    yield info
    workers = list(stats.get("workers", []))
    yield _gauge("lss_workers", "registered workers", len(workers))
    yield _per_worker(workers, "credit", "job slots a worker offers")
    yield _per_worker(workers, "in_flight", "jobs a worker is running")
    yield _gauge("lss_queue_depth", "jobs waiting for a worker", stats.get("queue_depth", 0))
    yield _gauge("lss_in_flight", "jobs held by workers", stats.get("in_flight", 0))
    jobs = GaugeMetricFamily("lss_jobs", "jobs in the results store by status", labels=["status"])
    for status, count in stats.get("jobs", {}).items():
        jobs.add_metric([str(status)], count)
    yield jobs
    yield _rates(stats.get("rates_per_s", {}))
    shutting_down = int(bool(stats.get("shutting_down")))
    yield _gauge("lss_shutting_down", "1 once a graceful shutdown has begun", shutting_down)
    yield from _producers(producer_rows(stats))
    yield from _latency(stats.get("latency", {}))
    round_trips = stats.get("store", {}).get("round_trips")
    if round_trips is not None:
        yield CounterMetricFamily(
            "lss_store_round_trips", "round trips to the store's database", value=round_trips
        )


def render(fetch: StatsSource) -> tuple[bytes, str]:
    """One scrape: the text exposition and its content type."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(fetch))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _per_worker(workers: list[dict[str, Any]], field: str, documentation: str) -> Metric:
    family = GaugeMetricFamily(f"lss_worker_{field}", documentation, labels=["worker"])
    for worker in workers:
        family.add_metric([str(worker.get("id", "?"))], worker.get(field, 0))
    return family


def _rates(rates: dict[str, dict[str, float]]) -> Metric:
    family = GaugeMetricFamily(
        "lss_job_rate_per_second", "recent events per second", labels=["event", "window"]
    )
    for window, events in rates.items():
        for event, rate in events.items():
            family.add_metric([str(event), str(window)], rate)
    return family


PRODUCER_GAUGES = {  # lss_producer_<name>: (the row's field, help)
    "queued": ("queued", "jobs a producer has waiting for a worker"),
    "running": ("running", "jobs of a producer held by workers"),
    "finished_per_second": ("finished_per_s", "a producer's jobs finished per second lately"),
    "weight": ("weight", "a producer's weight in the fair share across producers"),
}


def _producers(rows: list[ProducerRow]) -> Iterator[Metric]:
    for name, (field, documentation) in PRODUCER_GAUGES.items():
        family = GaugeMetricFamily(f"lss_producer_{name}", documentation, labels=["producer"])
        for row in rows:
            family.add_metric([row.producer], getattr(row, field))
        yield family


PHASE_HELP = {
    "queue_wait": "seconds from a job's acceptance to its dispatch to a worker",
    "compute": "seconds from a job's dispatch to its worker's result",
    "end_to_end": "seconds from a job's acceptance to its end",
}


def _latency(latency: dict[str, dict[str, dict[str, Any]]]) -> Iterator[Metric]:
    for phase, documentation in PHASE_HELP.items():
        family = HistogramMetricFamily(
            f"lss_job_{phase}_seconds", documentation, labels=["statistic"]
        )
        for statistic, phases in sorted(latency.items()):
            histogram = phases.get(phase)
            if histogram is None:
                continue
            bounds = [f"{le:g}" for le in histogram["le"]] + ["+Inf"]
            counts = [*histogram["cumulative"], histogram["count"]]
            family.add_metric(
                [statistic], list(zip(bounds, counts, strict=True)), histogram["sum_s"]
            )
        yield family
