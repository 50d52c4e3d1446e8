"""Unit tests of workers.standin: the generated file looks like the real subset file."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bench.reference import CSV_HEADER_LINE
from protocol.fingerprint import file_sha256, is_standin
from protocol.questions import BEST_IS_MAX, BEST_IS_MIN
from workers.dataset import load_frame
from workers.standin import generate, main
from workers.statistics import Statistics

STRATA = {
    "Age (years)": {"18 - 24", "25 - 34", "35 - 44", "45 - 54", "55 - 64", "65 or older"},
    "Education": {
        "College graduate",
        "High school graduate",
        "Less than high school",
        "Some college or technical school",
    },
    "Gender": {"Female", "Male"},
    "Income": {
        "$15,000 - $24,999",
        "$25,000 - $34,999",
        "$35,000 - $49,999",
        "$50,000 - $74,999",
        "$75,000 or greater",
        "Data not reported",
        "Less than $15,000",
    },
    "Race/Ethnicity": {
        "2 or more races",
        "American Indian/Alaska Native",
        "Asian",
        "Hawaiian/Pacific Islander",
        "Hispanic",
        "Non-Hispanic Black",
        "Non-Hispanic White",
        "Other",
    },
    "Total": {"Total"},
}
STRATUM_COLUMN = {
    "Age (years)": "Age(years)",
    "Education": "Education",
    "Gender": "Gender",
    "Income": "Income",
    "Race/Ethnicity": "Race/Ethnicity",
    "Total": "Total",
}
QUESTION_IDS = {
    "Q036": "Percent of adults aged 18 years and older who have obesity",
    "Q037": "Percent of adults aged 18 years and older who have an overweight classification",
    "Q046": "Percent of adults who engage in muscle-strengthening activities on 2 or more days "
    "a week",
    "Q047": "Percent of adults who engage in no leisure-time physical activity",
    "Q018": "Percent of adults who report consuming fruit less than one time daily",
    "Q019": "Percent of adults who report consuming vegetables less than one time daily",
}
FOOTNOTE = "Data not available because sample size is insufficient."


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("standin") / "standin.csv"
    assert generate(path) == 18_000
    return path


@pytest.fixture(scope="module")
def rows(standin: Path) -> list[dict[str, str]]:
    with standin.open(newline="", encoding="utf-8") as source:
        return list(csv.DictReader(source))


def test_header_is_exact_and_index_runs(standin: Path, rows: list[dict[str, str]]) -> None:
    with standin.open(encoding="utf-8") as source:
        assert source.readline() == CSV_HEADER_LINE + "\n"
    assert len(rows) == 18_000
    assert [row[""] for row in rows[:3]] == ["0", "1", "2"]
    assert rows[-1][""] == "17999"


def test_locations(rows: list[dict[str, str]]) -> None:
    names = {row["LocationDesc"] for row in rows}
    assert len(names) == 55
    assert {"District of Columbia", "Guam", "Puerto Rico", "Virgin Islands", "National"} <= names
    assert {"Alabama", "Wyoming", "Ohio", "West Virginia"} <= names
    geo = re.compile(r"^\(-?\d+\.\d+, -?\d+\.\d+\)$")
    for row in rows:
        if row["LocationDesc"] == "National":
            assert (row["LocationAbbr"], row["GeoLocation"]) == ("US", "")
        else:
            assert geo.match(row["GeoLocation"]), row["GeoLocation"]


def test_questions_and_their_ids(rows: list[dict[str, str]]) -> None:
    assert {row["Question"] for row in rows} == BEST_IS_MIN | BEST_IS_MAX
    ids = {(row["QuestionID"], row["Question"]) for row in rows}
    assert len(ids) == 9
    assert set(QUESTION_IDS.items()) <= ids
    assert {row["QuestionID"] for row in rows} == {
        "Q036", "Q037", "Q043", "Q044", "Q045", "Q046", "Q047", "Q018", "Q019"
    }  # fmt: skip
    classes = {(row["QuestionID"][:3], row["Class"], row["Topic"]) for row in rows}
    assert ("Q03", "Obesity / Weight Status", "Obesity / Weight Status") in classes
    assert ("Q04", "Physical Activity", "Physical Activity - Behavior") in classes
    assert ("Q01", "Fruits and Vegetables", "Fruits and Vegetables - Behavior") in classes
    assert len(classes) == 3


def test_strata_fill_exactly_their_own_column(rows: list[dict[str, str]]) -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        category, stratum = row["StratificationCategory1"], row["Stratification1"]
        seen[category].add(stratum)
        filled = {name for name in STRATUM_COLUMN.values() if row[name]}
        assert filled == {STRATUM_COLUMN[category]}
        assert row[STRATUM_COLUMN[category]] == stratum
        assert row["StratificationCategoryId1"] and row["StratificationID1"]
    assert seen == STRATA


def test_years_and_datasource(rows: list[dict[str, str]]) -> None:
    years = {int(row["YearStart"]) for row in rows}
    assert years == set(range(2011, 2023))
    for row in rows:
        assert row["YearStart"] == row["YearEnd"]
        expected = (
            "BRFSS"
            if row["YearStart"] == "2022"
            else ("Behavioral Risk Factor Surveillance System")
        )
        assert row["Datasource"] == expected


def test_empty_values_and_footnote_rows(rows: list[dict[str, str]]) -> None:
    footnoted = [row for row in rows if row["Data_Value_Footnote_Symbol"] == "~"]
    assert 100 < len(footnoted) < 5_000
    for row in footnoted:
        assert row["Data_Value_Footnote"] == FOOTNOTE
        assert row["Data_Value_Alt"] == row["Sample_Size"] == ""
        assert row["Low_Confidence_Limit"] == row["High_Confidence_Limit "] == ""
    assert any(row["Data_Value"] == "" for row in footnoted)
    assert any(row["Data_Value"] != "" for row in footnoted)
    for row in rows:
        if row["Data_Value_Footnote_Symbol"] == "":
            value = float(row["Data_Value"])
            assert 0.0 <= value <= 100.0
            assert (
                float(row["Low_Confidence_Limit"]) <= value <= float(row["High_Confidence_Limit "])
            )


def test_strata_per_location_and_question(rows: list[dict[str, str]]) -> None:
    strata: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for row in rows:
        key = (row["LocationDesc"], row["Question"])
        strata[key].add((row["StratificationCategory1"], row["Stratification1"]))
    assert len(strata) == 55 * 9
    counts = [len(found) for found in strata.values()]
    assert min(counts) >= 21
    assert max(counts) <= 28
    assert min(counts) < 28  # some combinations are missing, as in the real file


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a.csv", rows=2_000, seed=7)
    generate(tmp_path / "b.csv", rows=2_000, seed=7)
    generate(tmp_path / "c.csv", rows=2_000, seed=8)
    first = (tmp_path / "a.csv").read_bytes()
    assert first == (tmp_path / "b.csv").read_bytes()
    assert first != (tmp_path / "c.csv").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.csv", "b.csv", "c.csv"]


def test_row_count_is_exact_beyond_one_round(tmp_path: Path) -> None:
    generate(tmp_path / "none.csv", rows=0)
    assert (tmp_path / "none.csv").read_text(encoding="utf-8") == CSV_HEADER_LINE + "\n"
    generate(tmp_path / "many.csv", rows=40_000, seed=1)  # about three rows per combination
    with (tmp_path / "many.csv").open(encoding="utf-8") as source:
        assert sum(1 for _ in source) == 40_001
    with pytest.raises(ValueError, match="rows"):
        generate(tmp_path / "bad.csv", rows=-1)


def test_loads_and_answers(standin: Path) -> None:
    frame = load_frame(standin)
    assert 15_000 < len(frame) < 18_000  # the empty values are dropped
    stats = Statistics(frame)
    assert set(stats.questions) == BEST_IS_MIN | BEST_IS_MAX
    for question in stats.questions:
        means = stats.compute("states_mean", {"question": question})
        assert len(means) == 55
        assert all(0.0 < mean < 100.0 for mean in means.values())
        best = stats.compute("best5", {"question": question})
        worst = stats.compute("worst5", {"question": question})
        assert len(best) == len(worst) == 5
        assert not set(best) & set(worst)


def test_main_prints_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "cli.csv"
    assert main(["--rows", "25", "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 25 rows to {out}" in printed
    assert "seed 3" in printed
    assert len(out.read_text(encoding="utf-8").splitlines()) == 26


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    out = tmp_path / "program.csv"
    done = subprocess.run(
        [sys.executable, "-m", "workers.standin", "--rows", "10", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 10 rows" in done.stdout
    assert out.read_text(encoding="utf-8").startswith(CSV_HEADER_LINE + "\n0,")


def test_the_default_standin_has_the_known_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "standin.csv"
    generate(path)
    assert is_standin(file_sha256(path))
