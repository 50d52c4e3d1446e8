"""A job's parameters, checked: every bad one ends in a `StatisticError` a person can act on.

This module owns the parameter rules of docs/statistics.md: which fields a statistic
takes, that `question` and `state` are strings, and that `years` is `[FIRST, LAST]`, two
whole years with FIRST <= LAST inside the data's years. Names are resolved later, against
the data (`protocol.names`).
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol.errors import LssError
from workers.dataset import YEAR_MAX, YEAR_MIN
from workers.years import Years

YEARS = "years"


class StatisticError(LssError):
    """A job cannot be answered; `str()` is the reason, written for the person who asked."""


def check_fields(statistic: str, params: Mapping[str, object], allowed: tuple[str, ...]) -> None:
    """Reject fields that `statistic` does not take."""
    extra = sorted(repr(key) for key in params if key not in allowed)
    if extra:
        expected = ", ".join(allowed)
        raise StatisticError(
            f"unexpected parameter(s) {', '.join(extra)} for {statistic}; it takes: {expected}"
        )


def text_param(params: Mapping[str, object], name: str) -> str:
    """The string parameter `name`, or a `StatisticError` saying what is wrong with it."""
    if name not in params:
        raise StatisticError(f"missing parameter {name!r}")
    value = params[name]
    if not isinstance(value, str):
        raise StatisticError(f"parameter {name!r} must be a string, got {type(value).__name__}")
    return value


def years_param(params: Mapping[str, object]) -> Years | None:
    """The optional `years` parameter as (FIRST, LAST), or None when it is absent."""
    if YEARS not in params:
        return None
    value = params[YEARS]
    wanted = f"[FIRST, LAST], two years with {YEAR_MIN} <= FIRST <= LAST <= {YEAR_MAX}"
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise StatisticError(f"parameter 'years' must be {wanted}, got {value!r}")
    first, last = value
    if not all(type(year) is int for year in (first, last)):  # bool is no year
        raise StatisticError(f"parameter 'years' must be {wanted}, got {value!r}")
    if not YEAR_MIN <= first <= last <= YEAR_MAX:
        raise StatisticError(f"parameter 'years' must be {wanted}, got {value!r}")
    return first, last
