"""How a database's errors become the one error of every store, `StorageError`.

Each store names the errors of its database (`translated(sqlite3.Error, OSError)`,
`translated(psycopg.Error)`) and decorates its methods: any such error becomes a
`StorageError` naming the method, with the database's message on one line. An error
that took back only one request's own write (a row refused, the transaction going on)
is raised as `contained(operation, exc)` by the store that knows it was so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class StorageError(Exception):
    """The store could not read or write; the open transaction must be rolled back.

    `operation` names the store method that failed (`add`, `commit`...). `contained`:
    the failure took back only that call's own writes, and the transaction goes on
    (one request's bad data fails that request, never the turn of every other peer).
    """

    def __init__(self, operation: str, reason: str, *, contained: bool = False) -> None:
        super().__init__(f"{operation}: {reason}")
        self.operation = operation
        self.contained = contained


def reason(exc: BaseException) -> str:
    """A database error on one line (libpq's messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def contained(operation: str, exc: BaseException) -> StorageError:
    """The error of a request whose write alone was taken back: the transaction goes on."""
    return StorageError(operation, reason(exc), contained=True)


def translated(
    *errors: type[BaseException],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator that turns `errors` raised by a store method into a `StorageError`
    naming the method (a `StorageError` raised inside goes up as it is)."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def translating(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except errors as exc:
                raise StorageError(method.__name__, reason(exc)) from exc

        return translating

    return decorate
