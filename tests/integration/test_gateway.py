"""The HTTP gateway as a real process, against the real service, through a real HTTP client.

Includes the original service's client pattern: POST a job, then GET get_results every
few milliseconds until it is no longer running, and compare with the Python client.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.harness import Service
from bench.reference import close_enough, params_for
from bench.service import stop_process, wait_until
from protocol.messages import STATISTICS

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
EXERCISE = (
    "Percent of adults who achieve at least 150 minutes a week of moderate-intensity aerobic "
    "physical activity or 75 minutes a week of vigorous-intensity aerobic activity "
    "(or an equivalent combination)"
)
HTTP_TIMEOUT_S = 15.0


class Http:
    """A tiny JSON-over-HTTP client on urllib: every call returns (status, decoded body)."""

    def __init__(self, base: str, proc: subprocess.Popen[bytes], address_file: Path) -> None:
        self.base = base
        self.proc = proc
        self.address_file = address_file

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.status, _decode(resp.read(), resp.headers.get_content_type())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, _decode(err.read(), err.headers.get_content_type())

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, payload: Any) -> tuple[int, Any]:
        return self.call("POST", path, json.dumps(payload).encode())

    def submit(self, statistic: str, **params: str) -> str:
        status, body = self.post(f"/api/{statistic}", params)
        assert status == 200, body
        job: str = body["job_id"]
        return job

    def poll(self, job_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """The original client: GET get_results until the job is no longer running."""

        def finished() -> dict[str, Any] | None:
            status, body = self.get(f"/api/get_results/{job_id}")
            assert status == 200, body
            return None if body == {"status": "running"} else body

        return wait_until(finished, timeout_s, f"{job_id} to finish")


def _decode(raw: bytes, content_type: str) -> Any:
    return json.loads(raw) if content_type == "application/json" else raw.decode()


@pytest.fixture
def gateway_for() -> Callable[..., Http]:
    """Start `python -m clients.gateway` for a service; stopped with the service."""

    def start(service: Service, *flags: str) -> Http:
        gateway = service.start_gateway("--timeout=2", *flags)
        return Http(f"http://{gateway.address}", gateway.proc, gateway.address_file)

    return start


def test_the_original_polling_pattern_for_every_statistic(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    with service.client() as client:
        state = list(client.states_mean(OBESITY))[3]
        cases = [(s, params_for(s, q, state)) for s in STATISTICS for q in (OBESITY, EXERCISE)]
        expected = [client.run(statistic, **params) for statistic, params in cases]
    for (statistic, params), want in zip(cases, expected, strict=True):
        job_id = http.submit(statistic, **params)
        assert job_id.startswith("job_id_")
        result = http.poll(job_id)
        assert result["status"] == "done", (statistic, result)
        assert close_enough(result["data"], want), statistic
        assert list(result["data"]) == list(want), f"{statistic}: key order changed"


def test_many_jobs_submitted_first_then_polled(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    jobs = [http.submit(s, **params_for(s, OBESITY, "Ohio")) for s in STATISTICS * 5]
    assert len(set(jobs)) == len(jobs)
    results = [http.poll(job) for job in jobs]
    assert all(r["status"] == "done" for r in results), results
    status, listing = http.get("/api/jobs")
    assert status == 200 and listing["status"] == "done"
    assert listing["data"] == [{job: "done"} for job in jobs]
    assert http.get("/api/num_jobs") == (200, {"num_jobs": 0})
    assert http.get("/api/graceful_shutdown") == (200, {"status": "done"})  # nothing to drain


def test_bad_requests_get_400_or_404_with_a_json_reason(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    for body in (b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"question"', b"null"):
        status, reply = http.call("POST", "/api/best5", body)
        assert status == 400 and reply["status"] == "error" and reply["reason"], body
    for payload in ({"question": 42}, {"question": OBESITY, "state": ["Ohio"]}):
        status, reply = http.post("/api/state_mean", payload)
        assert status == 400 and "must be a string" in reply["reason"], payload
    status, reply = http.post("/api/best5", {"question": OBESITY, "n": 2**70})
    assert status == 400, reply
    status, reply = http.post("/api/no_such_statistic", {"question": OBESITY})
    assert status == 404 and "unknown statistic" in reply["reason"]
    status, reply = http.get("/api/best5")
    assert status == 405 and reply["status"] == "error"
    assert http.get("/nowhere")[0] == 404


def test_invalid_ids_and_failed_jobs_answer_with_a_reason(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    invalid = {"status": "error", "reason": "Invalid job_id"}
    for job_id in ("job_id_999999", "nonsense", "job_id_0", "job_id_-1"):
        assert http.get(f"/api/get_results/{job_id}") == (200, invalid), job_id
    failures = {
        "no data for state": http.submit("state_mean", question=OBESITY, state="Atlantis"),
        "question not in the data set": http.submit("best5", question="Is it sunny?"),
        "missing parameter": http.submit("state_mean", question=OBESITY),
        "state": http.submit("best5", question=OBESITY, state="Ohio"),  # not a best5 field
    }
    for reason, job_id in failures.items():
        result = http.poll(job_id)
        assert result["status"] == "error" and reason in result["reason"], result


def test_graceful_shutdown_drains_then_says_done(
    service_factory: Callable[..., Service], gateway_for: Callable[..., Http]
) -> None:
    service = service_factory()  # no workers yet: accepted jobs stay queued
    http = gateway_for(service, "--linger-s", "60")  # stays up after the broker has gone
    job_id = http.submit("global_mean", question=OBESITY)
    assert http.get("/api/num_jobs") == (200, {"num_jobs": 1})
    assert http.get("/api/jobs") == (200, {"status": "done", "data": [{job_id: "running"}]})
    assert http.get("/api/graceful_shutdown") == (200, {"status": "shutting_down"})
    refused = (200, {"job_id": -1, "reason": "shutting down"})
    assert http.post("/api/best5", {"question": OBESITY}) == refused
    service.start_worker()  # not waiting for it to register: the broker may be gone by then
    assert http.poll(job_id)["status"] == "done"
    broker = service.broker
    assert broker is not None
    wait_until(lambda: broker.poll() is not None, 20, "the drained broker to exit")
    assert broker.returncode == 0
    # asked before, unreachable now: the shutdown is over
    assert http.get("/api/graceful_shutdown") == (200, {"status": "done"})
    assert http.get("/api/graceful_shutdown") == (200, {"status": "done"})
    assert http.post("/api/best5", {"question": OBESITY}) == refused
    status, reply = http.get(f"/api/get_results/{job_id}")
    assert status == 503 and "no reply" in reply["reason"]


def test_metrics_and_a_clean_exit_on_sigterm(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    http.submit("global_mean", question=OBESITY)
    status, text = http.get("/metrics")
    assert status == 200
    assert "lss_up 1.0" in text and "lss_workers 2.0" in text
    assert 'lss_jobs{status="running"}' in text or 'lss_jobs{status="done"}' in text
    assert stop_process(http.proc) == 0
    assert not http.address_file.exists()


def test_the_gateway_follows_the_broker_out_after_a_shutdown(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service, "--linger-s", "0.5")
    with service.client() as client:
        client.shutdown()
    assert http.proc.wait(timeout=20) == 0
    assert service.broker is not None and service.broker.wait(timeout=20) == 0
    assert not http.address_file.exists()


def test_a_broker_that_merely_goes_away_is_waited_for(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service, "--linger-s", "0")
    service.kill_broker()
    status, reply = http.get("/api/num_jobs")
    assert status == 503 and reply["status"] == "error"
    service.start_broker()  # same endpoints, same store
    assert http.get("/api/num_jobs") == (200, {"num_jobs": 0})
    assert http.proc.poll() is None
