"""Recent event rates (jobs submitted, done, failed per second) in one-second buckets."""

from __future__ import annotations

from collections import Counter, deque

WINDOWS_S = (10, 60)


class RateMeter:
    """Counts events per second for the last minute; memory is bounded by the window."""

    def __init__(self, horizon_s: int = max(WINDOWS_S)) -> None:
        self._horizon_s = horizon_s
        self._buckets: deque[tuple[int, Counter[str]]] = deque()

    def count(self, event: str, now_s: float, n: int = 1) -> None:
        second = int(now_s)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, Counter()))
            self._forget(second)
        self._buckets[-1][1][event] += n

    def rates(self, now_s: float) -> dict[str, dict[str, float]]:
        """Events per second over each window, e.g. {"10s": {"done": 812.3}}."""
        self._forget(int(now_s))
        result: dict[str, dict[str, float]] = {}
        for window in WINDOWS_S:
            totals: Counter[str] = Counter()
            for second, counts in self._buckets:
                if second > now_s - window:
                    totals.update(counts)
            result[f"{window}s"] = {event: n / window for event, n in totals.items()}
        return result

    def _forget(self, now_second: int) -> None:
        while self._buckets and self._buckets[0][0] <= now_second - self._horizon_s:
            self._buckets.popleft()
