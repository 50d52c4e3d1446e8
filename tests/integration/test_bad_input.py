"""Bad requests end as clear errors, and the broker keeps serving."""

from __future__ import annotations

from typing import Any

import pytest

from bench.harness import Service
from bench.reference import QUESTIONS
from clients import JobFailed, RequestRefused

pytestmark = pytest.mark.integration

Q = QUESTIONS[0]

CASES = [
    ("no_such_statistic", {"question": Q}, "unknown statistic"),
    ("states_mean", {}, "question"),
    ("states_mean", {"question": 42}, "question"),
    ("states_mean", {"question": "Is this a question?"}, "question"),
    ("state_mean", {"question": Q}, "state"),
    ("state_mean", {"question": Q, "state": ["Ohio"]}, "state"),
    ("state_mean", {"question": Q, "state": "Atlantis"}, "no data for state 'Atlantis'"),
    ("global_mean", {"question": Q, "colour": "blue"}, "colour"),
    ("states_mean", {"question": Q, "state": "Ohio"}, "state"),
]


@pytest.mark.parametrize(("statistic", "params", "reason"), CASES)
def test_bad_job_fails_with_a_reason(
    shared_service: Service, statistic: str, params: dict[str, Any], reason: str
) -> None:
    with shared_service.client() as client:
        job = client.submit(statistic, **params)
        with pytest.raises(JobFailed) as failure:
            client.wait(job)
        assert reason.lower() in str(failure.value).lower()
        state = client.get(job)
        assert state["status"] == "error"
        assert reason.lower() in state["reason"].lower()
        assert client.global_mean(Q)["global_mean"] > 0  # still serving


def test_unknown_job_ids(shared_service: Service) -> None:
    with shared_service.client() as client:
        for job in ["job_id_999999", "job_id_0", "job_id_01", "nonsense", ""]:
            assert client.get(job) == {"status": "error", "reason": "Invalid job_id"}


def test_malformed_submit_is_refused_not_fatal(shared_service: Service) -> None:
    with shared_service.client() as client:
        with pytest.raises(RequestRefused, match="request_id"):
            client.submit_as("", "global_mean", {"question": Q})
        assert client.global_mean(Q)["global_mean"] > 0
