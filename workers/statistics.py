"""The statistics of docs/statistics.md, precomputed per question.

This module owns the answers: the best/worst direction of the nine questions, which
question and state a job means (resolved with `protocol.names`, so that answers keep the
data's names), and the exact JSON shapes. `Statistics` groups the counted rows once at
construction and then keeps only small per-question tables, not the frame, so a
`compute()` call without `years` costs time in proportion to the size of its answer,
never to the size of the data set. A call with `years`, and `state_trend`, sums the
per-year groups of `workers.years` on demand (bounded by the vocabulary, not the rows).
Parameter checks live in `workers.params`.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from protocol.locations import USPS_CODES
from protocol.messages import STATE_STATISTICS, STATISTICS
from protocol.names import question_vocabulary, state_vocabulary
from protocol.questions import BEST_IS_MAX, BEST_IS_MIN
from workers.dataset import VALUE_COLUMN, keep_counted, load_frame
from workers.params import YEARS, StatisticError, check_fields, text_param, years_param
from workers.years import ALL_YEARS, CATEGORY, QUESTION, STATE, Years, yearly_sums

TOP_N = 5
TREND = "state_trend"
NARROWED_ENTRIES = 32
"""Questions counted over a years range that a `Statistics` keeps for the next jobs."""
__all__ = ["StatisticError", "Statistics"]


@dataclass(frozen=True, slots=True)
class _Question:
    """Everything the nine statistics need about one question, ready to copy out."""

    text: str
    best_is_min: bool | None  # None: not one of the nine, so no best/worst
    global_mean: float
    ascending: tuple[tuple[str, float], ...]  # (state, mean), by mean then state name
    state_means: dict[str, float]
    by_category: dict[str, float]  # str((state, category, stratum)) -> mean
    state_by_category: dict[str, dict[str, float]]  # state -> {str((category, stratum)): mean}

    def state_mean(self, state: str) -> float:
        """The mean of `state`, or a `StatisticError` when it has no counted rows."""
        try:
            return self.state_means[state]
        except KeyError:
            raise StatisticError(
                f"no data for state {state!r} and question {self.text!r}"
            ) from None

    def best_first(self, best: bool) -> list[tuple[str, float]]:
        """All states ordered from the best (`best=True`) or from the worst."""
        if self.best_is_min is None:
            raise StatisticError(
                f"question {self.text!r} has no best/worst direction: best5 and worst5 only "
                "answer the nine questions of the contract"
            )
        if best == self.best_is_min:
            return list(self.ascending)
        return sorted(self.ascending, key=lambda item: (-item[1], item[0]))


QuestionHandler = Callable[[_Question], dict[str, Any]]
StateHandler = Callable[[_Question, str], dict[str, Any]]


def _states_mean(question: _Question) -> dict[str, Any]:
    return dict(question.ascending)


def _best5(question: _Question) -> dict[str, Any]:
    return dict(question.best_first(best=True)[:TOP_N])


def _worst5(question: _Question) -> dict[str, Any]:
    return dict(question.best_first(best=False)[:TOP_N])


def _global_mean(question: _Question) -> dict[str, Any]:
    return {"global_mean": question.global_mean}


def _diff_from_mean(question: _Question) -> dict[str, Any]:
    return {state: question.global_mean - mean for state, mean in question.ascending}


def _mean_by_category(question: _Question) -> dict[str, Any]:
    return dict(question.by_category)


def _state_mean(question: _Question, state: str) -> dict[str, Any]:
    return {state: question.state_mean(state)}


def _state_diff_from_mean(question: _Question, state: str) -> dict[str, Any]:
    return {state: question.global_mean - question.state_mean(state)}


def _state_mean_by_category(question: _Question, state: str) -> dict[str, Any]:
    question.state_mean(state)  # the same "no data" error as the other per-state statistics
    return {state: dict(question.state_by_category.get(state, {}))}


_QUESTION_HANDLERS: dict[str, QuestionHandler] = {
    "states_mean": _states_mean,
    "best5": _best5,
    "worst5": _worst5,
    "global_mean": _global_mean,
    "diff_from_mean": _diff_from_mean,
    "mean_by_category": _mean_by_category,
}
_STATE_HANDLERS: dict[str, StateHandler] = {
    "state_mean": _state_mean,
    "state_diff_from_mean": _state_diff_from_mean,
    "state_mean_by_category": _state_mean_by_category,
}


class Statistics:
    """The nine statistics over one data set, precomputed for every question in it.

    Answers are fresh dicts of `str` to plain `float` (or to such dicts) that the caller
    may mutate. Means are arithmetic means of the counted `Data_Value`s (percent).
    """

    names: ClassVar[tuple[str, ...]] = STATISTICS

    def __init__(self, frame: pd.DataFrame) -> None:
        """Precompute every answer table from `frame` (rows that do not count are dropped)."""
        counted = keep_counted(frame)
        self._questions = _precompute(counted)
        self._yearly = yearly_sums(counted)
        # (question, years) -> tables, least recently used first; compute() runs on one
        # thread (the worker's compute thread), so no lock.
        self._narrowed: OrderedDict[tuple[str, Years], _Question] = OrderedDict()
        self._question_names = question_vocabulary(self._questions)
        states = {state for question in self._questions.values() for state in question.state_means}
        self._state_names = state_vocabulary(states | set(USPS_CODES.values()))

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Statistics:
        """Load the CSV at `path` (see `workers.dataset.load_frame`) and precompute."""
        return cls(load_frame(path))

    @property
    def questions(self) -> tuple[str, ...]:
        """The questions with at least one counted row, sorted."""
        return tuple(sorted(self._questions))

    def compute(self, statistic: str, params: Mapping[str, object]) -> dict[str, Any]:
        """Answer `statistic` for `params`: {"question": Q}, with "state": S for the
        per-state statistics, and optionally "years": [FIRST, LAST].

        Q may be the question's text in any case or its short id, S a location's name in
        any case or its USPS code; the answer names them as the data does. Raises
        `StatisticError` for an unknown statistic, a missing, mistyped or unexpected
        parameter, a question not in the data set, or a state without data for it.
        """
        if not isinstance(params, Mapping):
            raise StatisticError(f"parameters must be a map, got {type(params).__name__}")
        if not isinstance(statistic, str) or statistic not in STATISTICS:
            known = ", ".join(STATISTICS)
            raise StatisticError(f"unknown statistic {statistic!r}; known: {known}")
        per_state = statistic in STATE_STATISTICS
        fields = ("question", "state") if per_state else ("question",)
        check_fields(statistic, params, (*fields, YEARS))
        values = {name: text_param(params, name) for name in fields}
        question, years = self._question(values["question"]), years_param(params)
        if not per_state:
            answer = _QUESTION_HANDLERS[statistic](self._within(question, years))
        else:
            state = self._state(question, values["state"])
            answer = self._per_state(statistic, question, state, years)
        _check_finite(answer)
        return answer

    def _per_state(
        self, statistic: str, question: _Question, state: str, years: Years | None
    ) -> dict[str, Any]:
        if statistic == TREND:
            return {state: self._trend(question, state, years)}
        return _STATE_HANDLERS[statistic](self._within(question, years), state)

    def _question(self, given: str) -> _Question:
        text = self._question_names.resolve(given)
        if text is None:
            hint = self._question_names.hint(given)
            raise StatisticError(f"question not in the data set: {given!r}{hint}")
        return self._questions[text]

    def _state(self, question: _Question, given: str) -> str:
        """The data's name for the location `given`, or an error offering close ones."""
        state = self._state_names.resolve(given)
        if state is None:
            hint = self._state_names.hint(given, question.state_means)
            raise StatisticError(
                f"no data for state {given!r} and question {question.text!r}{hint}"
            )
        return state

    def _within(self, question: _Question, years: Years | None) -> _Question:
        """`question` as counted over `years` only (itself, precomputed, without years).

        The jobs of one page (a map, its best and worst five) share a range: the last
        `NARROWED_ENTRIES` ranges asked are kept, which spares 3-25 ms a job (README)."""
        if years is None:
            return question
        key = (question.text, years)
        narrowed = self._narrowed.get(key)
        if narrowed is None:
            narrowed = self._narrowed[key] = self._count_within(question.text, years)
            if len(self._narrowed) > NARROWED_ENTRIES:
                self._narrowed.popitem(last=False)
        self._narrowed.move_to_end(key)
        return narrowed

    def _count_within(self, text: str, years: Years) -> _Question:
        tables = _Tables()
        for (state, category, stratum), total, count in self._yearly[text].cells_within(years):
            tables.add(state, category, stratum, total, count)
        if not tables.overall.count:
            raise StatisticError(f"no data for question {text!r} in years {years[0]}-{years[1]}")
        return tables.freeze(text)

    def _trend(self, question: _Question, state: str, years: Years | None) -> dict[str, float]:
        """`state`'s mean per year, or the per-state statistics' "no data" error."""
        question.state_mean(state)  # no rows at all: the same error as state_mean
        trend = self._yearly[question.text].trend(state, years or ALL_YEARS)
        if not trend and years is not None:
            raise StatisticError(
                f"no data for state {state!r} and question {question.text!r} "
                f"in years {years[0]}-{years[1]}"
            )
        return trend


def _check_finite(answer: Mapping[str, Any]) -> None:
    """Refuse to answer NaN or infinity (possible only through a float overflow)."""
    for value in answer.values():
        if isinstance(value, Mapping):
            _check_finite(value)
        elif not math.isfinite(value):
            raise StatisticError("the mean is not a finite number (Data_Value overflow)")


def _precompute(frame: pd.DataFrame) -> dict[str, _Question]:
    """Group `frame` (counted rows only) into one `_Question` per question text.

    One pass over the finest groups (question, state, category, stratum); the coarser means
    are summed up from them, so that the data is grouped once whatever its size.
    """
    keys = [frame[name] for name in (QUESTION, STATE, *CATEGORY)]
    with np.errstate(over="ignore"):  # an overflowing sum is refused at compute() time
        groups = (
            frame[VALUE_COLUMN]
            .groupby(keys, observed=True, dropna=False, sort=False)
            .agg(["sum", "count"])
        )
    tables: dict[str, _Tables] = {}
    sums, counts = groups["sum"].to_numpy(), groups["count"].to_numpy()
    for key, total, count in zip(groups.index, sums, counts, strict=True):
        text, state, category, stratum = key
        if _missing(text):
            continue  # nobody can ask for an empty question
        tables.setdefault(str(text), _Tables()).add(state, category, stratum, total, count)
    return {text: table.freeze(text) for text, table in tables.items()}


def _missing(key: object) -> bool:
    """True for an empty group key (NaN, None or pd.NA)."""
    return key is None or key is pd.NA or (isinstance(key, float) and math.isnan(key))


@dataclass(slots=True)
class _Sum:
    """A running sum and count of `Data_Value`s."""

    total: float = 0.0
    count: int = 0

    def add(self, total: float, count: int) -> None:
        self.total += total
        self.count += count

    @property
    def mean(self) -> float:
        return self.total / self.count


@dataclass(slots=True)
class _Tables:
    """The sums of one question while its groups are being read."""

    overall: _Sum = field(default_factory=_Sum)
    states: dict[str, _Sum] = field(default_factory=dict)
    categories: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def add(
        self, state: object, category: object, stratum: object, total: float, count: int
    ) -> None:
        """Add the sum and count of one (state, category, stratum) group.

        A group without a state counts for the global mean only; one without a category or
        stratum counts for its state but has no `mean_by_category` key.
        """
        self.overall.add(float(total), int(count))
        if _missing(state):
            return  # counts for the question's global mean, for no state
        self.states.setdefault(str(state), _Sum()).add(float(total), int(count))
        if not (_missing(category) or _missing(stratum)):
            self.categories[(str(state), str(category), str(stratum))] = float(total) / int(count)

    def freeze(self, text: str) -> _Question:
        """The finished `_Question` for question `text`."""
        state_means = {state: running.mean for state, running in self.states.items()}
        state_by_category: dict[str, dict[str, float]] = {}
        for (state, category, stratum), mean in sorted(self.categories.items()):
            state_by_category.setdefault(state, {})[str((category, stratum))] = mean
        return _Question(
            text=text,
            best_is_min=True if text in BEST_IS_MIN else False if text in BEST_IS_MAX else None,
            global_mean=self.overall.mean,
            ascending=tuple(sorted(state_means.items(), key=lambda item: (item[1], item[0]))),
            state_means=state_means,
            by_category={str(key): mean for key, mean in sorted(self.categories.items())},
            state_by_category=state_by_category,
        )
