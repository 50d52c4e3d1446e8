"""The per-producer figures of a broker's `stats`, read once for every view of them.

`stats["producers"]` (docs/protocol.md, "STATS") lists at most `MAX_LISTED` producers,
busiest first, then one `OTHERS` row summing the rest. This module reads it for
`lss status`, the dashboard and `/metrics` alike, and holds it to that bound whatever the
broker sent: rows past `MAX_LISTED` are summed into `OTHERS` (so a metric's label set
stays bounded), each field is a number or 0, and a name is text cut short (a peer's
text: the views escape it further as they need).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

MAX_LISTED = 20
"""Producers listed by name; the rest are summed into one `OTHERS` row."""
OTHERS = "(others)"
NAME_CHARS = 64  # a key's name, or "conn-" and 8 hex digits: longer is not a name


@dataclass(frozen=True)
class ProducerRow:
    """One producer's figures: jobs queued and running now, jobs finished per second
    lately, and its weight in the fair share."""

    producer: str
    queued: int = 0
    running: int = 0
    finished_per_s: float = 0.0
    weight: float = 0.0

    def plus(self, other: ProducerRow) -> ProducerRow:
        """The sum of two rows' figures under this row's name (weights add up too)."""
        return replace(
            self,
            queued=self.queued + other.queued,
            running=self.running + other.running,
            finished_per_s=self.finished_per_s + other.finished_per_s,
            weight=self.weight + other.weight,
        )


def producer_rows(stats: Mapping[str, Any]) -> list[ProducerRow]:
    """The producers of a `stats` reply, in its order, at most `MAX_LISTED` by name and
    then one `OTHERS` row if there are more; [] from a broker without them."""
    listed = stats.get("producers")
    if not isinstance(listed, list):
        return []
    named: list[ProducerRow] = []
    others: ProducerRow | None = None
    for row in _rows(listed):
        if row.producer == OTHERS or len(named) >= MAX_LISTED:
            others = (others or ProducerRow(OTHERS)).plus(row)
        else:
            named.append(row)
    return named + ([others] if others is not None else [])


def _rows(listed: Iterable[Any]) -> Iterable[ProducerRow]:
    for entry in listed:
        if isinstance(entry, Mapping):
            yield ProducerRow(
                producer=str(entry.get("producer", "?"))[:NAME_CHARS],
                queued=_count(entry.get("queued")),
                running=_count(entry.get("running")),
                finished_per_s=_rate(entry.get("finished_per_s")),
                weight=_rate(entry.get("weight")),
            )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value > 0 else 0.0
