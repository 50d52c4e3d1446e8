"""Jobs listed by status and statistic, with paging, end to end: `Client.jobs`, `lss jobs`
and `GET /api/jobs` against a real broker, its workers and the gateway."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from bench.harness import Service
from tests.integration.gateway_http import Http
from tests.integration.test_cli import OBESITY, lss, ok

pytestmark = pytest.mark.integration


def test_jobs_by_status_and_statistic_in_pages(
    service_factory: Callable[..., Service], gateway_for: Callable[..., Http]
) -> None:
    service = service_factory()  # no workers yet: every job stays running
    with service.client() as client:
        jobs = [
            client.submit("best5", question=OBESITY),
            client.submit("state_mean", question=OBESITY, state="Atlantis"),  # will fail
            client.submit("best5", question=OBESITY, x="1"),  # will fail too
            client.submit("global_mean", question=OBESITY),
            client.submit("best5", question=OBESITY),
        ]
        best_ok, atlantis, best_bad, mean, best_again = jobs
        assert client.jobs(status="running") == dict.fromkeys(jobs, "running")
        assert client.jobs(status="done") == {}
        service.start_workers(1)
        client.wait_all(jobs, timeout=20)
        every = client.jobs()
        assert list(every) == jobs
        assert client.jobs(status="error") == {atlantis: "error", best_bad: "error"}
        assert client.jobs(statistic="best5") == {
            best_ok: "done", best_bad: "error", best_again: "done"
        }  # fmt: skip
        assert client.jobs(statistic="best5", status="done") == {
            best_ok: "done", best_again: "done"
        }  # fmt: skip
        assert client.jobs(statistic="best5", limit=1) == {best_ok: "done"}
        after_first = int(best_ok.rsplit("_", 1)[1])
        assert list(client.jobs(statistic="best5", after=after_first, limit=1)) == [best_bad]
        assert client.jobs(statistic="nothing") == {}

    listed = json.loads(ok(lss(service, "jobs", "--status", "error", "--json")))
    assert listed == {atlantis: "error", best_bad: "error"}
    page = lss(service, "jobs", "--statistic", "best5", "--after", best_ok, "--limit", "1")
    assert best_bad in ok(page) and best_again not in page.stdout
    assert "invalid choice" in lss(service, "jobs", "--status", "finished").stderr

    http = gateway_for(service)
    assert http.get("/api/jobs") == (200, {"status": "done", "data": [{j: every[j]} for j in jobs]})
    assert http.get("/api/jobs?status=done&statistic=global_mean") == (
        200, {"status": "done", "data": [{mean: "done"}]},
    )  # fmt: skip
    assert http.get(f"/api/jobs?statistic=best5&after={best_ok}&limit=1") == (
        200, {"status": "done", "data": [{best_bad: "error"}]},
    )  # fmt: skip
    for bad, reason in [
        ("status=finished", "status must be one of"),
        ("limit=0", "limit must be a positive"),
        ("after=seven", "after must be a job id"),
        ("stat=done", "unknown parameter(s) stat"),
        (f"statistic={'x' * 200}", "at most 128 characters"),
    ]:
        status, body = http.get(f"/api/jobs?{bad}")
        assert status == 400 and reason in body["reason"], (bad, status, body)
