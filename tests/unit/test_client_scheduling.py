"""Priorities, deadlines and cancel on the client side, without a broker: the checks made
before anything is sent, the SUBMITs they shape, and the cancelled state in every answer
(clients.operations, clients.session on hand-made replies)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from clients import AsyncClient, Client, JobCancelled, LssError, operations
from clients.session import Session, final_answer, final_status, status_dict
from protocol import messages as m
from protocol.errors import RequestRefused, UnknownJob

NOWHERE = "tcp://127.0.0.1:9"  # nothing is ever sent there: every call below is refused first
Q = "obesity"


def reply(message: m.Message, payload: bytes | None = None) -> m.Envelope:
    return m.decode(m.encode(message, b"7", payload))


@pytest.mark.parametrize(
    ("priority", "deadline", "scheduled"),
    [
        (m.DEFAULT_PRIORITY, None, operations.Scheduling(4, 0)),
        (0, 2.5, operations.Scheduling(0, 2500)),
        (9, 0.0001, operations.Scheduling(9, 1)),  # rounded up: a deadline never becomes none
        (3, 7 * 24 * 3600, operations.Scheduling(3, m.MAX_DEADLINE_MS)),
    ],
)
def test_priority_and_deadline_become_the_submits_fields(
    priority: int, deadline: float | None, scheduled: operations.Scheduling
) -> None:
    when = operations.scheduling(priority, deadline)
    assert when == scheduled
    call = operations.submit_as("r1", "best5", {"question": Q}, None, when)
    submit = reply(call.message).message
    assert isinstance(submit, m.Submit)
    assert (submit.priority, submit.deadline_ms, submit.params) == (
        scheduled.priority,
        scheduled.deadline_ms,
        {"question": Q},
    )


@pytest.mark.parametrize(
    ("priority", "deadline", "says"),
    [
        (10, None, "priority must be from 0 (first) to 9 (last), got 10"),
        (-1, None, "got -1"),
        (True, None, "whole number, got bool"),
        (4.0, None, "whole number, got float"),
        ("4", None, "whole number, got str"),
        (4, 0, "deadline must be above 0"),
        (4, -1.5, "deadline must be above 0"),
        (4, math.nan, "got nan"),
        (4, math.inf, "at most 604800 s"),
        (4, 7 * 24 * 3600 + 1, "at most 604800 s"),
        (4, True, "number of seconds, got bool"),
        (4, "5", "number of seconds, got str"),
    ],
)
def test_bad_priorities_and_deadlines_are_a_clear_value_error(
    priority: Any, deadline: Any, says: str
) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        operations.scheduling(priority, deadline)


def test_every_submitting_call_refuses_bad_values_before_sending_anything() -> None:
    with Client(NOWHERE, timeout=0.5) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.submit("best5", priority=10, question=Q),
            lambda: client.submit_as("r1", "best5", {"question": Q}, deadline=0),
            lambda: client.run("best5", priority=-1, question=Q),
            lambda: client.best5(Q, deadline=-1),
            lambda: client.state_trend(Q, "OH", priority=99),
            lambda: next(client.map([("best5", {"question": Q})], deadline=math.nan)),
            lambda: next(client.outcomes([("best5", {"question": Q})], priority=True)),
        ]
        for call in calls:
            with pytest.raises(ValueError):
                call()
        assert client._transport.session.pending == {}  # nothing was asked of anyone


def test_the_async_client_refuses_them_too() -> None:
    async def refused() -> None:
        async with AsyncClient(NOWHERE, timeout=0.5) as client:
            with pytest.raises(ValueError, match="priority"):
                await client.submit("best5", priority=10, question=Q)
            with pytest.raises(ValueError, match="deadline"):
                await client.state_mean(Q, "OH", deadline=0)
            with pytest.raises(ValueError, match="deadline"):
                await anext(client.map([("best5", {"question": Q})], deadline=-2))

    asyncio.run(refused())


def test_map_sends_each_job_with_the_maps_priority_and_deadline() -> None:
    session = Session(0.0)
    when = operations.scheduling(1, 0.25)
    submit = operations.map_submit(session, "best5", {"question": Q}, when)
    assert (submit.priority, submit.deadline_ms, submit.notify) == (1, 250, True)


@pytest.mark.parametrize("reason", [m.REASON_CANCELLED, m.REASON_DEADLINE])
def test_a_cancelled_job_raises_job_cancelled_with_its_id_and_reason(reason: str) -> None:
    cancelled = reply(m.JobState("job_id_3", m.JobStatus.CANCELLED, reason))
    with pytest.raises(JobCancelled) as raised:
        final_answer(cancelled)
    assert isinstance(raised.value, LssError)
    assert (raised.value.job_id, raised.value.reason) == ("job_id_3", reason)
    assert str(raised.value) == f"job_id_3 was cancelled: {reason}"
    assert status_dict(cancelled) == {"status": "cancelled", "reason": reason}


def test_the_original_shapes_stay_as_they_were() -> None:
    assert status_dict(reply(m.JobState("job_id_1", "running"))) == {"status": "running"}
    done = reply(m.JobState("job_id_1", "done"), m.pack({"Ohio": 31.2}))
    assert status_dict(done) == {"status": "done", "data": {"Ohio": 31.2}}
    failed = reply(m.JobState("job_id_1", "error", "boom"))
    assert status_dict(failed) == {"status": "error", "reason": "boom"}


def test_cancel_answers_the_final_status_and_unknown_ids_are_unknown_job() -> None:
    assert operations.cancel("job_id_5").message == m.Cancel("job_id_5")
    for status in ("cancelled", "done", "error"):
        assert final_status(reply(m.JobState("job_id_5", status))) == status
    for code in (m.ErrorCode.INVALID_JOB_ID, m.ErrorCode.EXPIRED):
        with pytest.raises(UnknownJob):
            final_status(reply(m.ErrorReply(code, "Invalid job_id")))
    with pytest.raises(RequestRefused):
        final_status(reply(m.ErrorReply(m.ErrorCode.FORBIDDEN, "no")))
