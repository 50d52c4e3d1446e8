"""The public `Client` against a real broker: what the soak and the CLI need from it, the
threads that take turns at its socket, and the errors a caller can see."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bench.harness import Service
from bench.service import wait_until
from clients import BrokerUnavailable, Client, LssError, RequestRefused

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"


@pytest.mark.shares_service
def test_submit_as_names_the_same_job_for_the_same_request_id(service: Service) -> None:
    with service.client() as client:
        first = client.submit_as("my-request", "global_mean", {"question": OBESITY})
        assert client.submit_as("my-request", "global_mean", {"question": OBESITY}) == first
        other = client.submit_as("my-other-request", "global_mean", {"question": OBESITY})
        assert other != first
        with pytest.raises(RequestRefused, match="request_id"):
            client.submit_as("", "global_mean", {"question": OBESITY})


@pytest.mark.shares_service
def test_wait_all_gives_each_jobs_final_state(service: Service) -> None:
    with service.client() as client:
        done = client.submit("global_mean", question=OBESITY)
        failed = client.submit("state_mean", question=OBESITY, state="Atlantis")
        states = client.wait_all([done, failed, "job_id_999999"], timeout=20)
    assert states[done]["status"] == "done" and set(states[done]["data"]) == {"global_mean"}
    assert states[failed]["status"] == "error" and "Atlantis" in states[failed]["reason"]
    assert states["job_id_999999"] == {"status": "error", "reason": "Invalid job_id"}


def test_wait_all_leaves_unfinished_jobs_running(service_factory: Callable[..., Service]) -> None:
    svc = service_factory()  # no workers: nothing finishes
    with svc.client() as client:
        job = client.submit("global_mean", question=OBESITY)
        assert client.wait_all([job], timeout=0.3) == {job: {"status": "running"}}


@pytest.mark.shares_service
def test_outcomes_go_on_past_failed_and_refused_jobs(service: Service) -> None:
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("global_mean", {"question": OBESITY}),
        ("state_mean", {"question": OBESITY, "state": "Atlantis"}),
        ("no_such_statistic", {"question": OBESITY}),
        ("best5", {"question": OBESITY}),
    ]
    with service.client() as client:
        states = list(client.outcomes(jobs, window=2))
    assert [state["status"] for state in states] == ["done", "error", "error", "done"]
    assert len(states[3]["data"]) == 5


@pytest.mark.shares_service
def test_threads_sharing_a_client_each_get_their_own_answers(service: Service) -> None:
    states = ["Ohio", "Texas", "Iowa", "Utah"]
    with service.client(timeout=30) as client:
        alone = {state: client.state_mean(OBESITY, state) for state in states}
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda n: client.state_mean(OBESITY, states[n % 4]), range(400))
            )
    assert answers == [alone[states[n % 4]] for n in range(400)]


def test_closing_fails_a_waiting_call_with_an_lss_error(
    service_factory: Callable[..., Service],
) -> None:
    svc = service_factory()  # no workers: the wait never ends by itself
    client = svc.client(timeout=30)
    job = client.submit("global_mean", question=OBESITY)
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            client.wait(job)
        except BaseException as exc:
            raised.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        wait_until(lambda: client.num_jobs() == 1 and waiter.is_alive(), 10, "the wait to start")
    finally:
        client.close()  # also if the wait did not start: the thread must not outlive the test
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], BrokerUnavailable), raised
    assert isinstance(raised[0], LssError)
    with pytest.raises(BrokerUnavailable, match="closed"):
        client.num_jobs()


def test_an_unreachable_broker_is_a_typed_error_within_the_deadline(service: Service) -> None:
    service.kill_broker()
    with Client(service.client_endpoint, timeout=0.3) as client:
        with pytest.raises(BrokerUnavailable):
            client.ping()
        with pytest.raises(BrokerUnavailable):
            client.submit_as("r", "global_mean", {"question": OBESITY}, timeout=0.2)
