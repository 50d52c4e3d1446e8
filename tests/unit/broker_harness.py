"""A BrokerCore fed with envelopes, without sockets, and the helpers its unit tests share
(test_client_side, test_worker_side, test_turn, test_outbox, test_core, test_admission...)."""

from __future__ import annotations

import pytest

from broker.access import Caller, Role
from broker.core import BrokerCore, CoreSettings
from broker.store import StorageError, Store
from protocol import messages as m

FP = "f" * 64


SETTINGS = CoreSettings(
    heartbeat_interval_s=0.5, heartbeat_liveness=5, job_timeout_s=60.0, max_attempts=3,
    max_queue=100, result_ttl_s=1000.0, max_message_bytes=1 << 20,
)  # fmt: skip


class Harness:
    """A core plus helpers to speak for clients and workers and read what it sends."""

    def __init__(self, store: Store, settings: CoreSettings = SETTINGS) -> None:
        self.core = BrokerCore(store, settings, FP)
        self.now = 1000.0  # one fake clock for both: timers and the store's dates
        self.core.wall_clock = lambda: self.now
        self.requests = 0

    def client(self, message: m.Message, who: bytes = b"c1", tag: bytes = b"1") -> None:
        self.core.on_client(m.Envelope(message, tag=tag, identity=who), self.now)

    def worker(
        self, message: m.Message, who: bytes, tag: bytes = b"", payload: bytes | None = None
    ) -> None:
        self.core.on_worker(m.Envelope(message, tag=tag, payload=payload, identity=who), self.now)

    def sent(self) -> tuple[list[m.Envelope], list[m.Envelope]]:
        self.core.dispatch(self.now)
        clients, workers = self.core.outbox.take()
        return [m.decode(f, routed=True) for f in clients], [
            m.decode(f, routed=True) for f in workers
        ]

    def jobs_to(self, worker_messages: list[m.Envelope]) -> list[tuple[bytes, bytes]]:
        return [(e.identity or b"", e.tag) for e in worker_messages if isinstance(e.message, m.Job)]

    def submit(self, n: int, request_ids: list[str] | None = None) -> list[str]:
        for i in range(n):
            self.requests += 1
            request = request_ids[i] if request_ids else f"r{self.requests}"
            self.client(m.Submit(request, "global_mean", {"question": "Q"}), tag=str(i).encode())
        replies, self.core.outbox.clients = self.core.outbox.clients, []  # leave jobs unsent
        clients = [m.decode(f, routed=True).message for f in replies]
        return [msg.job_id for msg in clients if isinstance(msg, m.Submitted)]

    def result(self, who: bytes, job: bytes, answer: object = None) -> None:
        self.worker(m.Result("done", FP), who, job, m.pack(answer or {"global_mean": 1.0}))


def suspect_job_on(h: Harness, worker: bytes) -> None:
    """Lose two workers under job 1, then register `worker`, which gets it as a suspect."""
    h.submit(1)
    for dead in (b"d0", b"d1"):
        h.worker(m.Ready(1, FP), dead)
        h.sent()
        h.core.lose_worker(dead, "died", h.now)
    h.worker(m.Ready(1, FP), worker)
    _, to_workers = h.sent()
    jobs = [(type(e.message), e.identity) for e in to_workers if isinstance(e.message, m.Job)]
    assert jobs == [(m.SuspectJob, worker)]


def failing(monkeypatch: pytest.MonkeyPatch, store: Store, method: str) -> None:
    """Make `store.<method>` fail as a full disk does, until the monkeypatch is undone."""

    def full(*_args: object) -> None:
        raise StorageError(method, "database or disk is full")

    monkeypatch.setattr(store, method, full)


def commit_fails(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn's commit fails as on a full disk, and the core rolls back."""
    failing(monkeypatch, h.core.store, "commit")
    with pytest.raises(StorageError) as failure:
        h.core.commit()
    h.core.roll_back(failure.value, h.now)
    monkeypatch.undo()


def replies(clients: list[m.Envelope]) -> dict[bytes, m.Message]:
    return {e.tag: e.message for e in clients}


STORAGE_ERROR = m.ErrorReply("storage", "storage failed: commit: database or disk is full")


ALICE = Caller(Role.CLIENT, "A" * 40, "alice")


BOB = Caller(Role.CLIENT, "B" * 40, "bob")


ADMIN = Caller(Role.ADMIN, "C" * 40, "ops")


def ask(h: Harness, message: m.Message, caller: Caller, who: bytes = b"c1") -> m.Message:
    """One request from `caller`; its one reply, sent after the turn's commit as the loop
    sends it (a store may settle a submit only at its commit)."""
    h.core.on_client(m.Envelope(message, tag=b"t", identity=who), h.now, caller)
    h.core.commit()
    (reply,) = h.sent()[0]
    return reply.message


WORKER = Caller(Role.WORKER, "D" * 40, "w1")
