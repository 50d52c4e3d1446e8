"""Unit tests of workers.dataset: reading both file layouts and keeping the counted rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.reference import CSV_HEADER_LINE
from workers.dataset import REQUIRED_COLUMNS, DatasetError, keep_counted, load_frame

OBESITY = "Percent of adults aged 18 years and older who have obesity"
MUSCLE = "Percent of adults who engage in muscle-strengthening activities on 2 or more days a week"
AEROBIC_300 = (
    "Percent of adults who achieve at least 300 minutes a week of moderate-intensity aerobic "
    "physical activity or 150 minutes a week of vigorous-intensity aerobic activity "
    "(or an equivalent combination)"
)

# Three real rows of the CDC subset file, verbatim (split only to fit the line length).
OHIO_ROW = (
    "0,2017,2017,OH,Ohio,Behavioral Risk Factor Surveillance System,Obesity / Weight Status,"
    f"Obesity / Weight Status,{OBESITY},,Value,29.4,29.4,,,27.1,31.8,2599.0,,,,,"
    '"$75,000 or greater",,"(40.060210141, -82.404260056)",OWS,OWS1,Q036,VALUE,39,Income,'
    '"$75,000 or greater",INC,INC75PLUS'
)
WEST_VIRGINIA_ROW = (
    "12,2019,2019,WV,West Virginia,Behavioral Risk Factor Surveillance System,"
    f"Physical Activity,Physical Activity - Behavior,{AEROBIC_300},,Value,31.1,,~,"
    "Data not available because sample size is insufficient.,,,,,,,,,"
    'American Indian/Alaska Native,"(38.66551020200046, -80.71264013499967)",PA,PA1,Q045,'
    "VALUE,54,Race/Ethnicity,American Indian/Alaska Native,RACE,RACENAA"
)
NATIONAL_ROW = (
    "21,2019,2019,US,National,Behavioral Risk Factor Surveillance System,Physical Activity,"
    f"Physical Activity - Behavior,{MUSCLE},,Value,38.7,38.7,,,37.8,39.5,38468.0,,25 - 34,,,,,,"
    "PA,PA1,Q046,VALUE,59,Age (years),25 - 34,AGEYR,AGEYR2534"
)


def _ohio(index: int, year_start: str, year_end: str, value: str) -> str:
    """The Ohio row with another index, years and Data_Value."""
    fields = next(csv.reader([OHIO_ROW]))
    fields[0:3] = [str(index), year_start, year_end]
    fields[11] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def subset_file(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "subset.csv",
        [
            CSV_HEADER_LINE,
            OHIO_ROW,
            WEST_VIRGINIA_ROW,
            NATIONAL_ROW,
            _ohio(30, "2010", "2010", "50.0"),  # before 2011: dropped
            _ohio(31, "2023", "2023", "50.0"),  # after 2022: dropped
            _ohio(32, "2011", "2023", "50.0"),  # YearEnd after 2022: dropped
            _ohio(33, "2022", "2022", ""),  # empty value: dropped
            _ohio(34, "2011", "2011", "20.6"),  # kept: the first and the last year count
            _ohio(35, "2022", "2022", "33.0"),
        ],
    )


def test_subset_file_keeps_only_counted_rows(subset_file: Path) -> None:
    frame = load_frame(subset_file)
    assert list(frame.columns) == list(REQUIRED_COLUMNS)
    assert frame["Data_Value"].tolist() == [29.4, 31.1, 38.7, 20.6, 33.0]
    assert frame["YearStart"].tolist() == [2017, 2019, 2019, 2011, 2022]


def test_subset_quirks_quoted_commas_and_footnote_rows(subset_file: Path) -> None:
    frame = load_frame(subset_file)
    first = frame.iloc[0]
    assert first["LocationDesc"] == "Ohio"
    assert first["StratificationCategory1"] == "Income"
    assert first["Stratification1"] == "$75,000 or greater"  # quoted comma kept whole
    west_virginia = frame.iloc[1]  # a `~` footnote row whose Data_Value is set counts
    assert west_virginia["Question"] == AEROBIC_300
    assert west_virginia["Stratification1"] == "American Indian/Alaska Native"
    assert frame.iloc[2]["LocationDesc"] == "National"


def test_compact_dtypes(subset_file: Path) -> None:
    frame = load_frame(subset_file)
    for name in ("LocationDesc", "Question", "StratificationCategory1", "Stratification1"):
        assert isinstance(frame[name].dtype, pd.CategoricalDtype), name
    assert frame["Data_Value"].dtype == np.dtype("float64")
    assert frame["YearStart"].dtype == np.dtype("int16")
    assert frame["YearEnd"].dtype == np.dtype("int16")


def test_junk_values_count_as_empty(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "junk.csv",
        [
            CSV_HEADER_LINE,
            OHIO_ROW,
            _ohio(1, "2015", "2015", "n/a"),
            _ohio(2, "soon", "2015", "40.0"),
            _ohio(3, "2015", "2015", "inf"),
            _ohio(4, "2016", "2016", "12.5"),
            _ohio(5, "2016", "2016", "about 30"),
            _ohio(6, "2016", "2016", "-0.5"),
        ],
    )
    frame = load_frame(path)
    assert frame["Data_Value"].tolist() == [29.4, 12.5, -0.5]
    assert frame["YearEnd"].tolist() == [2017, 2016, 2016]
    assert frame["YearEnd"].dtype == np.dtype("int16")


FULL_HEADER = [
    "YearStart", "YearEnd", "LocationAbbr", "LocationDesc", "Datasource", "Class", "Topic",
    "Question", "Data_Value_Unit", "Data_Value_Type", "Data_Value", "Data_Value_Alt",
    "Data_Value_Footnote_Symbol", "Data_Value_Footnote", "Low_Confidence_Limit",
    "High_Confidence_Limit", "Sample_Size", "Total", "Age(years)", "Education", "Sex", "Income",
    "Race/Ethnicity", "GeoLocation", "ClassID", "TopicID", "QuestionID", "DataValueTypeID",
    "LocationID", "StratificationCategory1", "Stratification1", "StratificationCategoryId1",
    "StratificationID1",
]  # fmt: skip


def _full_row(location: str, year: int, value: str, sex: str) -> dict[str, str]:
    return {
        "YearStart": str(year), "YearEnd": str(year), "LocationDesc": location,
        "Question": OBESITY, "Data_Value": value, "Sex": sex,
        "StratificationCategory1": "Sex", "Stratification1": sex,
        "GeoLocation": "(32.84057112200048, -86.63186076199969)",
    }  # fmt: skip


def test_full_file_layout_without_index_column_and_with_sex(tmp_path: Path) -> None:
    path = tmp_path / "full.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=FULL_HEADER, restval="")
        writer.writeheader()
        writer.writerow(_full_row("Alabama", 2023, "35.0", "Male"))  # a year the subset lacks
        writer.writerow(_full_row("Alabama", 2021, "36.5", "Female"))
        writer.writerow(_full_row("Alaska", 2012, "", "Male"))
    frame = load_frame(path)
    assert frame["LocationDesc"].tolist() == ["Alabama"]
    assert frame["Stratification1"].tolist() == ["Female"]
    assert frame["Data_Value"].tolist() == [36.5]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    header = CSV_HEADER_LINE.replace(",Data_Value,", ",Value,").replace(
        ",Stratification1,", ",Strat,"
    )
    path = _write(tmp_path / "bad.csv", [header, OHIO_ROW])
    with pytest.raises(DatasetError, match=r"'Data_Value', 'Stratification1'"):
        load_frame(path)


def test_empty_or_absent_file_is_a_dataset_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"empty\.csv"):
        load_frame(empty)
    with pytest.raises(DatasetError, match=r"absent\.csv"):
        load_frame(tmp_path / "absent.csv")


def test_keep_counted_on_a_hand_built_frame() -> None:
    frame = pd.DataFrame(
        {
            "YearStart": [2011, 2010, 2015, 2015, 2022, 2015],
            "YearEnd": [2011, 2011, 2015, 2015, 2022, 2023],
            "LocationDesc": ["Iowa", "Iowa", "Utah", "Utah", "Guam", "Guam"],
            "Question": [OBESITY] * 6,
            "Data_Value": ["12.5", "13", "", "x", "7", "8"],
            "StratificationCategory1": ["Total"] * 6,
            "Stratification1": ["Total"] * 6,
            "Unrelated": list(range(6)),
        }
    )
    counted = keep_counted(frame)
    assert list(counted.columns) == list(REQUIRED_COLUMNS)
    assert counted["LocationDesc"].tolist() == ["Iowa", "Guam"]
    assert counted["Data_Value"].tolist() == [12.5, 7.0]
    assert counted["YearEnd"].dtype == np.dtype("int16")


def test_keep_counted_rejects_a_frame_without_a_required_column() -> None:
    frame = pd.DataFrame({name: [] for name in REQUIRED_COLUMNS if name != "Question"})
    with pytest.raises(DatasetError, match="'Question'"):
        keep_counted(frame)


def test_a_header_separated_by_semicolons_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "semicolons.csv"
    path.write_text(";".join(REQUIRED_COLUMNS) + "\n" + ";".join(["1"] * 7) + "\n")
    with pytest.raises(DatasetError, match=r"one column: separated by ';', not ','\?"):
        load_frame(path)


def test_a_column_in_another_case_is_named(tmp_path: Path) -> None:
    path = tmp_path / "lowercase.csv"
    names = [name if name != "Question" else "question" for name in REQUIRED_COLUMNS]
    path.write_text(",".join(names) + "\n")
    with pytest.raises(DatasetError, match=r"'Question' \(found 'question': names are case"):
        load_frame(path)


def test_a_file_without_a_counted_row_is_refused_and_says_why(tmp_path: Path) -> None:
    """Loaded, it would bring the service up with no question at all: every job would then
    fail with "question not in the data set" for questions the file plainly has."""
    header_only = _write(tmp_path / "header.csv", [CSV_HEADER_LINE])
    with pytest.raises(DatasetError, match=r"header\.csv: no row counts: the file has no rows"):
        load_frame(header_only)
    old_years = _write(tmp_path / "old.csv", [CSV_HEADER_LINE, _ohio(1, "2009", "2009", "30.0")])
    with pytest.raises(DatasetError, match=r"old\.csv: no row counts: of its 1 row\(s\), 0 "):
        load_frame(old_years)
    percents = _write(
        tmp_path / "percents.csv",
        [CSV_HEADER_LINE, _ohio(1, "2015", "2015", "30.5%"), _ohio(2, "2016", "2016", "")],
    )
    with pytest.raises(DatasetError, match=r"2 within 2011\.\.2022, 0 with a numeric Data_Value"):
        load_frame(percents)
