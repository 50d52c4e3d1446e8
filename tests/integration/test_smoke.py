"""The smallest end-to-end check: a real broker, two real workers, one answer."""

from __future__ import annotations

import pytest

from tests.procs import Service

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"


def test_a_job_flows_through_real_processes(service: Service) -> None:
    with service.client() as client:
        job = client.submit("global_mean", question=OBESITY)
        answer = client.wait(job, timeout=10)
    assert job.startswith("job_id_")
    assert set(answer) == {"global_mean"}
    assert 10 < answer["global_mean"] < 60
