"""Loading the BRFSS CSV: the seven columns a job needs, and the rows that count.

This module owns the file side of docs/statistics.md ("Which rows count"): which columns
are required, how both the subset file (leading index column, `High_Confidence_Limit `
with a trailing space) and the full CDC file (no index column, `Sex` for `Gender`) are read,
and which rows count for a question: `2011 <= YearStart`, `YearEnd <= 2022` and a finite
numeric `Data_Value`. Only these seven columns are read, text columns as categoricals, so
a million-row file loads in about 2 s into a frame of about 30 MB.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from protocol.errors import LssError

YEAR_MIN = 2011
YEAR_MAX = 2022

TEXT_COLUMNS = ("LocationDesc", "Question", "StratificationCategory1", "Stratification1")
YEAR_COLUMNS = ("YearStart", "YearEnd")
VALUE_COLUMN = "Data_Value"
REQUIRED_COLUMNS = (
    "YearStart",
    "YearEnd",
    "LocationDesc",
    "Question",
    "Data_Value",
    "StratificationCategory1",
    "Stratification1",
)
_NUMERIC_COLUMNS = (*YEAR_COLUMNS, VALUE_COLUMN)


class DatasetError(LssError):
    """The data file cannot be used: unreadable, malformed, or missing a required column."""


def missing_columns(columns: Iterable[object]) -> list[str]:
    """The required columns absent from `columns`, in `REQUIRED_COLUMNS` order."""
    present = {str(name) for name in columns}
    return [name for name in REQUIRED_COLUMNS if name not in present]


def check_columns(columns: Iterable[object], source: str) -> None:
    """Raise `DatasetError` naming every required column absent from `columns`, with a
    hint when the header looks separated by another character than a comma."""
    names = [str(name) for name in columns]
    missing = missing_columns(names)
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        raise DatasetError(f"{source}: missing required column(s) {listed}{_hint(names)}")


OTHER_DELIMITERS = (";", "\t", "|")


def _hint(names: list[str]) -> str:
    """Why columns may be missing: another delimiter, or names in another case."""
    if len(names) == 1:
        found = [d for d in OTHER_DELIMITERS if d in names[0]]
        if found:
            return f" (the header is one column: separated by {found[0]!r}, not ','?)"
    by_case = {name.casefold(): name for name in names}
    renamed = [
        f"{by_case[r.casefold()]!r}" for r in missing_columns(names) if r.casefold() in by_case
    ]
    if renamed:
        return f" (found {', '.join(renamed)}: names are case-sensitive)"
    return ""


def load_frame(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the seven required columns of the CSV at `path`, keeping only the counted rows.

    Text columns come back as categoricals, `Data_Value` as float64 and the years as int16.
    A junk (non-numeric) cell counts as empty. Raises `DatasetError` when the file cannot be
    read or parsed, lacks a required column (the message names it), or has no row that
    counts (a service on it would know no question; the message says which rule failed).
    """
    source = os.fspath(path)
    check_columns(_read_header(source), source)
    try:
        frame = _read_columns(source, numeric_dtype="float64")
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{source}: malformed CSV: {exc}") from exc
    except ValueError:
        # Some numeric cell is junk: read the numbers as text and coerce them (slower path).
        frame = _read_columns(source, numeric_dtype="str")
    counted = keep_counted(frame)
    if counted.empty:
        raise DatasetError(f"{source}: no row counts: {_why_none_counts(frame)}")
    return counted


def keep_counted(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of `frame` that count: years within 2011..2022 and a finite `Data_Value`.

    Non-numeric year or value cells are treated as missing. The years of the result are
    int16; only the required columns are kept.
    """
    check_columns(frame.columns, "data frame")
    numbers = {name: _as_numbers(frame[name]) for name in _NUMERIC_COLUMNS}
    keep = _within_years(numbers) & np.isfinite(numbers[VALUE_COLUMN])
    if bool(keep.all()) and _has_final_dtypes(frame):
        return frame[list(REQUIRED_COLUMNS)]
    columns: dict[str, Any] = {name: frame[name].array[keep] for name in TEXT_COLUMNS}
    columns.update({name: numbers[name][keep].astype(np.int16) for name in YEAR_COLUMNS})
    columns[VALUE_COLUMN] = numbers[VALUE_COLUMN][keep]
    return pd.DataFrame({name: columns[name] for name in REQUIRED_COLUMNS}, copy=False)


def _within_years(numbers: dict[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.bool_]:
    """Which rows lie within 2011..2022 (NaN compares False: empty or junk years drop out)."""
    return (numbers["YearStart"] >= YEAR_MIN) & (numbers["YearEnd"] <= YEAR_MAX)


def _why_none_counts(frame: pd.DataFrame) -> str:
    """How many rows of `frame` (as read) pass each rule of a counted row."""
    if frame.empty:
        return "the file has no rows"
    numbers = {name: _as_numbers(frame[name]) for name in _NUMERIC_COLUMNS}
    within = int(_within_years(numbers).sum())
    numeric = int(np.isfinite(numbers[VALUE_COLUMN]).sum())
    return (
        f"of its {len(frame)} row(s), {within} within {YEAR_MIN}..{YEAR_MAX}, {numeric} with a"
        ' numeric Data_Value, and none both (docs/statistics.md, "Which rows count")'
    )


def _read_header(source: str) -> list[str]:
    """The column names of the CSV at `source`."""
    try:
        return [str(name) for name in pd.read_csv(source, nrows=0).columns]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{source}: cannot read: {exc}") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{source}: not a CSV file with a header line: {exc}") from exc


def _read_columns(source: str, numeric_dtype: str) -> pd.DataFrame:
    """Read only the required columns: text as categories, numbers as `numeric_dtype`."""
    dtypes = {name: "category" for name in TEXT_COLUMNS}
    dtypes.update({name: numeric_dtype for name in _NUMERIC_COLUMNS})
    try:
        return pd.read_csv(source, usecols=list(REQUIRED_COLUMNS), dtype=dtypes, engine="c")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{source}: cannot read: {exc}") from exc


def _as_numbers(series: pd.Series) -> npt.NDArray[np.float64]:
    """`series` as a float64 array (no copy when it is one already), junk cells as NaN."""
    if not pd.api.types.is_float_dtype(series.dtype):
        series = pd.Series(pd.to_numeric(series, errors="coerce"))
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _has_final_dtypes(frame: pd.DataFrame) -> bool:
    """True when the years are int16 and the value float64 already."""
    years_ok = all(frame[name].dtype == np.dtype("int16") for name in YEAR_COLUMNS)
    return years_ok and frame[VALUE_COLUMN].dtype == np.dtype("float64")
