"""Two brokers' logic on one PostgreSQL store: roles, visibility and waits across them.

Two `BrokerCore`s, each on its own `PgStore` of one real database, stand for two
brokers (the store's notification, which broker.cluster turns into
`finished_elsewhere`, is given here by hand; tests/integration/test_brokers.py has it
travel through PostgreSQL). Skipped without PostgreSQL binaries.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.access import Caller, Role
from broker.core import BrokerCore
from broker.store.postgres import PgStore
from protocol import messages as m
from tests.unit.broker_harness import FP, SETTINGS

ALICE = Caller(Role.CLIENT, "A" * 40, "alice")
BOB = Caller(Role.CLIENT, "B" * 40, "bob")
ADMIN = Caller(Role.ADMIN, "C" * 40, "admin")


class Broker:
    """One broker's core on its own connection to the shared store."""

    def __init__(self, url: str, name: str) -> None:
        self.store = PgStore(url, name)
        self.store.register(lease_s=60.0)
        self.core = BrokerCore(self.store, SETTINGS, FP, broker_id=name)

    def ask(self, message: m.Message, caller: Caller, who: bytes = b"c") -> list[m.Message]:
        self.core.on_client(m.Envelope(message, tag=b"t", identity=who), 1000.0, caller)
        return self.replies()

    def replies(self) -> list[m.Message]:
        self.core.dispatch(1000.0)
        self.core.commit()
        clients, _ = self.core.outbox.take()
        return [m.decode(frames, routed=True).message for frames in clients]

    def run_everything(self) -> None:
        """A worker takes every queued job and answers it."""
        self.core.on_worker(m.Envelope(m.Ready(8, FP), identity=b"w"), 1000.0)
        self.core.dispatch(1000.0)
        _, to_workers = self.core.outbox.take()
        for frames in to_workers:
            job = m.decode(frames, routed=True)
            if isinstance(job.message, m.Job):
                result = m.Envelope(m.Result("done", FP), job.tag, m.pack({"x": 1.0}), b"w")
                self.core.on_worker(result, 1000.0)
        self.core.commit()


@pytest.fixture
def pair(pg_url: str) -> Iterator[tuple[Broker, Broker]]:
    a, b = Broker(pg_url, "broker-a"), Broker(pg_url, "broker-b")
    yield a, b
    a.store.close()
    b.store.close()


def _submitted(replies: list[m.Message]) -> str:
    (reply,) = replies
    assert isinstance(reply, m.Submitted), reply
    return reply.job_id


def test_a_client_key_sees_its_own_jobs_on_every_broker_and_only_those(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    job = _submitted(a.ask(m.Submit("r1", "global_mean", {"question": "Q"}), ALICE))
    (mine,) = b.ask(m.Get(job), ALICE)
    (theirs,) = b.ask(m.Get(job), BOB)
    (admins,) = b.ask(m.Get(job), ADMIN)
    assert isinstance(mine, m.JobState) and mine.status == "running"
    assert isinstance(theirs, m.ErrorReply) and theirs.code == m.ErrorCode.INVALID_JOB_ID
    assert isinstance(admins, m.JobState)
    (listing,) = b.ask(m.ListJobs(), BOB)
    assert isinstance(listing, m.JobList) and listing.jobs == []
    b.core.running_of = b.store.running_of  # as broker.cluster sets it
    assert b.ask(m.NumJobs(), ALICE) == [m.JobCount(1)]
    assert b.ask(m.NumJobs(), BOB) == [m.JobCount(0)]
    (reuse,) = b.ask(m.Submit("r1", "global_mean", {"question": "Q"}), BOB)
    assert isinstance(reuse, m.ErrorReply) and reuse.code == m.ErrorCode.FORBIDDEN


def test_a_wait_on_another_broker_is_answered_when_the_job_finishes(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    job = _submitted(a.ask(m.Submit("r1", "global_mean", {"question": "Q"}), ALICE))
    assert b.ask(m.Wait(job), ALICE) == []  # held: A runs the job
    assert b.core.remote_waits() == [m.job_seq(job)]
    a.run_everything()
    b.core.finished_elsewhere(b.core.remote_waits())  # what the NOTIFY makes B do
    (state,) = b.replies()
    assert isinstance(state, m.JobState) and (state.job_id, state.status) == (job, "done")
    assert b.core.remote_waits() == []


def test_a_deposed_broker_forgets_its_jobs_and_keeps_their_waiters(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    job = _submitted(a.ask(m.Submit("r1", "global_mean", {"question": "Q"}), ALICE))
    assert a.ask(m.Wait(job), ALICE) == []
    a.core.forget_jobs()
    a.store.register(lease_s=60.0)  # a's old epoch is gone: b may adopt its job
    assert b.core.adopt(b.store.adopt()) == 1
    b.run_everything()
    a.core.finished_elsewhere(a.core.remote_waits())
    (state,) = a.replies()
    assert isinstance(state, m.JobState) and state.status == "done"
