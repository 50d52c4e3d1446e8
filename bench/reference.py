"""An independent, deliberately plain computation of the statistics, for checking.

It reads the CSV with the standard `csv` module and follows the contract's words
directly, sharing no code with the workers, so that the two can disagree. It also
holds the one comparison of answers (`mismatch`, up to the contract's tolerance). It
lives in bench/ so that the soak can use it as well as the tests (tests import bench,
never the reverse).
"""

from __future__ import annotations

import copy
import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from protocol.messages import STATE_STATISTICS

CSV_HEADER_LINE = (
    ",YearStart,YearEnd,LocationAbbr,LocationDesc,Datasource,Class,Topic,Question,"
    "Data_Value_Unit,Data_Value_Type,Data_Value,Data_Value_Alt,Data_Value_Footnote_Symbol,"
    "Data_Value_Footnote,Low_Confidence_Limit,High_Confidence_Limit ,Sample_Size,Total,"
    "Age(years),Education,Gender,Income,Race/Ethnicity,GeoLocation,ClassID,TopicID,QuestionID,"
    "DataValueTypeID,LocationID,StratificationCategory1,Stratification1,"
    "StratificationCategoryId1,StratificationID1"
)
"""The subset file's header as docs/dataset.md shows it (the full file's too)."""

MINIMISED = {
    "Percent of adults aged 18 years and older who have an overweight classification",
    "Percent of adults aged 18 years and older who have obesity",
    "Percent of adults who engage in no leisure-time physical activity",
    "Percent of adults who report consuming fruit less than one time daily",
    "Percent of adults who report consuming vegetables less than one time daily",
}
MAXIMISED = {
    "Percent of adults who achieve at least 150 minutes a week of moderate-intensity aerobic "
    "physical activity or 75 minutes a week of vigorous-intensity aerobic activity (or an "
    "equivalent combination)",
    "Percent of adults who achieve at least 150 minutes a week of moderate-intensity aerobic "
    "physical activity or 75 minutes a week of vigorous-intensity aerobic physical activity and "
    "engage in muscle-strengthening activities on 2 or more days a week",
    "Percent of adults who achieve at least 300 minutes a week of moderate-intensity aerobic "
    "physical activity or 150 minutes a week of vigorous-intensity aerobic activity (or an "
    "equivalent combination)",
    "Percent of adults who engage in muscle-strengthening activities on 2 or more days a week",
}
QUESTIONS = sorted(MINIMISED | MAXIMISED)

TOLERANCE = 0.01  # on every number of an answer: docs/statistics.md
Row = tuple[str, str, str, float, int, int]  # state, category, stratum, value, start, end


class Reference:
    """Counted rows of a CSV file, grouped by question, and the answers they give."""

    def __init__(self, path: Path) -> None:
        self.rows: dict[str, list[Row]] = defaultdict(list)
        with open(path, newline="") as stream:
            for record in csv.DictReader(stream):
                value = _number(record["Data_Value"])
                start, end = int(record["YearStart"]), int(record["YearEnd"])
                if value is not None and start >= 2011 and end <= 2022:
                    self.rows[record["Question"]].append(
                        (record["LocationDesc"], record["StratificationCategory1"],
                         record["Stratification1"], value, start, end)
                    )  # fmt: skip

    def within(self, first: int, last: int) -> Reference:
        """The same data with only the rows of the years `first`..`last` (both included)."""
        narrowed = copy.copy(self)
        narrowed.rows = defaultdict(list)
        for question, rows in self.rows.items():
            narrowed.rows[question] = [r for r in rows if first <= r[4] and r[5] <= last]
        return narrowed

    def states(self, question: str) -> list[str]:
        return sorted({row[0] for row in self.rows[question]})

    def states_mean(self, question: str) -> dict[str, float]:
        means = _means((row[0], row[3]) for row in self.rows[question])
        return dict(sorted(means.items(), key=lambda item: item[1]))

    def global_mean(self, question: str) -> dict[str, float]:
        values = [row[3] for row in self.rows[question]]
        return {"global_mean": sum(values) / len(values)}

    def best5(self, question: str) -> dict[str, float]:
        ranked = list(self.states_mean(question).items())
        return dict(ranked[:5] if question in MINIMISED else ranked[::-1][:5])

    def worst5(self, question: str) -> dict[str, float]:
        ranked = list(self.states_mean(question).items())
        return dict(ranked[::-1][:5] if question in MINIMISED else ranked[:5])

    def diff_from_mean(self, question: str) -> dict[str, float]:
        overall = self.global_mean(question)["global_mean"]
        return {state: overall - mean for state, mean in self.states_mean(question).items()}

    def mean_by_category(self, question: str) -> dict[str, float]:
        groups = ((str((r[0], r[1], r[2])), r[3]) for r in self.rows[question])
        return _means(groups)

    def state_trend(self, question: str, state: str) -> dict[str, Any]:
        years = _means((str(r[4]), r[3]) for r in self.rows[question] if r[0] == state)
        return {state: dict(sorted(years.items()))}

    def answer(self, statistic: str, question: str, state: str | None = None) -> dict[str, Any]:
        """The contract's answer for a statistic (per-state ones take `state`)."""
        where = str(state)
        if statistic == "state_trend":
            return self.state_trend(question, where)
        if statistic == "state_mean":
            return {where: self.states_mean(question)[where]}
        if statistic == "state_diff_from_mean":
            return {where: self.diff_from_mean(question)[where]}
        if statistic == "state_mean_by_category":
            rows = (r for r in self.rows[question] if r[0] == where)
            return {where: _means((str((r[1], r[2])), r[3]) for r in rows)}
        answer: dict[str, Any] = getattr(self, statistic)(question)
        return answer


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _means(pairs: Any) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for key, value in pairs:
        sums[key] += value
        counts[key] += 1
    return {key: sums[key] / counts[key] for key in sums}


def mismatch(got: Any, want: Any, path: str = "answer") -> str | None:
    """Where `got` differs from `want`, or None: the same keys (recursively) and numbers
    within TOLERANCE. The one answer comparison of the tests and the soak."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{path}: expected a map, got {got!r}"
        if set(got) != set(want):
            return f"{path}: keys differ: {sorted(set(got) ^ set(want))}"
        found = (mismatch(got[key], value, f"{path}[{key!r}]") for key, value in want.items())
        return next((problem for problem in found if problem), None)
    if not isinstance(got, int | float) or abs(got - want) > TOLERANCE:
        return f"{path}: {got!r} != {want!r}"
    return None


def close_enough(got: Any, want: Any) -> bool:
    """`got` matches `want` up to TOLERANCE (see `mismatch`)."""
    return mismatch(got, want) is None


def assert_close(actual: Any, expected: Any, path: str = "answer") -> None:
    """Assert that `actual` matches `expected` up to TOLERANCE, saying where it does not."""
    problem = mismatch(actual, expected, path)
    assert problem is None, problem


def params_for(statistic: str, question: str, state: str) -> dict[str, Any]:
    """The parameters a statistic takes: the question, and the state if it is per-state."""
    if statistic in STATE_STATISTICS:
        return {"question": question, "state": state}
    return {"question": question}
