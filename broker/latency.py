"""Job latency histograms, per statistic and phase, recorded by the broker.

This module owns the three phases of a job as the broker sees them:

    queue_wait   accepted (stored) -> last handed to a worker
    compute      last handed to a worker -> its result received
    end_to_end   accepted -> finished

Each phase of each statistic is a cumulative histogram over `BUCKETS_S` (Prometheus
style: `le` upper bounds in seconds, with a count and a sum), recorded when a job
finishes after a dispatch in this broker's life. Memory: one entry per unfinished job,
plus a fixed-size histogram per (statistic, phase); unknown statistic names share one
label ("other"), so a client cannot grow the label set.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from protocol.messages import STATISTICS

BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
OTHER = "other"


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf), a total count and sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total_s += seconds

    def describe(self) -> dict[str, object]:
        """{"le": [...], "cumulative": [...], "count": n, "sum_s": s} (+Inf is the count)."""
        cumulative, running = [], 0
        for count in self.counts[:-1]:
            running += count
            cumulative.append(running)
        return {
            "le": list(BUCKETS_S),
            "cumulative": cumulative,
            "count": sum(self.counts),
            "sum_s": self.total_s,
        }


@dataclass
class _Timing:
    statistic: str
    accepted_s: float
    dispatched_s: float | None = None


class LatencyRecorder:
    """Follows unfinished jobs by number; fills the histograms when they finish."""

    def __init__(self) -> None:
        self._jobs: dict[int, _Timing] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def accepted(self, seq: int, statistic: str, now_s: float) -> None:
        label = statistic if statistic in STATISTICS else OTHER
        self._jobs[seq] = _Timing(label, now_s)

    def dispatched(self, seq: int, now_s: float) -> None:
        timing = self._jobs.get(seq)
        if timing is not None:
            timing.dispatched_s = now_s

    def forget(self, seq: int) -> None:
        """Stop following job `seq` (its acceptance was rolled back)."""
        self._jobs.pop(seq, None)

    def finished(self, seq: int, now_s: float) -> None:
        timing = self._jobs.pop(seq, None)
        if timing is None or timing.dispatched_s is None:
            return  # accepted before this broker started, or failed without running
        self._observe(timing.statistic, "queue_wait", timing.dispatched_s - timing.accepted_s)
        self._observe(timing.statistic, "compute", now_s - timing.dispatched_s)
        self._observe(timing.statistic, "end_to_end", now_s - timing.accepted_s)

    def _observe(self, statistic: str, phase: str, seconds: float) -> None:
        key = (statistic, phase)
        if key not in self._histograms:
            self._histograms[key] = Histogram()
        self._histograms[key].observe(max(0.0, seconds))

    def describe(self) -> dict[str, dict[str, dict[str, object]]]:
        """{statistic: {phase: histogram}} for the broker's `stats` reply."""
        out: dict[str, dict[str, dict[str, object]]] = {}
        for (statistic, phase), histogram in sorted(self._histograms.items()):
            out.setdefault(statistic, {})[phase] = histogram.describe()
        return out
