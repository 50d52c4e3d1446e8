"""The per-year side of the statistics: sums kept by year, for `years` and `state_trend`.

This module owns what a job with `years=[FIRST, LAST]` or a `state_trend` job reads
(docs/statistics.md, "Years"). At load, the counted rows are grouped once more, by
(question, state, category, stratum, YearStart, YearEnd), and each question keeps its
groups' sums and counts as arrays. A query then sums at most one group per cell and year
(12 x 55 x 28 = 18,480 for a question of the subset's vocabulary) with numpy, whatever
the number of rows: its cost is bounded by the vocabulary, not the data's size.
The answers without `years` never come through here (workers.statistics precomputes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from workers.dataset import VALUE_COLUMN, YEAR_MAX, YEAR_MIN

QUESTION = "Question"
STATE = "LocationDesc"
CATEGORY = ("StratificationCategory1", "Stratification1")
_START, _END = "YearStart", "YearEnd"
Cell = tuple[str | None, str | None, str | None]  # (state, category, stratum); None: empty
Years = tuple[int, int]
ALL_YEARS: Years = (YEAR_MIN, YEAR_MAX)


@dataclass(frozen=True, slots=True)
class YearlySums:
    """One question's sum and count of `Data_Value` per (cell, YearStart, YearEnd) group."""

    cells: tuple[Cell, ...]  # cell number -> (state, category, stratum)
    states: dict[str, int]  # state -> its number in `state`
    cell: npt.NDArray[np.intp]  # per group: its cell number
    state: npt.NDArray[np.intp]  # per group: its state number, -1 without a state
    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    total: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]

    def cells_within(self, years: Years) -> Iterator[tuple[Cell, float, int]]:
        """(cell, sum, count) of every cell with counted rows in `years` (both inclusive)."""
        keep = self._within(years)
        with np.errstate(over="ignore"):  # an overflowing sum is refused at compute() time
            totals = np.bincount(self.cell[keep], self.total[keep], len(self.cells))
        counts = np.bincount(self.cell[keep], self.count[keep], len(self.cells))
        for number in np.flatnonzero(counts):
            yield self.cells[number], float(totals[number]), int(counts[number])

    def trend(self, state: str, years: Years) -> dict[str, float]:
        """`state`'s mean per YearStart in `years`: {"2011": mean, ...}, ascending, only
        the years with counted rows (empty when it has none)."""
        number = self.states.get(state)
        if number is None:
            return {}
        keep = self._within(years) & (self.state == number)
        offset = self.start[keep] - YEAR_MIN
        with np.errstate(over="ignore"):
            totals = np.bincount(offset, self.total[keep], YEAR_MAX - YEAR_MIN + 1)
        counts = np.bincount(offset, self.count[keep], YEAR_MAX - YEAR_MIN + 1)
        return {
            str(YEAR_MIN + year): float(totals[year]) / int(counts[year])
            for year in np.flatnonzero(counts)
        }

    def _within(self, years: Years) -> npt.NDArray[np.bool_]:
        first, last = years
        within: npt.NDArray[np.bool_] = (self.start >= first) & (self.end <= last)
        return within


def yearly_sums(frame: pd.DataFrame) -> dict[str, YearlySums]:
    """Group `frame` (counted rows only) into one `YearlySums` per question text."""
    keys = [frame[name] for name in (QUESTION, STATE, *CATEGORY, _START, _END)]
    with np.errstate(over="ignore"):
        groups = (
            frame[VALUE_COLUMN]
            .groupby(keys, observed=True, dropna=False, sort=False)
            .agg(["sum", "count"])
            .reset_index()
        )
    texts = _text(groups[QUESTION])
    return {
        text: _question_sums(groups[texts == text])
        for text in pd.unique(texts)
        if text is not None  # nobody can ask for an empty question
    }


def _question_sums(groups: pd.DataFrame) -> YearlySums:
    """The `YearlySums` of one question's groups."""
    columns = [_text(groups[name]) for name in (STATE, *CATEGORY)]
    cell_codes, cells = pd.factorize(pd.Series(list(zip(*columns, strict=True)), dtype=object))
    state_codes, state_names = pd.factorize(columns[0])  # None (no state) gets -1
    return YearlySums(
        cells=tuple(cells),
        states={str(name): number for number, name in enumerate(state_names)},
        cell=cell_codes.astype(np.intp),
        state=state_codes.astype(np.intp),
        start=groups[_START].to_numpy(dtype=np.int64),
        end=groups[_END].to_numpy(dtype=np.int64),
        total=groups["sum"].to_numpy(dtype=np.float64),
        count=groups["count"].to_numpy(dtype=np.int64),
    )


def _text(column: pd.Series) -> npt.NDArray[np.object_]:
    """`column` as an object array of `str`, an empty cell (NaN, None, pd.NA) as None."""
    values = column.to_numpy(dtype=object)
    empty = pd.isna(values)
    texts = [None if gone else str(value) for value, gone in zip(values, empty, strict=True)]
    return np.array(texts, dtype=object)
