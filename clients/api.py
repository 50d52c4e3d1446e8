"""The statistic methods, written once for `Client` and `AsyncClient`.

Each method is the protocol catalogue's statistic (protocol.messages.STATISTICS) run
through the client's `run` primitive: `Client.run` returns the answer, `AsyncClient.run`
an awaitable of it, so the methods are generic in what `run` returns. A unit test checks
these methods against the catalogue (tests/unit/test_client_session.py).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Generic, TypeVar

from protocol.messages import DEFAULT_PRIORITY
from protocol.questions import question_list

R = TypeVar("R")
Years = tuple[int, int] | list[int]


class StatisticMethods(Generic[R]):
    """`question` is a question's text (in any case) or its short id (`questions()`);
    `state` a location's name (in any case) or its USPS code ("OH", "US" for National).
    Answers name both as the data does. `years=(FIRST, LAST)` counts only the rows of
    those years (both included, within 2011..2022); without it, every year counts.
    `priority` (0 first .. 9 last) and `deadline` (s) are `submit`'s; a job cancelled
    (by `cancel`, or its deadline) raises `JobCancelled`."""

    @abstractmethod
    def run(
        self,
        statistic: str,
        /,
        timeout: float | None = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> R:
        """Submit a job and wait for its answer, in one round trip."""

    @staticmethod
    def questions() -> list[dict[str, str]]:
        """The nine questions, [{"id": "obesity", "question": "Percent of ..."}, ...]
        (from the protocol package: no round trip, and the same on `AsyncClient`)."""
        return question_list()

    def states_mean(
        self,
        question: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """{state: mean, ...} for every state with data, ordered by mean ascending."""
        return self.run(
            "states_mean", priority=priority, deadline=deadline, **_params(question, None, years)
        )

    def state_mean(
        self,
        question: str,
        state: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """{state: mean} of one state."""
        return self.run(
            "state_mean", priority=priority, deadline=deadline, **_params(question, state, years)
        )

    def best5(
        self,
        question: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """The five best states, {state: mean}: the lowest five ascending when the best
        is the minimum, the highest five descending when it is the maximum."""
        return self.run(
            "best5", priority=priority, deadline=deadline, **_params(question, None, years)
        )

    def worst5(
        self,
        question: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """The five worst states, {state: mean}, ordered as in `best5` the other way round."""
        return self.run(
            "worst5", priority=priority, deadline=deadline, **_params(question, None, years)
        )

    def global_mean(
        self,
        question: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """{"global_mean": mean} over every row of the question."""
        return self.run(
            "global_mean", priority=priority, deadline=deadline, **_params(question, None, years)
        )

    def diff_from_mean(
        self,
        question: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """{state: global_mean - state_mean, ...} for every state with data."""
        return self.run(
            "diff_from_mean", priority=priority, deadline=deadline, **_params(question, None, years)
        )

    def state_diff_from_mean(
        self,
        question: str,
        state: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """{state: global_mean - state_mean} of one state."""
        return self.run(
            "state_diff_from_mean",
            priority=priority,
            deadline=deadline,
            **_params(question, state, years),
        )

    def mean_by_category(
        self,
        question: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """The mean of every (state, StratificationCategory1, Stratification1) group with
        data, keyed by `str()` of that tuple: {"('Ohio', 'Age (years)', '18 - 24')": mean}.
        """
        return self.run(
            "mean_by_category",
            priority=priority,
            deadline=deadline,
            **_params(question, None, years),
        )

    def state_mean_by_category(
        self,
        question: str,
        state: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """One state's mean per (StratificationCategory1, Stratification1) group, keyed by
        `str()` of the pair: {state: {"('Age (years)', '18 - 24')": mean, ...}}."""
        return self.run(
            "state_mean_by_category",
            priority=priority,
            deadline=deadline,
            **_params(question, state, years),
        )

    def state_trend(
        self,
        question: str,
        state: str,
        *,
        years: Years | None = None,
        priority: int = DEFAULT_PRIORITY,
        deadline: float | None = None,
    ) -> R:
        """One state's mean per year, ascending, only years with data:
        {state: {"2011": mean, "2012": mean, ...}}."""
        return self.run(
            "state_trend", priority=priority, deadline=deadline, **_params(question, state, years)
        )


def _params(question: str, state: str | None, years: Years | None) -> dict[str, Any]:
    """A job's parameters; `years` travels as [FIRST, LAST]."""
    params: dict[str, Any] = {"question": question}
    if state is not None:
        params["state"] = state
    if years is not None:
        params["years"] = list(years)
    return params
