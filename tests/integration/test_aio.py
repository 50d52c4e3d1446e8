"""`AsyncClient` against a real broker and workers: concurrency, errors, deadlines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.harness import Service
from bench.reference import close_enough, params_for
from clients.aio import AsyncClient
from protocol.errors import BrokerUnavailable, JobFailed, RequestRefused, UnknownJob
from protocol.messages import STATE_STATISTICS, STATISTICS

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
EXERCISE = (
    "Percent of adults who engage in muscle-strengthening activities on 2 or more days a week"
)


def test_concurrent_coroutines_match_the_sync_client(service: Service) -> None:
    with service.client() as sync:
        state = next(iter(sync.states_mean(OBESITY)))
        expected = {
            (stat, q): sync.run(stat, **params_for(stat, q, state))
            for stat in STATISTICS
            for q in (OBESITY, EXERCISE)
        }

    async def main() -> list[Any]:
        async with AsyncClient(service.client_endpoint, timeout=20) as client:
            calls = [
                getattr(client, stat)(q, *([state] if stat in STATE_STATISTICS else []))
                for stat, q in expected
            ]
            return await asyncio.gather(*calls)

    answers = asyncio.run(main())
    for key, answer in zip(expected, answers, strict=True):
        assert close_enough(answer, expected[key]), key


def test_map_submit_get_wait_and_bookkeeping(service: Service) -> None:
    async def main() -> None:
        async with AsyncClient(service.client_endpoint, timeout=20) as client:
            jobs = [("global_mean", {"question": OBESITY})] * 50
            answers = [answer async for answer in client.map(jobs, window=8)]
            assert len(answers) == 50
            assert all(a == answers[0] for a in answers)
            job = await client.submit("best5", question=OBESITY)
            assert len(await client.wait(job, timeout=20)) == 5
            assert (await client.get(job))["status"] == "done"
            listing = await client.jobs()
            assert listing[job] == "done" and len(listing) == 51
            assert await client.num_jobs() == 0
            assert (await client.stats())["queue_depth"] == 0
            assert (await client.ping())["shutting_down"] is False

    asyncio.run(main())


def test_the_operations_it_shares_with_the_sync_client(service: Service) -> None:
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("global_mean", {"question": OBESITY}),
        ("state_mean", {"question": OBESITY, "state": "Atlantis"}),
        ("no_such_statistic", {"question": OBESITY}),
    ]

    async def main() -> None:
        async with AsyncClient(service.client_endpoint, timeout=20) as client:
            first = await client.submit_as("my-request", "global_mean", {"question": OBESITY})
            assert await client.submit_as("my-request", "best5", {"question": OBESITY}) == first
            states = await client.wait_all([first, "job_id_999999"], timeout=20)
            assert set(states[first]["data"]) == {"global_mean"}
            assert states["job_id_999999"] == {"status": "error", "reason": "Invalid job_id"}
            outcomes = [state async for state in client.outcomes(jobs, window=2)]
            assert [state["status"] for state in outcomes] == ["done", "error", "error"]
            recent = await client.recent(5)
            assert any("Atlantis" in str(failure) for failure in recent["failures"])
            assert list(await client.jobs(status="error", statistic="state_mean")) != []
            assert await client.shutdown(scope="all") == 0

    asyncio.run(main())


def test_errors_are_typed(service: Service) -> None:
    async def main() -> None:
        async with AsyncClient(service.client_endpoint, timeout=20) as client:
            with pytest.raises(JobFailed, match="no data for state"):
                await client.state_mean(OBESITY, "Atlantis")
            with pytest.raises(UnknownJob):
                await client.wait("job_id_999999")
            assert await client.get("nonsense") == {"status": "error", "reason": "Invalid job_id"}
            with pytest.raises(JobFailed):
                _ = [a async for a in client.map([("best5", {"question": "no such question"})])]
            assert await client.shutdown() == 0
            with pytest.raises(RequestRefused, match="shutting down"):
                await client.submit("best5", question=OBESITY)

    asyncio.run(main())


def test_an_unreachable_broker_meets_the_deadline(service: Service) -> None:
    service.kill_broker()

    async def main() -> None:
        async with AsyncClient(service.client_endpoint, timeout=0.3) as client:
            with pytest.raises(BrokerUnavailable):
                await client.num_jobs()

    asyncio.run(main())


def test_a_wait_survives_a_broker_restart(service_factory: Any) -> None:
    service: Service = service_factory()  # no workers yet: the job stays queued
    with service.client() as sync:
        job = sync.submit("global_mean", question=OBESITY)

    async def main() -> dict[str, Any]:
        async with AsyncClient(service.client_endpoint, timeout=30) as client:
            waiting = asyncio.ensure_future(client.wait(job))
            assert await client.num_jobs() == 1  # in order after the WAIT: the broker has it
            await asyncio.to_thread(service.kill_broker)  # the broker forgets the waiter
            await asyncio.to_thread(service.start_broker)
            await asyncio.to_thread(service.start_workers, 1)
            return await waiting

    assert set(asyncio.run(main())) == {"global_mean"}
