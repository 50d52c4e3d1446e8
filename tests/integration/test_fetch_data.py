"""A worker host without the data file fetches it from the broker, chunk by chunk, and
loads it only if its SHA-256 is the one the broker announced."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import zmq

from bench.harness import Service
from protocol import config
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.fingerprint import file_sha256
from workers.fetch import ensure_data, fetch
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


TotalAt = Callable[[int], int]  # the size a fake broker announces with the chunk at an offset
FakeBroker = Callable[..., str]  # (data, fingerprint, total_at=None) -> its endpoint


def serve_chunks(
    sock: zmq.Socket[bytes], data: bytes, fingerprint: str, total_at: TotalAt | None,
    stop: threading.Event,
) -> None:  # fmt: skip
    """A fake broker's loop: answer FETCH_DATA with slices of `data`."""
    while not stop.is_set():
        if not sock.poll(50):
            continue
        envelope = m.decode(sock.recv_multipart(), routed=True)
        request = envelope.message
        assert isinstance(request, m.FetchData)
        piece = data[request.offset : request.offset + request.length]
        total = total_at(request.offset) if total_at else len(data)
        chunk = m.DataChunk(request.offset, piece, total, fingerprint)
        sock.send_multipart(m.route(envelope.identity or b"", chunk))


@pytest.fixture
def fake_broker() -> Iterator[FakeBroker]:
    """Start fake brokers serving given bytes with a given fingerprint (and, if given, the
    size `total_at(offset)` with each chunk); all stopped after."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    threads: list[threading.Thread] = []
    stop = threading.Event()
    sockets: list[zmq.Socket[bytes]] = []

    def start(data: bytes, fingerprint: str, total_at: TotalAt | None = None) -> str:
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        sockets.append(sock)
        args = (sock, data, fingerprint, total_at, stop)
        thread = threading.Thread(target=serve_chunks, args=args)
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


def test_fetch_verifies_the_announced_sha256(fake_broker: FakeBroker, tmp_path: Path) -> None:
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


CHUNK = config.DATA_CHUNK_BYTES


def test_a_broker_cannot_move_the_announced_size_mid_fetch(
    fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """Issue 17, hole 7: the size came from each chunk anew, so a fake broker could keep a
    worker writing without bound; it is the first chunk's, for the whole fetch."""
    data = bytes(range(256)) * (8 * CHUNK // 256)  # 2 MiB, announced 512 KiB at first
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    asked: list[int] = []

    def growing_total(offset: int) -> int:
        asked.append(offset)
        return offset + 2 * CHUNK

    growing = fake_broker(data, file_sha256(source), growing_total)
    target = tmp_path / "out" / "data.csv"
    with pytest.raises(ProtocolError):
        fetch(settings_for(growing, tmp_path), target)
    assert max(asked) < 2 * CHUNK, f"fetched up to {max(asked)} of the announced {2 * CHUNK}"
    assert list(target.parent.iterdir()) == []  # nothing kept, no .partial left


def test_fetch_refuses_a_file_over_the_size_cap_before_writing(
    fake_broker: FakeBroker, tmp_path: Path
) -> None:
    data = b"x" * (3 * CHUNK)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    large = fake_broker(data, file_sha256(source))
    capped = replace(settings_for(large, tmp_path), max_data_mb=2 * CHUNK / config.MB)
    target = tmp_path / "out" / "data.csv"
    with pytest.raises(ProtocolError, match=f"announces {3 * CHUNK} bytes, over {2 * CHUNK}"):
        fetch(capped, target)
    assert list(target.parent.iterdir()) == []
    bigger_cap = replace(capped, max_data_mb=3 * CHUNK / config.MB)
    assert fetch(bigger_cap, target) == file_sha256(source)


def test_fetch_takes_only_the_expected_sha256(fake_broker: FakeBroker, tmp_path: Path) -> None:
    """--expect-sha256: a broker announcing other data (truthfully or not) is skipped."""
    right, other = tmp_path / "right.csv", tmp_path / "other.csv"
    right.write_bytes(b"a,b\n1,2\n" * 50_000)
    other.write_bytes(b"a,b\n6,6\n" * 50_000)
    impostor = fake_broker(other.read_bytes(), file_sha256(other))
    honest = fake_broker(right.read_bytes(), file_sha256(right))
    expect = file_sha256(right)
    target = tmp_path / "out" / "data.csv"
    with pytest.raises(ProtocolError, match="not the expected"):
        fetch(replace(settings_for(impostor, tmp_path), expect_sha256=expect), target)
    assert list(target.parent.iterdir()) == []
    both = replace(settings_for(f"{impostor},{honest}", tmp_path), expect_sha256=expect)
    for _ in range(3):  # whichever answers first
        target.unlink(missing_ok=True)
        assert fetch(both, target) == expect and target.read_bytes() == right.read_bytes()


def test_a_local_data_file_must_have_the_expected_sha256(tmp_path: Path) -> None:
    local = tmp_path / "data.csv"
    local.write_bytes(b"a,b\n1,2\n")
    settings = replace(settings_for("tcp://127.0.0.1:9", tmp_path), data=str(local))
    assert ensure_data(replace(settings, expect_sha256=file_sha256(local))) == local
    with pytest.raises(SystemExit, match="not " + "0" * 64):
        ensure_data(replace(settings, expect_sha256="0" * 64))
