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
        """The mean of every state, ascending: {state: mean}."""
        return self.run("states_mean", question=question)

    def state_mean(self, question: str, state: str) -> R:
        """One state's mean: {state: mean}."""
        return self.run("state_mean", question=question, state=state)

    def best5(self, question: str) -> R:
        """The five best states for the question: {state: mean}."""
        return self.run("best5", question=question)

    def worst5(self, question: str) -> R:
        """The five worst states for the question: {state: mean}."""
        return self.run("worst5", question=question)

    def global_mean(self, question: str) -> R:
        """The mean over every row: {"global_mean": mean}."""
        return self.run("global_mean", question=question)

    def diff_from_mean(self, question: str) -> R:
        """Each state's difference from the global mean: {state: global - state}."""
        return self.run("diff_from_mean", question=question)

    def state_diff_from_mean(self, question: str, state: str) -> R:
        """One state's difference from the global mean: {state: global - state}."""
        return self.run("state_diff_from_mean", question=question, state=state)

    def mean_by_category(self, question: str) -> R:
        """The mean per state, stratification category and value."""
        return self.run("mean_by_category", question=question)

    def state_mean_by_category(self, question: str, state: str) -> R:
        """One state's mean per stratification category and value."""
        return self.run("state_mean_by_category", question=question, state=state)
