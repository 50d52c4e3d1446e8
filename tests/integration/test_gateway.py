"""The HTTP gateway as a real process, against the real service, through a real HTTP client.

Includes the original service's client pattern: POST a job, then GET get_results every
few milliseconds until it is no longer running, and compare with the Python client; and
what a hostile web page or peer tries: other sites, other Host names, non-JSON POSTs,
HEAD, a million `[`, slow connections, a missing token.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.gateway import SlowPeers
from bench.harness import Service
from bench.reference import close_enough, params_for
from bench.service import ROOT, stop_process, wait_until
from protocol.messages import STATISTICS
from tests.integration.gateway_http import Http

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
EXERCISE = (
    "Percent of adults who achieve at least 150 minutes a week of moderate-intensity aerobic "
    "physical activity or 75 minutes a week of vigorous-intensity aerobic activity "
    "(or an equivalent combination)"
)


@pytest.mark.shares_service
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


@pytest.mark.shares_service
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
    status, reply = http.post("/api/best5", {"question": "x" * 5000})  # the broker refuses it
    assert status == 413 and "over 4096" in reply["reason"], (status, reply)
    status, reply = http.post("/api/no_such_statistic", {"question": OBESITY})
    assert status == 404 and "unknown statistic" in reply["reason"]
    status, reply = http.get("/api/best5")
    assert status == 405 and reply["status"] == "error"
    assert http.get("/nowhere")[0] == 404


@pytest.mark.shares_service
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


# --- what a hostile page or peer tries (issue 10, part 4) ----------------------------


def _no_jobs_and_still_up(service: Service) -> None:
    with service.client() as client:
        assert client.jobs() == {}
        assert client.ping()["shutting_down"] is False


def test_requests_from_other_sites_are_refused(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    body = json.dumps({"question": OBESITY}).encode()
    cross_site: list[dict[str, str]] = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page.html"},
        {"Origin": f"http://{http.host}.evil.example"},
    ]
    for headers in cross_site:
        status, reply = http.call("GET", "/api/graceful_shutdown", **headers)
        assert status == 403 and "other sites" in reply["reason"], headers
        status, reply = http.call("POST", "/api/best5", body, **headers)
        assert status == 403 and "other sites" in reply["reason"], headers
    _no_jobs_and_still_up(service)
    own_page = {"Origin": f"http://{http.host}", "Sec-Fetch-Site": "same-origin"}
    status, reply = http.call("POST", "/api/best5", body, **own_page)
    assert status == 200 and reply["job_id"].startswith("job_id_"), reply


def test_a_host_header_not_naming_the_gateway_is_refused(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service, "--allow-host", "lss.internal")
    port = http.host.rpartition(":")[2]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1", f"127.0.0.2:{port}", ""):
        status, reply = http.call("GET", "/api/num_jobs", Host=host)
        assert status == 400 and "does not answer to Host" in reply["reason"], host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"lss.internal:{port}"):
        assert http.call("GET", "/api/num_jobs", Host=host) == (200, {"num_jobs": 0}), host


def test_a_post_must_be_json(service: Service, gateway_for: Callable[..., Http]) -> None:
    http = gateway_for(service)
    body = json.dumps({"question": OBESITY}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        status, reply = http.call("POST", "/api/best5", body, **{"Content-Type": content_type})
        assert status == 415 and "application/json" in reply["reason"], content_type
    _no_jobs_and_still_up(service)
    json_with_charset = {"Content-Type": "application/json; charset=utf-8"}
    assert http.call("POST", "/api/best5", body, **json_with_charset)[0] == 200


def test_head_never_shuts_down(service: Service, gateway_for: Callable[..., Http]) -> None:
    http = gateway_for(service)
    assert http.call("HEAD", "/api/graceful_shutdown")[0] == 405
    assert http.call("HEAD", "/api/num_jobs")[0] == 200
    _no_jobs_and_still_up(service)


def test_deep_or_malformed_json_is_a_400_with_a_reason(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    deep_object = b'{"a": ' * 100 + b"1" + b"}" * 100
    for body in (b"[" * 1_000_000, deep_object, b"[" * 40 + b"]" * 40, b'{"question": "\\ud800'):
        status, reply = http.call("POST", "/api/best5", body)
        assert status == 400 and reply["status"] == "error" and reply["reason"], body[:50]
    status, reply = http.call("POST", "/api/best5", b"[" * 1_000_000)
    assert "nested" in reply["reason"]
    _no_jobs_and_still_up(service)


@pytest.mark.shares_service
def test_slow_connections_do_not_hold_up_a_normal_request(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    # The slow peers and the normal requests share an address: lift its share, so that
    # the request deadline, not the per-address limit, is what deals with them.
    http = gateway_for(
        service, "--request-timeout-s", "3", "--http-connections-per-address", "1000"
    )
    with SlowPeers(http.base, 200, drip_s=0.5) as slow:
        for _ in range(5):
            started = time.monotonic()
            assert http.get("/api/num_jobs") == (200, {"num_jobs": 0})
            assert time.monotonic() - started < 1.0  # the bound
        wait_until(lambda: slow.closed_by_server == 200 or None, 30, "overdue requests closed")


@pytest.mark.shares_service
def test_a_thousand_connections_at_once_do_not_end_the_event_loop(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    """More connections than select() can watch (descriptors past 1023, which the default
    limit of 1000 connections nearly reaches by itself): once they are gone, requests are
    served again (with select(), the event loop died for good)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1600
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))  # the gateway too
    http = gateway_for(
        service, "--max-connections", "1500", "--http-connections-per-address", "1500"
    )
    host, port = http.base.removeprefix("http://").rsplit(":", 1)
    peers: list[socket.socket] = []
    try:
        for _ in range(1200):
            peers.append(socket.create_connection((host, int(port)), timeout=5))
            peers[-1].sendall(b"GET /api/num_jobs HTTP/1.1\r\n")  # and never the rest
        descriptors = Path(f"/proc/{http.proc.pid}/fd")
        wait_until(lambda: len(list(descriptors.iterdir())) > 1200 or None, 30, "all accepted")
    finally:
        for peer in peers:
            peer.close()
    status = wait_until(lambda: _answers(http), 30, "an answer after the connections closed")
    assert status == (200, {"num_jobs": 0}) and http.proc.poll() is None


@pytest.mark.shares_service
def test_idle_connections_from_one_address_leave_room_for_others(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    """300 connections that send nothing, from one address (127.0.0.3; the gateway is on
    127.0.0.1, the normal requests come from 127.0.0.1): all but 64 are closed at once,
    and those 64 once they have been silent for 5 s; meanwhile requests still answer."""
    http = gateway_for(service, "--max-connections", "300")  # the attack fills it alone
    host, port = http.base.removeprefix("http://").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), 5, ("127.0.0.3", 0)) for _ in range(300)]
    try:
        closed = wait_until(lambda: _closed(idle, 300 - 64), 10, "connections over the share")
        assert len(closed) == 300 - 64
        for _ in range(5):
            started = time.monotonic()
            assert http.get("/api/num_jobs") == (200, {"num_jobs": 0})
            assert time.monotonic() - started < 1.0  # the bound
        wait_until(lambda: _closed(idle, 300), 30, "silent connections closed")
    finally:
        for sock in idle:
            sock.close()
    log = (Path(http.address_file).parent / "gateway.stderr").read_text()
    refusals = [line for line in log.splitlines() if "closed a connection from 127.0.0.3" in line]
    assert 1 <= len(refusals) <= 3, refusals  # throttled


def _closed(socks: list[socket.socket], at_least: int) -> set[int] | None:
    """The indexes of `socks` the other end has closed, once there are `at_least`."""
    closed: set[int] = set()
    for n, sock in enumerate(socks):
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                closed.add(n)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(n)
    return closed if len(closed) >= at_least else None


def _answers(http: Http) -> tuple[int, object] | None:
    try:
        return http.get("/api/num_jobs")
    except OSError:
        return None


def test_a_token_is_required_when_set(service: Service, gateway_for: Callable[..., Http]) -> None:
    token = "s3cret-" + os.urandom(8).hex()
    http = gateway_for(service, env={"LSS_HTTP_TOKEN": token})
    for authorization in (None, "Bearer wrong", f"Bearer {token}x", "Basic !!", token):
        headers = {} if authorization is None else {"Authorization": authorization}
        status, reply = http.call("GET", "/api/num_jobs", **headers)
        assert status == 401 and "Bearer" in reply["reason"], authorization
    status, _ = http.call("POST", "/api/best5", b'{"question": "x"}')
    assert status == 401
    assert _answer_to_a_head(http, b"POST /api/best5 HTTP/1.1\r\nHost: %s\r\n"
                             b"Authorization: Bearer wrong\r\nContent-Length: 100000\r\n\r\n"
                             ).startswith(b"HTTP/1.1 401 ")  # fmt: skip  # before its body
    _no_jobs_and_still_up(service)
    basic = "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()
    for authorization in (f"Bearer {token}", basic):
        reply = http.call("GET", "/api/num_jobs", Authorization=authorization)
        assert reply == (200, {"num_jobs": 0}), authorization


def _answer_to_a_head(http: Http, head: bytes) -> bytes:
    """What the gateway sends for `head` (`%s`: its Host), up to its close, with no body."""
    host, port = http.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head % http.host.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_public_address_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LSS_HTTP_TOKEN"}
    args = ["-m", "clients.gateway", "--listen", "0.0.0.0:0", "--state-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "LSS_HTTP_TOKEN" in done.stderr, done.stderr


@pytest.mark.shares_service
def test_questions_listed_and_state_trend_with_years(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    status, body = http.get("/api/questions")
    assert status == 200 and len(body["questions"]) == 9
    assert {"id": "obesity", "question": OBESITY} in body["questions"]
    status, body = http.post(
        "/api/state_trend", {"question": "obesity", "state": "OH", "years": [2015, 2018]}
    )
    assert status == 200, body
    trend = http.poll(body["job_id"])
    with service.client() as client:
        want = client.state_trend(OBESITY, "Ohio", years=(2015, 2018))
    assert trend["status"] == "done" and close_enough(trend["data"], want)
    assert list(trend["data"]["Ohio"]) == ["2015", "2016", "2017", "2018"]
    _, body = http.post("/api/state_mean", {"question": OBESITY, "state": "Ohio", "years": [2018]})
    failed = http.poll(body["job_id"])
    assert failed["status"] == "error" and "parameter 'years' must be" in failed["reason"]
