"""Cancel, deadlines and priorities as users reach them: `Client`, `lss` and the HTTP
gateway against a real broker. The broker has no worker until a test starts one, so a
job stays queued for as long as the test needs it to."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.harness import Service
from clients import JobCancelled, UnknownJob
from tests.integration.gateway_http import Http
from tests.integration.test_cli import lss, ok

pytestmark = pytest.mark.integration

Q = "obesity"
WAIT_S = 10.0


def test_a_queued_job_cancelled_never_runs_and_its_waiter_hears_at_once(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory()
    with service.client() as client, service.client() as other, ThreadPoolExecutor(1) as pool:
        job = client.submit("global_mean", question=Q)
        waiting = pool.submit(other.wait, job, WAIT_S)
        assert client.cancel(job) == "cancelled"
        with pytest.raises(JobCancelled) as raised:
            waiting.result(WAIT_S)
        assert (raised.value.job_id, raised.value.reason) == (job, "cancelled")
        assert client.cancel(job) == "cancelled"  # idempotent
        assert client.get(job) == {"status": "cancelled", "reason": "cancelled"}
        assert client.jobs(status="cancelled") == {job: "cancelled"}
        with pytest.raises(UnknownJob):
            client.cancel("job_id_999999")
        service.start_workers(1)
        answered = client.submit("global_mean", question=Q)
        client.wait(answered, WAIT_S)
        assert client.cancel(answered) == "done"  # finished first: left as it is
        assert client.get(job)["status"] == "cancelled"  # a worker came: it still never ran


def test_a_deadline_that_passes_behind_a_backlog_ends_cancelled(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory()
    with service.client() as client:
        late = client.submit("best5", question=Q, deadline=0.2)
        with pytest.raises(JobCancelled, match="deadline passed"):
            client.wait(late, WAIT_S)
        with pytest.raises(JobCancelled, match="deadline passed"):
            client.state_mean(Q, "Ohio", deadline=0.2)


def test_a_producers_priorities_order_its_own_jobs(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory()
    with service.client() as client:
        jobs = {p: client.submit("global_mean", question=Q, priority=p) for p in (9, 0, 4)}
        service.start_workers(1, credit=1)  # one job at a time: they finish in turn
        client.wait_all(list(jobs.values()), WAIT_S)
        finished = {job["job_id"]: job["finished_s"] for job in client.recent(10)["jobs"]}
    assert sorted(jobs, key=lambda p: finished[jobs[p]]) == [0, 4, 9]


def test_lss_cancel_prints_each_status_and_exits_1_for_an_unknown_id(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory()
    with service.client() as client:
        job = client.submit("best5", question=Q)
    some_unknown = lss(service, "cancel", job, "job_id_424242")
    assert some_unknown.returncode == 1, some_unknown.stderr
    assert some_unknown.stdout.splitlines() == [f"{job} cancelled", "job_id_424242 unknown"]
    assert "1 of 2 job id(s) unknown" in some_unknown.stderr
    again = lss(service, "cancel", job)
    assert (again.returncode, again.stdout) == (0, f"{job} cancelled\n")
    got = lss(service, "get", job)
    assert got.returncode == 1 and json.loads(got.stdout)["status"] == "cancelled"
    listed = lss(service, "jobs", "--status", "cancelled", "--json")
    assert json.loads(listed.stdout) == {job: "cancelled"}


def test_lss_submit_with_a_deadline_behind_a_backlog_is_cancelled(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory()
    waited = lss(service, "submit", "best5", "--question", Q, "--deadline", "0.2", "--wait")
    assert waited.returncode == 1
    assert "was cancelled: deadline passed" in waited.stderr


def test_post_cancel_follows_the_token_and_cross_site_rules(
    service_factory: Callable[..., Service], gateway_for: Callable[..., Http]
) -> None:
    service = service_factory()
    token = "s3cret-" + os.urandom(8).hex()
    http = gateway_for(service, env={"LSS_HTTP_TOKEN": token})
    bearer = f"Bearer {token}"
    status, body = http.call("POST", "/api/best5", b'{"question": "obesity"}', Authorization=bearer)
    assert status == 200, body
    job = body["job_id"]
    path = f"/api/cancel/{job}"
    refused = [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": bearer, "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Authorization": bearer, "Origin": "http://evil.example"}, 403),
        ({"Authorization": bearer, "Content-Type": "text/plain"}, 415),
    ]
    for headers, want in refused:
        assert http.call("POST", path, b"", **headers)[0] == want, headers
    results = f"/api/get_results/{job}"
    assert http.call("GET", results, Authorization=bearer) == (200, {"status": "running"})
    cancelled = {"job_id": job, "status": "cancelled"}
    assert http.call("POST", path, b"", Authorization=bearer) == (200, cancelled)
    gone = {"status": "cancelled", "reason": "cancelled"}
    assert http.call("GET", results, Authorization=bearer) == (200, gone)
    unknown = (404, {"status": "error", "reason": "Invalid job_id"})
    assert http.call("POST", "/api/cancel/job_id_424242", b"", Authorization=bearer) == unknown


def test_a_rest_deadline_behind_a_backlog_ends_cancelled(
    service_factory: Callable[..., Service], gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service_factory())
    status, body = http.post("/api/best5", {"question": Q, "deadline": 0.2, "priority": 0})
    assert status == 200, body
    assert http.poll(body["job_id"]) == {"status": "cancelled", "reason": "deadline passed"}
    status, body = http.post("/api/best5", {"question": Q, "priority": 12})
    assert status == 400 and "priority" in body["reason"]


def test_lss_status_and_metrics_show_each_producers_queue(
    service_factory: Callable[..., Service],
) -> None:
    service = service_factory()
    with service.client() as client:
        for _ in range(3):
            client.submit("best5", question=Q)
        (row,) = [p for p in client.stats()["producers"] if p["queued"]]
    assert row["producer"].startswith("conn-") and row["queued"] == 3
    text = ok(lss(service, "status")).splitlines()
    shown = next(line.split() for line in text if line.lstrip().startswith(row["producer"]))
    assert shown[:3] == [row["producer"], "3", "0"]
    metrics = ok(lss(service, "status", "--prometheus")).splitlines()
    assert f'lss_producer_queued{{producer="{row["producer"]}"}} 3.0' in metrics
