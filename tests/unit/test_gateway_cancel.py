"""The gateway's cancel route and the `priority` / `deadline` of its submits, over a
`Client` stand-in that records what it is asked (no broker, no server)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from clients.client import Client
from clients.http.api import GatewayRoutes, create_app
from protocol.errors import UnknownJob

Q = "obesity"


class Recorder:
    """A `Client` that knows job_id_1 (cancelled) and job_id_2 (done), and records submits."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit(self, statistic: str, /, **keywords: Any) -> str:
        self.submitted.append(keywords)
        return "job_id_9"

    def cancel(self, job_id: str) -> str:
        known = {"job_id_1": "cancelled", "job_id_2": "done"}
        if job_id not in known:
            raise UnknownJob("Invalid job_id")
        return known[job_id]

    def get(self, job_id: str) -> dict[str, Any]:
        return {"status": "cancelled", "reason": "deadline passed"}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def http(recorder: Recorder) -> Any:
    return create_app(GatewayRoutes(cast(Client, recorder))).test_client()


def test_cancel_answers_the_jobs_final_status(http: Any) -> None:
    for job_id, status in (("job_id_1", "cancelled"), ("job_id_2", "done")):
        reply = http.post(f"/api/cancel/{job_id}", content_type="application/json")
        assert (reply.status_code, reply.get_json()) == (200, {"job_id": job_id, "status": status})


def test_cancel_of_an_unknown_id_is_404_with_gets_reason(http: Any) -> None:
    reply = http.post("/api/cancel/job_id_77", content_type="application/json")
    assert (reply.status_code, reply.get_json()) == (
        404,
        {"status": "error", "reason": "Invalid job_id"},
    )


def test_cancel_is_a_post_only(http: Any) -> None:
    assert http.get("/api/cancel/job_id_1").status_code == 405


def test_a_cancelled_jobs_results_say_so_and_why(http: Any) -> None:
    reply = http.get("/api/get_results/job_id_1")
    assert reply.get_json() == {"status": "cancelled", "reason": "deadline passed"}


def test_priority_and_deadline_reach_submit_and_are_not_parameters(
    http: Any, recorder: Recorder
) -> None:
    body = {"question": Q, "priority": 2, "deadline": 1.5}
    reply = http.post("/api/best5", json=body)
    assert reply.get_json() == {"job_id": "job_id_9"}
    http.post("/api/best5", json={"question": Q, "deadline": None})
    http.post("/api/best5", json={"question": Q})
    assert recorder.submitted == [
        {"priority": 2, "deadline": 1.5, "question": Q},
        {"deadline": None, "question": Q},
        {"question": Q},
    ]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("priority", 10, "priority must be from 0"),
        ("priority", "high", "priority must be a whole number"),
        ("priority", 4.5, "priority must be a whole number"),
        ("priority", True, "priority must be a whole number"),
        ("deadline", 0, "deadline must be above 0"),
        ("deadline", -3, "deadline must be above 0"),
        ("deadline", "soon", "deadline must be a number of seconds"),
        ("deadline", 1e9, "at most 604800 s"),
    ],
)
def test_a_bad_priority_or_deadline_is_400_and_nothing_is_submitted(
    http: Any, recorder: Recorder, field: str, value: Any, says: str
) -> None:
    reply = http.post("/api/best5", json={"question": Q, field: value})
    assert reply.status_code == 400 and says in reply.get_json()["reason"]
    assert recorder.submitted == []
