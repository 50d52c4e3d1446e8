"""The smallest end-to-end check: a real broker, two real workers, one answer."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from bench.harness import Service
from bench.service import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.shares_service]


OBESITY = "Percent of adults aged 18 years and older who have obesity"


def test_a_job_flows_through_real_processes(service: Service) -> None:
    with service.client() as client:
        job = client.submit("global_mean", question=OBESITY)
        answer = client.wait(job, timeout=10)
    assert job.startswith("job_id_")
    assert set(answer) == {"global_mean"}
    assert 10 < answer["global_mean"] < 60


def test_map_sends_each_job_before_it_waits_for_the_next_one(service: Service) -> None:
    """Client.map batches jobs only while answers are at hand: a job the caller's
    iterable has handed over reaches the broker even while the iterable keeps the
    pipeline waiting (here, until the broker has recorded the job before it)."""
    with service.client() as watcher, service.client() as client:
        before = len(watcher.jobs())

        def recorded(count: int) -> bool:
            return len(watcher.jobs()) >= count

        def jobs_each_after_the_last_is_recorded() -> Iterator[tuple[str, dict[str, Any]]]:
            for n in range(1, 6):
                yield "global_mean", {"question": OBESITY}
                wait_until(partial(recorded, before + n), 10, f"job {n} sent")

        answers = list(client.map(jobs_each_after_the_last_is_recorded(), window=3))
    assert len(answers) == 5 and all(set(a) == {"global_mean"} for a in answers)
