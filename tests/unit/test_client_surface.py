"""`Client` and `AsyncClient` offer the same operations with the same parameters.

The async one's are coroutines, but for `map` and `outcomes`, asynchronous generators
(as the sync ones are generators), whose jobs may also come from an asynchronous
iterable; the context-manager methods differ by design. Every operation that submits a
job takes `priority=` and `deadline=` as keywords, with the same defaults.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from clients import AsyncClient, Client
from protocol import messages as m

SYNC_ONLY = {"__enter__", "__exit__"}
ASYNC_ONLY = {"__aenter__", "__aexit__"}
ITERATORS = {"map", "outcomes"}
WIDER = {("map", "jobs"), ("outcomes", "jobs")}  # the async ones take async iterables too
SUBMITTING = {"submit", "submit_as", "run", "frame", "map", "outcomes", *m.STATISTICS}


def public_methods(cls: type) -> dict[str, Any]:
    """The callables a user may call: public names, and the context-manager methods."""
    found = {}
    for name in dir(cls):
        value = inspect.getattr_static(cls, name)
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if inspect.isfunction(value) and (not name.startswith("_") or name.endswith("__")):
            found[name] = value
    return {name: f for name, f in found.items() if f.__module__.startswith("clients")}


SYNC, ASYNC = public_methods(Client), public_methods(AsyncClient)


def test_both_clients_have_the_same_operations() -> None:
    assert set(SYNC) - SYNC_ONLY == set(ASYNC) - ASYNC_ONLY
    assert {"submit_as", "wait_all", "outcomes", "recent", "frame", "questions"} <= set(ASYNC)
    assert {"cancel", *SUBMITTING} <= set(ASYNC)


@pytest.mark.parametrize("name", sorted(SUBMITTING))
def test_every_submitting_operation_takes_priority_and_deadline_keywords(name: str) -> None:
    for method in (SYNC[name], ASYNC[name]):
        parameters = inspect.signature(method).parameters
        priority, deadline = parameters["priority"], parameters["deadline"]
        assert priority.kind == deadline.kind == inspect.Parameter.KEYWORD_ONLY
        assert (priority.default, deadline.default) == (m.DEFAULT_PRIORITY, None)


@pytest.mark.parametrize("name", sorted(set(SYNC) - SYNC_ONLY))
def test_an_operation_has_the_same_parameters_in_both(name: str) -> None:
    sync, asynchronous = inspect.signature(SYNC[name]), inspect.signature(ASYNC[name])
    assert shape(sync) == shape(asynchronous)
    for parameter in sync.parameters.values():
        if (name, parameter.name) not in WIDER:
            assert parameter.annotation == asynchronous.parameters[parameter.name].annotation


def shape(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", sorted(set(ASYNC) - ASYNC_ONLY))
def test_an_async_operation_is_awaited_or_iterated(name: str) -> None:
    method, sync = ASYNC[name], SYNC[name]
    if method is sync:  # written once for both (clients/api.py): the same object
        return
    if name in ITERATORS:
        assert inspect.isasyncgenfunction(method) and inspect.isgeneratorfunction(sync)
    elif name == "__init__":
        assert not inspect.iscoroutinefunction(method)
    else:
        assert inspect.iscoroutinefunction(method), f"AsyncClient.{name} is not a coroutine"
