"""The nine statistic methods, written once for `Client` and `AsyncClient`.

Each method is the protocol catalogue's statistic (protocol.messages.STATISTICS) run
through the client's `run` primitive: `Client.run` returns the answer, `AsyncClient.run`
an awaitable of it, so the methods are generic in what `run` returns. A unit test checks
these methods against the catalogue (tests/unit/test_client_session.py).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Generic, TypeVar

R = TypeVar("R")


class Statistics(Generic[R]):
    """`question` is a question exactly as in the data, `state` a location (LocationDesc)."""

    @abstractmethod
    def run(self, statistic: str, /, timeout: float | None = None, **params: Any) -> R:
        """Submit a job and wait for its answer, in one round trip."""

    def states_mean(self, question: str) -> R:
        """{state: mean, ...} for every state with data, ordered by mean ascending."""
        return self.run("states_mean", question=question)

    def state_mean(self, question: str, state: str) -> R:
        """{state: mean} of one state."""
        return self.run("state_mean", question=question, state=state)

    def best5(self, question: str) -> R:
        """The five best states, {state: mean}: the lowest five ascending when the best
        is the minimum, the highest five descending when it is the maximum."""
        return self.run("best5", question=question)

    def worst5(self, question: str) -> R:
        """The five worst states, {state: mean}, ordered as in `best5` the other way round."""
        return self.run("worst5", question=question)

    def global_mean(self, question: str) -> R:
        """{"global_mean": mean} over every row of the question."""
        return self.run("global_mean", question=question)

    def diff_from_mean(self, question: str) -> R:
        """{state: global_mean - state_mean, ...} for every state with data."""
        return self.run("diff_from_mean", question=question)

    def state_diff_from_mean(self, question: str, state: str) -> R:
        """{state: global_mean - state_mean} of one state."""
        return self.run("state_diff_from_mean", question=question, state=state)

    def mean_by_category(self, question: str) -> R:
        """The mean of every (state, StratificationCategory1, Stratification1) group with
        data, keyed by `str()` of that tuple: {"('Ohio', 'Age (years)', '18 - 24')": mean}.
        """
        return self.run("mean_by_category", question=question)

    def state_mean_by_category(self, question: str, state: str) -> R:
        """One state's mean per (StratificationCategory1, Stratification1) group, keyed by
        `str()` of the pair: {state: {"('Age (years)', '18 - 24')": mean, ...}}."""
        return self.run("state_mean_by_category", question=question, state=state)
