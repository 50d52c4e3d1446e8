"""broker.broker's loop turn, in process on loopback sockets: a lone request (a one-call)
that comes while the turn serves other clients is read again in the middle of the turn,
its job leaves for its worker at once (the worker's front slot), and the answer that is
back by the drain is committed and replied to in that same turn."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from broker.broker import Broker, BrokerSettings
from protocol import messages as m

FP = "f" * 64
WAIT_MS = 5000
ANSWER = m.pack({"global_mean": 1.0})


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    any_port = "tcp://127.0.0.1:*"
    served = Broker(BrokerSettings(client_endpoint=any_port, worker_endpoint=any_port,
                                   state_dir=str(tmp_path)))  # fmt: skip
    try:
        yield served
    finally:
        served.close()


Dealers = Callable[[zmq.Socket[bytes]], zmq.Socket[bytes]]


@pytest.fixture
def dealers() -> Iterator[Dealers]:
    """Makes DEALERs connected to a broker's socket; closes them all."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    made: list[zmq.Socket[bytes]] = []

    def dealer(router: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.DEALER)
        sock.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
        made.append(sock)
        return sock

    try:
        yield dealer
    finally:
        for sock in made:
            sock.close(linger=0)
        ctx.term()


def _readable(sock: zmq.Socket[bytes]) -> None:
    assert sock.poll(WAIT_MS, zmq.POLLIN), "nothing came"


def _turn(broker: Broker) -> None:
    """One turn of the loop (`Broker.run`'s body, without its timers)."""
    poller = zmq.Poller()
    poller.register(broker.frontend, zmq.POLLIN)
    poller.register(broker.backend, zmq.POLLIN)
    ready = dict(poller.poll(WAIT_MS))
    now = time.monotonic()
    broker._turn(ready, now)
    broker._flush(now)


def _submit(sock: zmq.Socket[bytes], request: str) -> None:
    submit = m.Submit(request, "global_mean", {"question": "Q"}, notify=True)
    sock.send_multipart(m.encode(submit, request.encode()))


def _job(worker: zmq.Socket[bytes]) -> m.Envelope:
    _readable(worker)
    (job,) = m.decode_all(worker.recv_multipart())[0]
    return job


def test_a_lone_request_that_comes_during_a_turn_is_answered_in_that_turn(
    broker: Broker, dealers: Dealers, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, bulk, person = (
        dealers(broker.backend),
        dealers(broker.frontend),
        dealers(broker.frontend),
    )
    worker.send_multipart(m.encode(m.Ready(1, FP)))
    _turn(broker)
    _submit(bulk, "bulk1")
    _turn(broker)
    assert isinstance(_job(worker).message, m.Job), "the worker's credit (1) is taken"
    _submit(bulk, "bulk2")
    _readable(broker.frontend)
    serve, drain = broker._serve_clients, broker._drain

    def person_asks_meanwhile(now: float) -> None:
        serve(now)
        _submit(person, "one-call")
        _readable(broker.frontend)

    def worker_answers_first(sock: zmq.Socket[bytes], *args: Any) -> None:
        job = _job(worker)  # sent in this turn, before the drain
        assert isinstance(job.message, m.FrontJob)
        worker.send_multipart(m.encode(m.Result("done", FP), job.tag, ANSWER))
        _readable(broker.backend)
        drain(sock, *args)

    monkeypatch.setattr(broker, "_serve_clients", person_asks_meanwhile)
    monkeypatch.setattr(broker, "_drain", worker_answers_first)
    _turn(broker)
    _readable(person)  # no other turn runs: answered in the turn it came in
    (reply,) = m.decode_all(person.recv_multipart())[0]
    assert reply.tag == b"one-call"
    assert reply.message == m.JobState("job_id_3", "done", None, FP)
    assert not bulk.poll(0), "the bulk producer's jobs are still running or queued"
