"""Unit tests of workers.statistics on small hand-written frames with hand-computed answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from protocol.messages import STATE_STATISTICS, STATISTICS
from protocol.questions import BEST_IS_MAX, BEST_IS_MIN
from workers.statistics import StatisticError, Statistics

OBESITY = "Percent of adults aged 18 years and older who have obesity"  # best is the minimum
MUSCLE = "Percent of adults who engage in muscle-strengthening activities on 2 or more days a week"
NO_ACTIVITY = "Percent of adults who engage in no leisure-time physical activity"  # not in data
SODA = "Percent of adults who drink regular soda or pop at least one time daily"  # not a nine
COLUMNS = (
    "YearStart",
    "YearEnd",
    "LocationDesc",
    "Question",
    "Data_Value",
    "StratificationCategory1",
    "Stratification1",
)
NAN = float("nan")

# (state, category, stratum, Data_Value, year)
OBESITY_ROWS = [
    ("Alabama", "Age (years)", "18 - 24", 20.0, 2015),
    ("Alabama", "Age (years)", "18 - 24", 24.0, 2016),
    ("Alabama", "Gender", "Female", 31.0, 2016),
    ("Ohio", "Gender", "Male", 40.0, 2011),
    ("Ohio", "Gender", "Female", 30.0, 2022),
    ("Ohio", "Gender", "Female", NAN, 2017),  # empty: skipped, not a zero
    ("Guam", "Total", "Total", 10.0, 2013),
    ("Texas", "Total", "Total", 40.0, 2019),
    ("Texas", "Total", "Total", 99.0, 2010),  # before 2011
    ("Texas", "Total", "Total", 99.0, 2023),  # after 2022
    ("Utah", "Income", "$75,000 or greater", 15.0, 2020),
    ("National", "Total", "Total", 30.0, 2019),
    ("Iowa", "Race/Ethnicity", "Asian", 20.0, 2018),
    ("Vermont", "Total", "Total", NAN, 2015),  # Vermont has no counted row
    ("Vermont", "Total", "Total", 50.0, 2024),
]
# Alabama (20 + 24 + 31) / 3 = 25; Ohio (40 + 30) / 2 = 35; Guam 10; Texas 40; Utah 15;
# National 30; Iowa 20. Global: (20+24+31+40+30+10+40+15+30+20) / 10 = 260 / 10 = 26.
MUSCLE_ROWS = [
    ("Alabama", "Total", "Total", 10.0, 2019),
    ("Ohio", "Total", "Total", 20.0, 2019),
    ("Guam", "Total", "Total", 30.0, 2019),
    ("Texas", "Total", "Total", 40.0, 2019),
    ("Utah", "Total", "Total", 50.0, 2019),
    ("Iowa", "Total", "Total", 55.0, 2019),
    ("Iowa", "Total", "Total", 65.0, 2021),  # Iowa (55 + 65) / 2 = 60
]
SODA_ROWS = [("Alabama", "Total", "Total", 5.0, 2017)]


def _frame(*questions: tuple[str, list[tuple[str, str, str, float, int]]]) -> pd.DataFrame:
    records = [
        (year, year, state, question, value, category, stratum)
        for question, rows in questions
        for state, category, stratum, value, year in rows
    ]
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))


@pytest.fixture(scope="module")
def stats() -> Statistics:
    return Statistics(_frame((OBESITY, OBESITY_ROWS), (MUSCLE, MUSCLE_ROWS), (SODA, SODA_ROWS)))


def test_the_catalogue_has_the_contracts_nine_statistics_then_state_trend() -> None:
    assert Statistics.names == STATISTICS and len(set(STATISTICS)) == 10
    assert STATISTICS[-1] == "state_trend" and "state_trend" in STATE_STATISTICS
    assert set(STATISTICS) > STATE_STATISTICS


def test_question_directions() -> None:
    assert len(BEST_IS_MIN) == 5
    assert len(BEST_IS_MAX) == 4
    assert OBESITY in BEST_IS_MIN
    assert MUSCLE in BEST_IS_MAX
    assert NO_ACTIVITY in BEST_IS_MIN
    assert not BEST_IS_MIN & BEST_IS_MAX


def test_states_mean_ascending(stats: Statistics) -> None:
    answer = stats.compute("states_mean", {"question": OBESITY})
    assert list(answer.items()) == [
        ("Guam", 10.0),
        ("Utah", 15.0),
        ("Iowa", 20.0),
        ("Alabama", pytest.approx(25.0)),
        ("National", 30.0),
        ("Ohio", 35.0),
        ("Texas", 40.0),
    ]


def test_state_mean(stats: Statistics) -> None:
    assert stats.compute("state_mean", {"question": OBESITY, "state": "Alabama"}) == {
        "Alabama": pytest.approx(25.0)
    }
    assert stats.compute("state_mean", {"question": MUSCLE, "state": "Iowa"}) == {"Iowa": 60.0}


def test_best_and_worst_when_best_is_the_minimum(stats: Statistics) -> None:
    best = stats.compute("best5", {"question": OBESITY})
    worst = stats.compute("worst5", {"question": OBESITY})
    assert list(best) == ["Guam", "Utah", "Iowa", "Alabama", "National"]  # lowest, ascending
    assert list(worst) == ["Texas", "Ohio", "National", "Alabama", "Iowa"]  # highest, descending
    assert worst["Texas"] == 40.0
    assert best["Guam"] == 10.0


def test_best_and_worst_when_best_is_the_maximum(stats: Statistics) -> None:
    best = stats.compute("best5", {"question": MUSCLE})
    worst = stats.compute("worst5", {"question": MUSCLE})
    assert list(best.items()) == [
        ("Iowa", 60.0),
        ("Utah", 50.0),
        ("Texas", 40.0),
        ("Guam", 30.0),
        ("Ohio", 20.0),
    ]
    assert list(worst) == ["Alabama", "Ohio", "Guam", "Texas", "Utah"]


def test_global_mean_is_over_rows_not_states(stats: Statistics) -> None:
    # Rows: 260 / 10 = 26; the mean of the seven state means would be 175 / 7 = 25.0.
    assert stats.compute("global_mean", {"question": OBESITY}) == {
        "global_mean": pytest.approx(26.0)
    }
    # (10 + 20 + 30 + 40 + 50 + 55 + 65) / 7 = 270 / 7
    assert stats.compute("global_mean", {"question": MUSCLE})["global_mean"] == pytest.approx(
        38.5714286
    )


def test_diff_from_mean_is_global_minus_state(stats: Statistics) -> None:
    assert stats.compute("diff_from_mean", {"question": OBESITY}) == {
        "Guam": pytest.approx(16.0),
        "Utah": pytest.approx(11.0),
        "Iowa": pytest.approx(6.0),
        "Alabama": pytest.approx(1.0),
        "National": pytest.approx(-4.0),
        "Ohio": pytest.approx(-9.0),
        "Texas": pytest.approx(-14.0),
    }
    answer = stats.compute("state_diff_from_mean", {"question": OBESITY, "state": "Ohio"})
    assert answer == {"Ohio": pytest.approx(-9.0)}


def test_mean_by_category_keys_are_str_of_three_tuples(stats: Statistics) -> None:
    assert stats.compute("mean_by_category", {"question": OBESITY}) == {
        "('Alabama', 'Age (years)', '18 - 24')": pytest.approx(22.0),
        "('Alabama', 'Gender', 'Female')": 31.0,
        "('Guam', 'Total', 'Total')": 10.0,
        "('Iowa', 'Race/Ethnicity', 'Asian')": 20.0,
        "('National', 'Total', 'Total')": 30.0,
        "('Ohio', 'Gender', 'Female')": 30.0,
        "('Ohio', 'Gender', 'Male')": 40.0,
        "('Texas', 'Total', 'Total')": 40.0,
        "('Utah', 'Income', '$75,000 or greater')": 15.0,
    }


def test_state_mean_by_category_keys_are_str_of_pairs(stats: Statistics) -> None:
    answer = stats.compute("state_mean_by_category", {"question": OBESITY, "state": "Alabama"})
    assert answer == {
        "Alabama": {"('Age (years)', '18 - 24')": pytest.approx(22.0), "('Gender', 'Female')": 31.0}
    }
    answer = stats.compute("state_mean_by_category", {"question": OBESITY, "state": "Ohio"})
    assert answer == {"Ohio": {"('Gender', 'Female')": 30.0, "('Gender', 'Male')": 40.0}}


def _floats(answer: dict[str, Any]) -> list[object]:
    return [
        leaf
        for value in answer.values()
        for leaf in (_floats(value) if isinstance(value, dict) else [value])
    ]


@pytest.mark.parametrize("name", Statistics.names)
def test_answers_are_plain_floats(stats: Statistics, name: str) -> None:
    params = {"question": OBESITY}
    if name in STATE_STATISTICS:
        params["state"] = "Ohio"
    answer = stats.compute(name, params)
    assert answer
    assert all(type(value) is float for value in _floats(answer))


def test_answers_are_fresh_copies(stats: Statistics) -> None:
    stats.compute("states_mean", {"question": OBESITY}).clear()
    stats.compute("mean_by_category", {"question": OBESITY}).clear()
    nested = stats.compute("state_mean_by_category", {"question": OBESITY, "state": "Ohio"})
    nested["Ohio"].clear()
    assert len(stats.compute("states_mean", {"question": OBESITY})) == 7
    assert len(stats.compute("mean_by_category", {"question": OBESITY})) == 9
    again = stats.compute("state_mean_by_category", {"question": OBESITY, "state": "Ohio"})
    assert len(again["Ohio"]) == 2


@pytest.mark.parametrize(
    ("statistic", "params", "reason"),
    [
        ("median", {"question": OBESITY}, "unknown statistic 'median'"),
        ("states_mean", {}, "missing parameter 'question'"),
        ("states_mean", {"question": 7}, "parameter 'question' must be a string, got int"),
        ("states_mean", {"question": NO_ACTIVITY}, "question not in the data set"),
        ("states_mean", {"question": "obesty"}, "question not in the data set: 'obesty'"),
        ("state_mean", {"question": OBESITY}, "missing parameter 'state'"),
        ("state_mean", {"question": OBESITY, "state": None}, "'state' must be a string"),
        (
            "state_mean",
            {"question": OBESITY, "state": "Vermont"},
            f"no data for state 'Vermont' and question '{OBESITY}'",
        ),
        ("state_diff_from_mean", {"question": MUSCLE, "state": "National"}, "no data for state"),
        ("state_mean_by_category", {"question": SODA, "state": "Ohio"}, "no data for state"),
        ("states_mean", {"question": OBESITY, "state": "Ohio"}, "unexpected parameter(s) 'state'"),
        ("state_mean", {"question": OBESITY, "state": "Ohio", "year": 2019}, "'year'"),
        ("best5", {"question": SODA}, "has no best/worst direction"),
        ("worst5", {"question": SODA}, "has no best/worst direction"),
    ],
)
def test_bad_requests_end_in_a_reason(
    stats: Statistics, statistic: str, params: dict[str, object], reason: str
) -> None:
    assert reason in reason_of(stats, statistic, params)


def reason_of(stats: Statistics, statistic: str, params: dict[str, object]) -> str:
    """The reason of the `StatisticError` that `statistic` must end in for `params`."""
    with pytest.raises(StatisticError) as caught:
        stats.compute(statistic, params)
    return str(caught.value)


def test_malformed_call_arguments(stats: Statistics) -> None:
    with pytest.raises(StatisticError, match="unknown statistic"):
        stats.compute(None, {"question": OBESITY})  # type: ignore[arg-type]
    with pytest.raises(StatisticError, match="parameters must be a map"):
        stats.compute("states_mean", [("question", OBESITY)])  # type: ignore[arg-type]


def test_question_outside_the_nine_still_has_means(stats: Statistics) -> None:
    assert stats.compute("states_mean", {"question": SODA}) == {"Alabama": 5.0}
    assert stats.questions == tuple(sorted((OBESITY, MUSCLE, SODA)))


def test_no_frame_is_kept(stats: Statistics) -> None:
    assert not any(isinstance(value, pd.DataFrame) for value in vars(stats).values())


def test_overflow_is_an_error_not_infinity() -> None:
    huge = [("Ohio", "Total", "Total", 1.5e308, 2019), ("Ohio", "Total", "Total", 1.5e308, 2020)]
    stats = Statistics(_frame((OBESITY, huge)))
    with pytest.raises(StatisticError, match="not a finite number"):
        stats.compute("global_mean", {"question": OBESITY})


def test_rows_without_a_stratum_count_for_the_state_only() -> None:
    rows = [("Ohio", "Total", "Total", 10.0, 2019), ("Ohio", NAN, NAN, 20.0, 2019)]
    stats = Statistics(_frame((OBESITY, rows)))  # type: ignore[arg-type]
    assert stats.compute("state_mean", {"question": OBESITY, "state": "Ohio"}) == {"Ohio": 15.0}
    assert stats.compute("mean_by_category", {"question": OBESITY}) == {
        "('Ohio', 'Total', 'Total')": 10.0
    }


def test_from_csv_reads_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text(
        "YearStart,YearEnd,LocationDesc,Question,Data_Value,StratificationCategory1,"
        "Stratification1,Extra\n"
        f'2019,2019,Ohio,{OBESITY},30.5,Income,"$75,000 or greater",x\n'
        f"2019,2019,Ohio,{OBESITY},,Total,Total,x\n"
        f"2020,2020,Ohio,{OBESITY},not a number,Total,Total,x\n"
        f"2009,2009,Ohio,{OBESITY},90,Total,Total,x\n"
        f"2020,2020,Ohio,{OBESITY},32.5,Total,Total,x\n",
        encoding="utf-8",
    )
    stats = Statistics.from_csv(path)
    # Ohio: (30.5 + 32.5) / 2 = 31.5
    assert stats.compute("states_mean", {"question": OBESITY}) == {"Ohio": 31.5}
    answer = stats.compute("state_mean_by_category", {"question": OBESITY, "state": "Ohio"})
    assert answer == {
        "Ohio": {"('Income', '$75,000 or greater')": 30.5, "('Total', 'Total')": 32.5}
    }
