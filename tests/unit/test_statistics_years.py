"""Unit tests of `years`, `state_trend` and names as people type them (workers.statistics),
on the small frame of test_statistics.py, with hand-computed answers."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.messages import STATE_STATISTICS, STATISTICS
from tests.unit.test_statistics import (
    MUSCLE,
    MUSCLE_ROWS,
    OBESITY,
    OBESITY_ROWS,
    SODA,
    SODA_ROWS,
    _floats,
    _frame,
    reason_of,
)
from workers.statistics import NARROWED_ENTRIES, StatisticError, Statistics

# Obesity rows by year: 2011 Ohio 40; 2013 Guam 10; 2015 Alabama 20; 2016 Alabama 24, 31;
# 2018 Iowa 20; 2019 Texas 40, National 30; 2020 Utah 15; 2022 Ohio 30.


@pytest.fixture(scope="module")
def stats() -> Statistics:
    return Statistics(_frame((OBESITY, OBESITY_ROWS), (MUSCLE, MUSCLE_ROWS), (SODA, SODA_ROWS)))


def ask(stats: Statistics, statistic: str, **params: Any) -> dict[str, Any]:
    return stats.compute(statistic, params)


def test_years_narrow_every_mean(stats: Statistics) -> None:
    # 2016..2019: Alabama (24 + 31) / 2 = 27.5, Iowa 20, Texas 40, National 30;
    # global (24 + 31 + 20 + 40 + 30) / 5 = 29.
    years = [2016, 2019]
    assert list(ask(stats, "states_mean", question=OBESITY, years=years).items()) == [
        ("Iowa", 20.0),
        ("Alabama", 27.5),
        ("National", 30.0),
        ("Texas", 40.0),
    ]
    assert ask(stats, "global_mean", question=OBESITY, years=years) == {"global_mean": 29.0}
    assert ask(stats, "diff_from_mean", question=OBESITY, years=years) == {
        "Iowa": 9.0,
        "Alabama": 1.5,
        "National": -1.0,
        "Texas": -11.0,
    }
    assert list(ask(stats, "best5", question=OBESITY, years=years)) == [
        "Iowa",
        "Alabama",
        "National",
        "Texas",
    ]
    assert ask(stats, "state_mean", question=OBESITY, state="Alabama", years=years) == {
        "Alabama": 27.5
    }
    assert ask(stats, "state_diff_from_mean", question=OBESITY, state="Texas", years=years) == {
        "Texas": -11.0
    }


def test_years_narrow_the_category_means(stats: Statistics) -> None:
    # 2015..2016: Alabama's 18 - 24 rows (20 + 24) / 2 = 22 and its Female row 31.
    assert ask(stats, "mean_by_category", question=OBESITY, years=(2015, 2016)) == {
        "('Alabama', 'Age (years)', '18 - 24')": 22.0,
        "('Alabama', 'Gender', 'Female')": 31.0,
    }
    answer = ask(
        stats, "state_mean_by_category", question=OBESITY, state="Ohio", years=[2022, 2022]
    )
    assert answer == {"Ohio": {"('Gender', 'Female')": 30.0}}


@pytest.mark.parametrize("name", [s for s in STATISTICS if s != "state_trend"])
def test_all_years_give_the_answers_without_years(stats: Statistics, name: str) -> None:
    params: dict[str, Any] = {"question": OBESITY}
    if name in STATE_STATISTICS:
        params["state"] = "Alabama"
    without = stats.compute(name, params)
    within = stats.compute(name, {**params, "years": [2011, 2022]})
    assert _keys(within) == _keys(without)
    assert _floats(within) == pytest.approx(_floats(without))


def _keys(answer: dict[str, Any]) -> list[object]:
    return [
        (key, _keys(value) if isinstance(value, dict) else None) for key, value in answer.items()
    ]


def test_state_trend_is_the_mean_per_year_ascending(stats: Statistics) -> None:
    assert ask(stats, "state_trend", question=OBESITY, state="Alabama") == {
        "Alabama": {"2015": 20.0, "2016": 27.5}
    }
    assert ask(stats, "state_trend", question=OBESITY, state="Ohio") == {
        "Ohio": {"2011": 40.0, "2022": 30.0}
    }
    trend = ask(stats, "state_trend", question=MUSCLE, state="Iowa")
    assert list(trend["Iowa"].items()) == [("2019", 55.0), ("2021", 65.0)]
    assert ask(stats, "state_trend", question=OBESITY, state="Alabama", years=[2016, 2022]) == {
        "Alabama": {"2016": 27.5}
    }


def test_state_trend_years_skip_rows_outside_the_contracts_years() -> None:
    rows = [("Texas", "Total", "Total", 40.0, 2019), ("Texas", "Total", "Total", 99.0, 2010)]
    assert ask(
        Statistics(_frame((OBESITY, rows))), "state_trend", question=OBESITY, state="TX"
    ) == {"Texas": {"2019": 40.0}}


@pytest.mark.parametrize(
    "given", [OBESITY, OBESITY.upper(), OBESITY.lower(), "obesity", "OBESITY", " Obesity "]
)
def test_a_question_by_its_text_in_any_case_or_its_id(stats: Statistics, given: str) -> None:
    assert ask(stats, "global_mean", question=given) == {"global_mean": pytest.approx(26.0)}


@pytest.mark.parametrize("given", ["Ohio", "ohio", "OHIO", "OH", "oh", " Oh "])
def test_a_state_by_its_name_in_any_case_or_its_usps_code(stats: Statistics, given: str) -> None:
    assert ask(stats, "state_mean", question="obesity", state=given) == {"Ohio": 35.0}
    assert ask(stats, "state_trend", question="obesity", state=given) == {
        "Ohio": {"2011": 40.0, "2022": 30.0}
    }


def test_national_is_us(stats: Statistics) -> None:
    assert ask(stats, "state_mean", question=OBESITY, state="us") == {"National": 30.0}


@pytest.mark.parametrize(
    ("statistic", "params", "reason"),
    [
        ("best5", {"question": "obesty"}, "closest: 'obesity' (" + OBESITY + ")"),
        ("best5", {"question": "musle"}, "closest: 'muscle' (" + MUSCLE + ")"),
        ("state_mean", {"question": OBESITY, "state": "Ohoi"}, "closest: 'Ohio'"),
        ("state_mean", {"question": OBESITY, "state": "Atlantis"}, "no data for state 'Atlantis'"),
        ("state_mean", {"question": OBESITY, "state": "Vermont"}, "no data for state 'Vermont'"),
        ("state_trend", {"question": OBESITY, "state": "vt"}, "no data for state 'Vermont'"),
        ("state_trend", {"question": OBESITY}, "missing parameter 'state'"),
        (
            "state_trend",
            {"question": OBESITY, "state": "Ohio", "years": [2013, 2020]},
            f"no data for state 'Ohio' and question '{OBESITY}' in years 2013-2020",
        ),
        (
            "global_mean",
            {"question": OBESITY, "years": [2012, 2012]},
            f"no data for question '{OBESITY}' in years 2012-2012",
        ),
        ("state_mean", {"question": OBESITY, "state": "Ohio", "years": [2016, 2019]}, "no data"),
    ],
)
def test_unknown_names_and_empty_years_end_in_a_reason(
    stats: Statistics, statistic: str, params: dict[str, object], reason: str
) -> None:
    assert reason in reason_of(stats, statistic, params)


def test_a_name_far_from_any_gets_no_suggestion(stats: Statistics) -> None:
    reason = reason_of(stats, "state_mean", {"question": OBESITY, "state": "Atlantis"})
    assert "closest" not in reason


@pytest.mark.parametrize(
    "years",
    [[2015], [2015, 2016, 2017], "2015-2020", [2020, 2015], [2010, 2015], [2015, 2023],
     [True, 2015], [2015.0, 2016], ["2015", "2016"], None, {"first": 2015}],
)  # fmt: skip
def test_malformed_years_are_refused(stats: Statistics, years: object) -> None:
    with pytest.raises(StatisticError, match=r"parameter 'years' must be \[FIRST, LAST\]"):
        ask(stats, "global_mean", question=OBESITY, years=years)


def test_ranges_kept_for_the_next_jobs_are_bounded_and_answers_fresh() -> None:
    stats = Statistics(_frame((OBESITY, OBESITY_ROWS)))
    first = ask(stats, "states_mean", question=OBESITY, years=[2016, 2019])
    first.clear()
    assert len(ask(stats, "states_mean", question=OBESITY, years=[2016, 2019])) == 4
    with_2016 = [[first, last] for first in range(2011, 2017) for last in range(2016, 2023)]
    assert len(with_2016) == 42 > NARROWED_ENTRIES
    for years in with_2016:
        ask(stats, "global_mean", question=OBESITY, years=years)
    assert len(stats._narrowed) == NARROWED_ENTRIES
