"""One data set everywhere: the broker pins its data's SHA-256, refuses workers with other
data, and every job state it sends carries the fingerprint of the data that answered."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from bench.harness import Service
from bench.service import wait_until
from protocol import messages as m
from protocol.errors import JobFailed
from protocol.fingerprint import file_sha256
from workers.standin import generate

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
REPLY_TIMEOUT_MS = 10_000


def job_state(endpoint: str, job_id: str) -> m.JobState:
    """GET over a bare DEALER: the job's state exactly as the wire carries it."""
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(m.encode(m.Get(job_id), b"t1"))
        assert sock.poll(REPLY_TIMEOUT_MS), "no reply from the broker"
        message = m.decode(sock.recv_multipart()).message
    assert isinstance(message, m.JobState), message
    return message


def mismatch_lines(service: Service) -> list[str]:
    return [line for line in service.logs().splitlines() if "refused: data" in line]


def test_every_job_state_carries_the_data_fingerprint(service: Service, standin_csv: Path) -> None:
    expected = file_sha256(standin_csv)
    with service.client() as client:
        job = client.submit("global_mean", question=OBESITY)
        client.wait(job, timeout=10)
        failed = client.submit("global_mean", question="not a question")
        with pytest.raises(JobFailed, match="question"):
            client.wait(failed, timeout=10)
        assert client.stats()["fingerprint"] == expected
    done, error = (
        job_state(service.client_endpoint, job),
        job_state(service.client_endpoint, failed),
    )
    assert (done.status, done.fingerprint) == ("done", expected)
    assert (error.status, error.fingerprint) == ("error", expected)


def test_a_worker_with_other_data_gets_no_jobs(
    service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    other = tmp_path / "other.csv"
    generate(other, rows=600, seed=7)
    service = service_factory()
    stranger = service.start_worker(data=other)
    first = wait_until(lambda: mismatch_lines(service), 30, "the broker refusing other data")
    since = time.monotonic()
    insider = service.start_worker()
    (registered,) = service.wait_workers(1)
    with service.client() as client:
        answers = list(client.map([("global_mean", {"question": OBESITY})] * 4))
        assert [w["pid"] for w in client.stats()["workers"]] == [registered["pid"]]
    assert registered["pid"] == insider.pid
    assert len(answers) == 4
    assert file_sha256(other)[:12] in first[0]
    assert stranger.poll() is None, "a refused worker keeps trying (with backoff)"
    # the refused worker backs off (0.1 s doubling to 5 s) instead of retrying every 0.1 s
    elapsed_s = time.monotonic() - since
    assert len(mismatch_lines(service)) <= 6 + elapsed_s / 4, f"{elapsed_s:.1f} s"
