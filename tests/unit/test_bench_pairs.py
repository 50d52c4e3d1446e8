"""The PostgreSQL section's ratios: each store against SQLite, by durability pair."""

from __future__ import annotations

from typing import Any

from bench.brokers import DURABILITY_LABELS, pair_ratios


def row(store: str, jobs_per_s: float, p50_ms: float, brokers: int = 1) -> dict[str, Any]:
    return {
        "store": store,
        "brokers": brokers,
        "median": {"jobs_per_s": jobs_per_s, "p50_ms": p50_ms},
    }


def test_each_postgresql_row_is_compared_with_its_sqlite_pair() -> None:
    rows = [
        row(DURABILITY_LABELS[0], 4000, 10.0),  # SQLite NORMAL
        row(DURABILITY_LABELS[1], 2000, 15.0),  # PostgreSQL, synchronous_commit on
        row(DURABILITY_LABELS[2], 2500, 12.0),  # SQLite FULL
        row(DURABILITY_LABELS[3], 3600, 11.0),  # PostgreSQL, synchronous_commit off
        row("postgresql", 1800, 20.0, brokers=2),
    ]
    assert pair_ratios(rows) == [
        "- postgresql / sqlite: jobs/s 0.50 x, p50 1.50 x",
        "- postgresql / sqlite (synchronous FULL): jobs/s 0.80 x, p50 1.25 x",
        "- postgresql (synchronous_commit off) / sqlite: jobs/s 0.90 x, p50 1.10 x",
    ]


def test_without_postgresql_there_is_no_ratio() -> None:
    assert pair_ratios([row("sqlite", 4000, 10.0)]) == []
