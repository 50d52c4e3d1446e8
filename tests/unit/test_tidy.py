"""Answers as tidy rows, CSV and DataFrames, on hand-made answers of every statistic's
shape; keys read strictly; the clients package without pandas."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from typing import Any

import pytest

from clients import tidy

OHIO_AGE = "('Ohio', 'Age (years)', '18 - 24')"
OHIO_INCOME = "('Ohio', 'Income', '$15,000 - $24,999')"
ODD = ("tab\there", "back\\slash", "\x07\u2028\U0001f600")  # escapes of every kind

# statistic -> (a hand-made answer of its shape, the rows it becomes)
SHAPES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "states_mean": (
        {"Utah": 24.5, "Ohio": 31.25},
        [{"state": "Utah", "value": 24.5}, {"state": "Ohio", "value": 31.25}],
    ),
    "state_mean": ({"Ohio": 31.25}, [{"state": "Ohio", "value": 31.25}]),
    "best5": ({"Utah": 24.5}, [{"state": "Utah", "value": 24.5}]),
    "worst5": ({"Ohio": 31.25}, [{"state": "Ohio", "value": 31.25}]),
    "global_mean": ({"global_mean": 29.0}, [{"value": 29.0}]),
    "diff_from_mean": (
        {"Utah": 4.5, "Ohio": -2.25},
        [{"state": "Utah", "value": 4.5}, {"state": "Ohio", "value": -2.25}],
    ),
    "state_diff_from_mean": ({"Ohio": -2.25}, [{"state": "Ohio", "value": -2.25}]),
    "mean_by_category": (
        {OHIO_AGE: 30.0, OHIO_INCOME: 35.5},
        [
            {"state": "Ohio", "category": "Age (years)", "stratum": "18 - 24", "value": 30.0},
            {"state": "Ohio", "category": "Income", "stratum": "$15,000 - $24,999", "value": 35.5},
        ],
    ),
    "state_mean_by_category": (
        {"Ohio": {"('Age (years)', '18 - 24')": 30.0, "('Gender', 'Female')": 28.0}},
        [
            {"state": "Ohio", "category": "Age (years)", "stratum": "18 - 24", "value": 30.0},
            {"state": "Ohio", "category": "Gender", "stratum": "Female", "value": 28.0},
        ],
    ),
    "state_trend": (
        {"Ohio": {"2011": 29.6, "2012": 30.1}},
        [
            {"state": "Ohio", "year": "2011", "value": 29.6},
            {"state": "Ohio", "year": "2012", "value": 30.1},
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("statistic", SHAPES)
def test_every_shape_becomes_one_named_row_per_number(statistic: str) -> None:
    answer, want = SHAPES[statistic]
    assert tidy.rows(answer) == want


@pytest.mark.parametrize("statistic", SHAPES)
def test_csv_has_a_header_and_reads_back_as_the_rows(statistic: str) -> None:
    answer, want = SHAPES[statistic]
    text = tidy.csv_text(tidy.rows(answer))
    header, *lines = list(csv.reader(io.StringIO(text)))
    assert header == [c for c in tidy.ANSWER_COLUMNS if c in want[0]]
    assert [dict(zip(header, line, strict=True)) for line in lines] == [
        {k: str(v) for k, v in row.items()} for row in want
    ]


def test_csv_quotes_commas_and_keeps_every_digit() -> None:
    text = tidy.csv_text(tidy.rows({OHIO_INCOME: 1 / 3}))
    assert text == f'state,category,stratum,value\nOhio,Income,"$15,000 - $24,999",{1 / 3!r}\n'


def test_an_unknown_shape_gets_numbered_key_columns() -> None:
    answer = {"a": {"b": {"c": 1.0}}, "d": 2.0}
    assert tidy.rows(answer) == [
        {"key1": "a", "key2": "b", "key3": "c", "value": 1.0},
        {"key1": "d", "value": 2.0},
    ]
    assert tidy.columns(tidy.rows(answer)) == ["value", "key1", "key2", "key3"]


def test_a_fixed_header_refuses_a_row_it_has_no_column_for() -> None:
    out = io.StringIO()
    rows = tidy.CsvRows(out, ["statistic", *tidy.ANSWER_COLUMNS])
    rows.write([{"statistic": "best5", "state": "Ohio", "value": 1.0}])
    with pytest.raises(ValueError, match=r"keys \(key1, key2, key3\) have no column here"):
        rows.write(tidy.rows({"a": {"b": {"c": 1.0}}}))
    assert out.getvalue() == "statistic,state,category,stratum,year,value\nbest5,Ohio,,,,1.0\n"


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        (OHIO_AGE, ("Ohio", "Age (years)", "18 - 24")),
        ("('Gender', 'Male')", ("Gender", "Male")),
        (str(("it's", 'say "hi"', "both ' and \"")), ("it's", 'say "hi"', "both ' and \"")),
        (str(ODD), ODD),
        (str(("one",)), ("one",)),
        ("('a', 'b', )", ("('a', 'b', )",)),
        ("('a')", ("('a')",)),
        ("('a','b')", ("('a','b')",)),
        ("('a', 'b'", ("('a', 'b'",)),
        ("('a\\q', 'b')", ("('a\\q', 'b')",)),
        ("('\\x4', 'b')", ("('\\x4', 'b')",)),
        ("('\\U00110000', 'b')", ("('\\U00110000', 'b')",)),
        ("(1, 2)", ("(1, 2)",)),
        ("__import__('os').system('true')", ("__import__('os').system('true')",)),
        ("('a', __import__('os'))", ("('a', __import__('os'))",)),
        ("()", ("()",)),
        ("not a tuple", ("not a tuple",)),
    ],
)  # fmt: skip
def test_keys_are_read_strictly_as_str_of_a_tuple_writes_them(
    key: str, parts: tuple[str, ...]
) -> None:
    assert tidy.split_key(key) == parts


def test_a_deeply_nested_key_text_is_one_plain_key() -> None:
    key = "(" * 100_000 + ")" * 100_000
    assert tidy.split_key(key) == (key,)


@pytest.mark.parametrize("statistic", SHAPES)
def test_a_frame_has_the_rows_columns_and_numbers(statistic: str) -> None:
    answer, want = SHAPES[statistic]
    table = tidy.frame(answer)
    assert list(table.columns) == list(want[0])
    assert table["value"].tolist() == [row["value"] for row in want]


def test_a_frame_of_a_trend_has_integer_years() -> None:
    table = tidy.frame(SHAPES["state_trend"][0])
    assert table["year"].tolist() == [2011, 2012] and table["year"].dtype.kind == "i"


def test_an_empty_answer_is_an_empty_frame_with_a_value_column() -> None:
    assert list(tidy.frame({}).columns) == ["value"] and tidy.frame({}).empty


WITHOUT_PANDAS = """
import sys
sys.modules["pandas"] = None  # an environment without pandas
import clients, clients.cli, clients.tidy, clients.http.api
from clients import tidy
assert tidy.rows({"Ohio": 1.0}) == [{"state": "Ohio", "value": 1.0}]
try:
    tidy.frame({"Ohio": 1.0})
except ImportError as exc:
    print(exc)
"""


def test_the_clients_import_without_pandas_and_frame_says_what_is_missing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PANDAS],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a DataFrame needs pandas: pip install pandas"
