"""`python -m bench.years`: what `years` and `state_trend` cost a worker, for the README.

On a stand-in of `--rows` rows (cached by bench.data), in this process: the load time of
`Statistics` split into its parts (reading the CSV, the precomputed tables, the per-year
sums), then the compute time of each statistic per job, without `years` (the precomputed
path) and with `years`: first for a range not asked lately (the 78 ranges of 2011..2022
in turn, more than `NARROWED_ENTRIES` keeps), then for the range just asked. Times are
medians, in microseconds; the worker's answer cache (identical jobs) is not involved.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Iterator

from bench.data import dataset
from bench.plan import BASE_ROWS
from protocol.messages import STATE_STATISTICS, STATISTICS
from workers.dataset import YEAR_MAX, YEAR_MIN, keep_counted, load_frame
from workers.statistics import NARROWED_ENTRIES, Statistics
from workers.years import yearly_sums

QUESTION = "Percent of adults aged 18 years and older who have obesity"
STATE = "Ohio"
YEARS = [2015, 2020]


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _median_us(call: Callable[[], object], reps: int) -> float:
    return statistics.median(_seconds(call) for _ in range(reps)) * 1e6


def _ranges() -> Iterator[list[int]]:
    """Every years range, again and again: each is asked once per turn of 78."""
    years = range(YEAR_MIN, YEAR_MAX + 1)
    every = [[first, last] for first in years for last in years if first <= last]
    assert len(every) > NARROWED_ENTRIES  # so each one has left the cache when it returns
    return itertools.cycle(every)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.years", description=__doc__)
    parser.add_argument("--rows", type=int, default=BASE_ROWS)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    path = dataset(args.rows)
    started = time.perf_counter()
    frame = keep_counted(load_frame(path))
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    stats = Statistics(frame)
    built_s = time.perf_counter() - started
    yearly_s = _seconds(lambda: yearly_sums(frame))
    print(f"{args.rows:,} rows: read {read_s:.3f} s, Statistics() {built_s:.3f} s, of which")
    print(f"the per-year sums for `years` and state_trend take {yearly_s:.3f} s\n")
    print("| statistic | no years | years, new range | years, same range |")
    print("|---|---:|---:|---:|")
    ranges = _ranges()
    for name in STATISTICS:
        params: dict[str, object] = {"question": QUESTION}
        if name in STATE_STATISTICS:
            params["state"] = STATE
        plain = _median_us(lambda: stats.compute(name, params), args.reps)  # noqa: B023
        new = _median_us(
            lambda: stats.compute(name, {**params, "years": next(ranges)}),  # noqa: B023
            args.reps,
        )
        same = _median_us(lambda: stats.compute(name, {**params, "years": YEARS}), args.reps)  # noqa: B023
        print(f"| {name} | {plain:,.0f} us | {new:,.0f} us | {same:,.0f} us |")


if __name__ == "__main__":
    main()
