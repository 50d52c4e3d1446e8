"""A real worker process and a suspect job (docs/protocol.md, "Leases and poison jobs"),
against fake brokers that control every message: the worker says STARTED before it
computes a SUSPECT_JOB, and computes it once that broker has said STARTED back (not on
another job's or another broker's STARTED), or after a heartbeat interval without one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bench.reference import Reference, mismatch
from bench.service import Processes
from protocol import messages as m

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
JOB = m.SuspectJob("global_mean", {"question": OBESITY})


class FakeBroker:
    """A ROUTER on a loopback port that records what its one worker sends."""

    def __init__(self) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.received: list[m.Envelope] = []
        self.worker = b""

    def receive(self, kind: type[m.Message], timeout_s: float) -> m.Envelope | None:
        """The next message of type `kind` (others are recorded too), or None at the end
        of `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            if not self.sock.poll(left_ms):
                break
            for frames in m.messages_in(self.sock.recv_multipart(), routed=True):
                envelope = m.decode(frames, routed=True)
                self.received.append(envelope)
                self.worker = envelope.identity or self.worker
                if isinstance(envelope.message, kind):
                    return envelope
        return None

    def send(self, message: m.Message, tag: bytes) -> None:
        self.sock.send_multipart(m.route(self.worker, message, tag))

    def close(self) -> None:
        self.sock.close(linger=0)
        self.context.term()


@pytest.fixture
def worker_with(tmp_path: Path, standin_csv: Path) -> Iterator[Any]:
    """Start one worker process on `count` fake brokers, with a given heartbeat interval
    (the longest it waits for STARTED); all are stopped at teardown."""
    brokers: list[FakeBroker] = []
    procs = Processes(tmp_path / "state")

    def start(interval_ms: int, count: int = 1) -> list[FakeBroker]:
        brokers.extend(FakeBroker() for _ in range(count))
        endpoints = ",".join(broker.endpoint for broker in brokers)
        procs.spawn(["-m", "workers.worker", f"--connect={endpoints}",
                     f"--data={standin_csv}", f"--state-dir={procs.state_dir}",
                     f"--heartbeat-interval-ms={interval_ms}"], "worker-1")  # fmt: skip
        for broker in brokers:
            assert broker.receive(m.Ready, 60) is not None, "the worker registered"
        return brokers

    yield start
    for broker in brokers:
        broker.send(m.Disconnect("shutdown"), b"")  # the worker leaves at once
    procs.stop()
    for broker in brokers:
        broker.close()


def answer_of(result: m.Envelope | None) -> Any:
    assert result is not None and result.tag == b"job_id_1"
    assert isinstance(result.message, m.Result) and result.message.status == "done"
    return m.unpack(result.payload or b"")


def test_a_suspect_job_is_computed_once_its_broker_has_said_started(
    worker_with: Any, standin_csv: Path
) -> None:
    # Without our STARTED the worker would wait 20 s; each broker numbers its own jobs.
    broker, other = worker_with(interval_ms=20_000, count=2)
    broker.send(JOB, b"job_id_1")
    started = broker.receive(m.Started, 10)
    assert started is not None and started.tag == b"job_id_1"
    assert not [e for e in broker.received if isinstance(e.message, m.Result)]
    broker.send(m.Started(), b"job_id_2")  # another job's
    other.send(m.Started(), b"job_id_1")  # another broker's job_id_1
    assert broker.receive(m.Result, 1.0) is None
    broker.send(m.Started(), b"job_id_1")
    answer = answer_of(broker.receive(m.Result, 10))
    assert mismatch(answer, Reference(standin_csv).global_mean(OBESITY)) is None


def test_a_suspect_job_runs_anyway_when_its_broker_never_answers_started(
    worker_with: Any,
) -> None:
    (broker,) = worker_with(interval_ms=500)
    broker.send(JOB, b"job_id_1")
    assert broker.receive(m.Started, 10) is not None
    assert answer_of(broker.receive(m.Result, 10))["global_mean"] > 0
