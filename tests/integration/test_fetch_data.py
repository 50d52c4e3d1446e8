"""A worker host without the data file fetches it from the broker, chunk by chunk, and
loads it only if its SHA-256 is the one the broker announced."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from bench.harness import Service
from protocol import config
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.fingerprint import file_sha256
from workers.fetch import fetch
from workers.settings import WorkerSettings

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"


def test_a_worker_without_the_file_fetches_it(
    service_factory: Callable[..., Service], standin_csv: Path, tmp_path: Path
) -> None:
    assert standin_csv.stat().st_size > 2 * config.DATA_CHUNK_BYTES, "several chunks"
    service = service_factory()
    local = service.start_worker()
    fetcher = service.start_worker(data=tmp_path / "absent" / standin_csv.name, fetch_data=True)
    service.wait_workers(2)
    fetched = service.state_dir / "data" / standin_csv.name
    assert fetched.read_bytes() == standin_csv.read_bytes()
    assert not list(fetched.parent.glob("*.partial"))
    with service.client() as client:
        answers = list(client.map([("state_mean", {"question": OBESITY, "state": "Ohio"})] * 8))
        pids = {w["pid"] for w in client.stats()["workers"]}
    assert pids == {local.pid, fetcher.pid}
    assert all(answer == answers[0] for answer in answers)  # the same from both workers
    assert "fetched" in service.logs()


def serve_chunks(
    sock: zmq.Socket[bytes], data: bytes, fingerprint: str, stop: threading.Event
) -> None:
    """A fake broker's loop: answer FETCH_DATA with slices of `data`."""
    while not stop.is_set():
        if not sock.poll(50):
            continue
        envelope = m.decode(sock.recv_multipart(), routed=True)
        request = envelope.message
        assert isinstance(request, m.FetchData)
        piece = data[request.offset : request.offset + request.length]
        chunk = m.DataChunk(request.offset, piece, len(data), fingerprint)
        sock.send_multipart(m.route(envelope.identity or b"", chunk))


@pytest.fixture
def fake_broker() -> Iterator[Callable[[bytes, str], str]]:
    """Start fake brokers serving given bytes with a given fingerprint; all stopped after."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    threads: list[threading.Thread] = []
    stop = threading.Event()
    sockets: list[zmq.Socket[bytes]] = []

    def start(data: bytes, fingerprint: str) -> str:
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        sockets.append(sock)
        thread = threading.Thread(target=serve_chunks, args=(sock, data, fingerprint, stop))
        thread.start()
        threads.append(thread)
        return f"tcp://127.0.0.1:{port}"

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    for sock in sockets:
        sock.close(linger=0)
    context.term()


def settings_for(endpoint: str, tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        connect=endpoint, data=str(tmp_path / "absent.csv"), state_dir=str(tmp_path),
        credit=1, heartbeat_interval_ms=500, heartbeat_liveness=4,
        max_message_bytes=config.MAX_MESSAGE_BYTES, diagnostics=False, fetch_data=True,
        curve_server_key=None, curve_secret=None, log_level="INFO",
    )  # fmt: skip


def test_a_worker_given_several_brokers_fetches_from_the_first_that_answers(
    service_factory: Callable[..., Service], standin_csv: Path, tmp_path: Path
) -> None:
    stopped, live = service_factory(), service_factory()
    assert stopped.broker is not None
    os.kill(stopped.broker.pid, signal.SIGSTOP)  # connected, but it never answers
    endpoints = f"{stopped.worker_endpoint},{live.worker_endpoint}"
    target = tmp_path / "out" / "data.csv"
    assert fetch(settings_for(endpoints, tmp_path), target) == file_sha256(standin_csv)
    assert target.read_bytes() == standin_csv.read_bytes()


def test_fetch_verifies_the_announced_sha256(
    fake_broker: Callable[[bytes, str], str], tmp_path: Path
) -> None:
    data = bytes(range(256)) * 3000  # 768,000 bytes: three chunks
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    good = fake_broker(data, file_sha256(source))
    target = tmp_path / "out" / "data.csv"
    assert fetch(settings_for(good, tmp_path), target) == file_sha256(source)
    assert target.read_bytes() == data

    liar = fake_broker(data, "0" * 64)
    torn = tmp_path / "out" / "torn.csv"
    with pytest.raises(ProtocolError, match="sha256"):
        fetch(settings_for(liar, tmp_path), torn)
    assert not torn.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.csv"]  # no .partial left
