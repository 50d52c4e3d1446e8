"""An independent, deliberately plain computation of the nine statistics, for checking.

It reads the CSV with the standard `csv` module and follows the contract's words
directly, sharing no code with the workers, so that the two can disagree.
"""

from __future__ import annotations

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
"""The subset file's header as docs/dataset-format.md shows it (the full file's too)."""

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

Row = tuple[str, str, str, float]  # state, category, stratum, value


class Reference:
    """Counted rows of a CSV file, grouped by question, and the answers they give."""

    def __init__(self, path: Path) -> None:
        self.rows: dict[str, list[Row]] = defaultdict(list)
        with open(path, newline="") as stream:
            for record in csv.DictReader(stream):
                value = _number(record["Data_Value"])
                years_ok = int(record["YearStart"]) >= 2011 and int(record["YearEnd"]) <= 2022
                if value is not None and years_ok:
                    self.rows[record["Question"]].append(
                        (record["LocationDesc"], record["StratificationCategory1"],
                         record["Stratification1"], value)
                    )  # fmt: skip

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

    def answer(self, statistic: str, question: str, state: str | None = None) -> dict[str, Any]:
        """The contract's answer for a statistic (per-state ones take `state`)."""
        where = str(state)
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


def close_enough(got: Any, want: Any, tolerance: float = 0.01) -> bool:
    """Same keys (recursively) and numbers within `tolerance`."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and set(got) == set(want)
            and all(close_enough(got[k], want[k], tolerance) for k in want)
        )
    return isinstance(got, int | float) and math.isclose(got, want, abs_tol=tolerance)


def params_for(statistic: str, question: str, state: str) -> dict[str, Any]:
    """The parameters a statistic takes: the question, and the state if it is per-state."""
    if statistic in STATE_STATISTICS:
        return {"question": question, "state": state}
    return {"question": question}


def assert_close(actual: Any, expected: Any, path: str = "answer") -> None:
    """Equal maps, floats within the contract's 0.01 tolerance."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a map, got {actual!r}"
        assert set(actual) == set(expected), f"{path}: keys differ: {set(actual) ^ set(expected)}"
        for key, value in expected.items():
            assert_close(actual[key], value, f"{path}[{key!r}]")
    else:
        assert abs(actual - expected) <= 0.01, f"{path}: {actual} != {expected}"
