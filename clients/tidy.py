"""Answers as tidy rows: one row per number, for CSV files and pandas DataFrames.

This module owns the reading of an answer's keys and the columns they become. An
answer is a map from keys to numbers, possibly nested one level (a state's map); a key
may be the text of a tuple, as `str(("Ohio", "Age (years)", "18 - 24"))` spells it.
Every key is split into its parts, and the parts are named by the answer's shape:

    {"Ohio": 31.2}                                   state, value
    {"global_mean": 31.0}                            value
    {"('Ohio', 'Age (years)', '18 - 24')": 31.2}     state, category, stratum, value
    {"Ohio": {"('Age (years)', '18 - 24')": 31.2}}   state, category, stratum, value
    {"Ohio": {"2011": 29.6}}                         state, year, value

A shape not listed gets columns `key1`, `key2`, ... Keys come from peers (a worker
computed them, a broker stored them), so a tuple's text is parsed strictly by
`split_key`, never evaluated. pandas is imported only by `frame`, when it is called.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import pandas

Row = dict[str, Any]

ANSWER_COLUMNS = ("state", "category", "stratum", "year", "value")
"""Every column an answer's rows may have, in the order they are written."""
GLOBAL_MEAN_KEY = "global_mean"
_NAMES_BY_SHAPE: dict[tuple[int, ...], tuple[str, ...]] = {
    (1,): ("state",),
    (3,): ("state", "category", "stratum"),
    (1, 2): ("state", "category", "stratum"),
    (1, 1): ("state", "year"),
}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class _NotATuple(ValueError):
    """The text is not a tuple of strings as `str()` writes one."""


def split_key(key: str) -> tuple[str, ...]:
    """ "('Ohio', 'Age (years)', '18 - 24')" -> its strings; any other text -> (text,).

    Reads exactly what `str()` of a tuple of strings writes (quotes and escapes as
    `repr` makes them); anything else, however close, is one plain key."""
    if not (key.startswith("(") and key.endswith(")")):
        return (key,)
    try:
        return _tuple_of_strings(key)
    except _NotATuple:
        return (key,)


def _tuple_of_strings(text: str) -> tuple[str, ...]:
    parts: list[str] = []
    at = 1
    while True:
        part, at = _quoted(text, at)
        parts.append(part)
        if text[at:] == ")" and len(parts) > 1:
            return tuple(parts)
        if text[at:] == ",)" and len(parts) == 1:
            return tuple(parts)
        if text[at : at + 2] != ", ":
            raise _NotATuple(text)
        at += 2


def _quoted(text: str, at: int) -> tuple[str, int]:
    """The string literal starting at `at`, and where it ends."""
    quote = text[at : at + 1]
    if quote not in ("'", '"'):
        raise _NotATuple(text)
    chars: list[str] = []
    at += 1
    while at < len(text) and text[at] != quote:
        if text[at] == "\\":
            char, at = _escape(text, at + 1)
        else:
            char, at = text[at], at + 1
        chars.append(char)
    if at >= len(text):
        raise _NotATuple(text)
    return "".join(chars), at + 1


def _escape(text: str, at: int) -> tuple[str, int]:
    """The character an escape after a backslash stands for, and where it ends."""
    code = text[at : at + 1]
    if code in _ESCAPES:
        return _ESCAPES[code], at + 1
    digits = _HEX_ESCAPES.get(code, 0)
    hex_text = text[at + 1 : at + 1 + digits]
    if not digits or len(hex_text) != digits or not all(c in "0123456789abcdef" for c in hex_text):
        raise _NotATuple(text)
    value = int(hex_text, 16)
    if value > 0x10FFFF:
        raise _NotATuple(text)
    return chr(value), at + 1 + digits


# --- rows ---------------------------------------------------------------------------


def rows(answer: Mapping[str, Any]) -> list[Row]:
    """One row per number of `answer`, its key parts named (see the module's table),
    in the answer's order; each row ends with `value`."""
    leaves = list(_leaves(answer, (), ()))
    names = _names(answer, {shape for shape, _, _ in leaves})
    # Not strict: a global mean's key is its name, not a column; an unknown shape's
    # shorter paths leave their last `keyN` columns empty.
    return [{**dict(zip(names, parts, strict=False)), "value": value} for _, parts, value in leaves]


def columns(answer_rows: Sequence[Row]) -> list[str]:
    """The columns of `answer_rows`, in `ANSWER_COLUMNS` order (others after, by name)."""
    seen = {name for row in answer_rows for name in row}
    known = [name for name in ANSWER_COLUMNS if name in seen]
    return known + sorted(seen - set(ANSWER_COLUMNS))


Leaf = tuple[tuple[int, ...], tuple[str, ...], Any]  # parts per level, all parts, the value


def _leaves(
    value: Mapping[str, Any], shape: tuple[int, ...], parts: tuple[str, ...]
) -> Iterator[Leaf]:
    for key, inner in value.items():
        split = split_key(str(key))
        if isinstance(inner, Mapping):
            yield from _leaves(inner, (*shape, len(split)), (*parts, *split))
        else:
            yield (*shape, len(split)), (*parts, *split), inner


def _names(answer: Mapping[str, Any], shapes: set[tuple[int, ...]]) -> tuple[str, ...]:
    """The names of the key parts, from the answer's shape (its parts per nesting level)."""
    if list(answer) == [GLOBAL_MEAN_KEY] and not isinstance(answer[GLOBAL_MEAN_KEY], Mapping):
        return ()
    if len(shapes) == 1 and (known := _NAMES_BY_SHAPE.get(next(iter(shapes)))) is not None:
        return known
    longest = max((sum(shape) for shape in shapes), default=0)
    return tuple(f"key{n}" for n in range(1, longest + 1))


# --- CSV and DataFrame ----------------------------------------------------------------


def csv_text(answer_rows: Sequence[Row], header: Sequence[str] | None = None) -> str:
    """`answer_rows` as CSV with a header row (`header`, or the rows' own `columns`).

    Numbers are written as Python spells them (`repr`), so nothing is rounded."""
    out = io.StringIO()
    CsvRows(out, header or columns(answer_rows)).write(answer_rows)
    return out.getvalue()


class CsvRows:
    """CSV on `out` under a fixed header, written at once; a cell a row lacks is empty."""

    def __init__(self, out: TextIO, header: Sequence[str]) -> None:
        self._header = frozenset(header)
        self._writer = csv.DictWriter(out, list(header), restval="", lineterminator="\n")
        self._writer.writeheader()

    def write(self, answer_rows: Iterable[Row]) -> None:
        """Write rows; ValueError for one with a column the header lacks (an answer of a
        shape without names: its `keyN` columns)."""
        for row in answer_rows:
            extra = row.keys() - self._header
            if extra:
                names = ", ".join(sorted(extra))
                raise ValueError(f"an answer's keys ({names}) have no column here: use JSON")
            self._writer.writerow(row)


def frame(answer: Mapping[str, Any]) -> pandas.DataFrame:
    """`answer` as a pandas DataFrame: the columns of `rows`, `year` as integers.

    Raises ImportError, saying what to install, when pandas is missing."""
    try:
        import pandas
    except ImportError as exc:
        raise ImportError("a DataFrame needs pandas: pip install pandas") from exc
    answer_rows = rows(answer)
    table = pandas.DataFrame(answer_rows, columns=columns(answer_rows) or ["value"])
    if "year" in table.columns and table["year"].str.fullmatch(r"[0-9]{4}").all():
        table["year"] = table["year"].astype(int)
    return table
