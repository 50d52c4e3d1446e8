"""broker.store.errors: how a database's errors become `StorageError`."""

from __future__ import annotations

import sqlite3

import pytest

from broker.store.errors import StorageError, contained, translated


class Table:
    @translated(sqlite3.Error, OSError)
    def insert(self, exc: Exception) -> None:
        raise exc


def test_a_named_error_becomes_a_storage_error_naming_the_method_on_one_line() -> None:
    cause = sqlite3.OperationalError("database is locked\n  DETAIL: twice")
    with pytest.raises(StorageError) as failure:
        Table().insert(cause)
    assert str(failure.value) == "insert: database is locked DETAIL: twice"
    assert failure.value.operation == "insert" and not failure.value.contained
    assert failure.value.__cause__ is cause


def test_an_error_without_a_message_is_named_by_its_type() -> None:
    with pytest.raises(StorageError, match=r"^insert: OSError$"):
        Table().insert(OSError())


def test_other_errors_go_up_as_they_are() -> None:
    with pytest.raises(ValueError):
        Table().insert(ValueError("a bug, not the database"))
    refused = StorageError("add", "refused", contained=True)
    with pytest.raises(StorageError) as failure:
        Table().insert(refused)
    assert failure.value is refused


def test_contained_fails_one_request_and_keeps_the_transaction() -> None:
    error = contained("add", sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert error.contained and error.operation == "add"
    assert str(error) == "add: UNIQUE constraint failed"
