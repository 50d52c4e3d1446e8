"""Getting the data file onto a worker host: use the local file, or fetch it from the broker.

The broker serves its data file in chunks (FETCH_DATA -> DATA_CHUNK). The fetch is
written beside its final name, checked against the SHA-256 the broker announces, and only
then renamed into place, so a torn fetch is never loaded.

Trust (docs/deployment.md, "What --fetch-data trusts"): the first chunk's announced size
and SHA-256 are pinned for the whole fetch; a size over `--max-data-mb` is refused before
a byte is written, and with `--expect-sha256` only a broker announcing that SHA-256 is
fetched from (and a local `--data` file must have it too). Without it, the worker takes
the data of the first broker that answers: CURVE says that broker holds the broker key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from protocol import config
from protocol import messages as m
from protocol.curve import secure_client
from protocol.errors import BrokerUnavailable, ProtocolError
from protocol.fingerprint import file_sha256
from protocol.logs import shown
from workers.settings import WorkerSettings

log = logging.getLogger("lss.worker")

CHUNK_TIMEOUT_MS = 10_000
FETCH_RETRIES = 3


@dataclass(frozen=True)
class Trust:
    """What a fetch accepts: at most `max_bytes`, and only data of `sha256` if given."""

    max_bytes: int
    sha256: str | None = None

    @classmethod
    def of(cls, settings: WorkerSettings) -> Trust:
        return cls(int(settings.max_data_mb * config.MB), settings.expect_sha256)

    def refusal(self, chunk: m.DataChunk) -> str | None:
        """Why the data a first chunk announces is not to be fetched, or None."""
        if self.sha256 is not None and chunk.fingerprint != self.sha256:
            return (
                f"it announces sha256 {shown(chunk.fingerprint)}, "
                f"not the expected {self.sha256} (--expect-sha256)"
            )
        if not 0 < chunk.total_bytes <= self.max_bytes:
            return f"it announces {chunk.total_bytes} bytes, over {self.max_bytes} (--max-data-mb)"
        return None


def ensure_data(settings: WorkerSettings) -> Path:
    """The local data file: `settings.data` if present, else a verified copy from the broker."""
    path = Path(settings.data)
    if path.exists():
        _check_expected(path, settings.expect_sha256)
        return path
    if not settings.fetch_data:
        raise SystemExit(
            f"data file {path} not found (pass --fetch-data to get it from the broker)"
        )
    target = Path(settings.state_dir) / "data" / path.name
    fingerprint = fetch(settings, target)
    log.info("fetched %s from the broker (sha256 %s)", target, fingerprint[:12])
    return target


def _check_expected(path: Path, expected: str | None) -> None:
    if expected is not None and (found := file_sha256(path)) != expected:
        raise SystemExit(f"data file {path} has sha256 {found}, not {expected} (--expect-sha256)")


def fetch(settings: WorkerSettings, target: Path) -> str:
    """Download the data file of the first broker (of `settings.connect`) that answers
    with data the settings trust (`Trust`) to `target`; return its verified SHA-256."""
    trust = Trust.of(settings)
    sockets = [_dealer(settings, endpoint) for endpoint in config.endpoints(settings.connect)]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # workers share dirs
    try:
        sock, first = _first_trusted(sockets, trust)
        with open(partial, "wb") as out:
            fingerprint = _download(sock, out, first)
        os.replace(partial, target)
        return fingerprint
    finally:
        for sock in sockets:
            sock.close(linger=0)
        partial.unlink(missing_ok=True)


def _dealer(settings: WorkerSettings, endpoint: str) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, settings.max_message_bytes)  # any broker may answer
    sock.setsockopt(zmq.SNDTIMEO, CHUNK_TIMEOUT_MS)  # a refused handshake leaves no connection
    if settings.curve_server_key and settings.curve_secret:
        secure_client(sock, settings.curve_server_key, settings.curve_secret)
    sock.connect(endpoint)
    return sock


def _first_trusted(
    sockets: list[zmq.Socket[bytes]], trust: Trust
) -> tuple[zmq.Socket[bytes], m.DataChunk]:
    """The first broker to send a first chunk that `trust` accepts, and that chunk."""
    if len(sockets) == 1:
        first = _request_chunk(sockets[0], 0)
        if (why := trust.refusal(first)) is not None:
            raise ProtocolError(f"refused the broker's data: {why}")
        return sockets[0], first
    return _first_trusted_of_many(sockets, trust)


def _first_trusted_of_many(
    sockets: list[zmq.Socket[bytes]], trust: Trust
) -> tuple[zmq.Socket[bytes], m.DataChunk]:
    """Ask every broker for the first chunk at once; skip those whose data `trust` refuses."""
    poller = zmq.Poller()
    for sock in sockets:
        sock.setsockopt(zmq.SNDTIMEO, 0)  # a broker not reached yet gets the request later
        sock.send_multipart(m.encode(m.FetchData(0, config.DATA_CHUNK_BYTES)))
        poller.register(sock, zmq.POLLIN)
    deadline = time.monotonic() + CHUNK_TIMEOUT_MS * FETCH_RETRIES / 1000
    refused: list[str] = []
    while len(refused) < len(sockets) and (left_s := deadline - time.monotonic()) > 0:
        for sock, _event in poller.poll(int(left_s * 1000)):
            first = _chunk_in(m.decode(sock.recv_multipart()).message)
            if (why := trust.refusal(first)) is None:
                return sock, first
            log.warning("not fetching the data from %s: %s", _endpoint(sock), why)
            refused.append(why)
            poller.unregister(sock)
    if refused:
        raise ProtocolError(f"refused the data of {len(refused)} broker(s): {'; '.join(refused)}")
    raise BrokerUnavailable(f"no broker sent data within {CHUNK_TIMEOUT_MS * FETCH_RETRIES} ms")


def _endpoint(sock: zmq.Socket[bytes]) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT) or "a broker"


def _download(sock: zmq.Socket[bytes], out: object, first: m.DataChunk) -> str:
    """Write the file `first` begins to `out`; its SHA-256. The size and SHA-256 the first
    chunk announced hold for every chunk: a broker cannot move them mid-fetch."""
    digest = hashlib.sha256()
    offset, total, announced = 0, first.total_bytes, first.fingerprint
    while offset < total:
        chunk = first if offset == 0 else _request_chunk(sock, offset)
        if chunk.offset != offset:
            raise ProtocolError(f"asked for offset {offset}, got {chunk.offset}")
        if (chunk.total_bytes, chunk.fingerprint) != (total, announced):
            raise ProtocolError("the broker changed the size or sha256 it announced mid-fetch")
        if not chunk.data or offset + len(chunk.data) > total:
            raise ProtocolError(f"a chunk of {len(chunk.data)} bytes at {offset} of {total}")
        digest.update(chunk.data)
        out.write(chunk.data)  # type: ignore[attr-defined]
        offset += len(chunk.data)
    if digest.hexdigest() != announced:
        raise ProtocolError(f"fetched sha256 {digest.hexdigest()} != announced {announced}")
    return announced


def _request_chunk(sock: zmq.Socket[bytes], offset: int) -> m.DataChunk:
    for _attempt in range(FETCH_RETRIES):
        try:
            sock.send_multipart(m.encode(m.FetchData(offset, config.DATA_CHUNK_BYTES)))
        except zmq.Again:
            continue
        if sock.poll(CHUNK_TIMEOUT_MS, zmq.POLLIN):
            return _chunk_in(m.decode(sock.recv_multipart()).message)
    raise BrokerUnavailable(f"no data chunk at offset {offset} after {FETCH_RETRIES} tries")


def _chunk_in(reply: m.Message) -> m.DataChunk:
    if isinstance(reply, m.DataChunk):
        return reply
    if isinstance(reply, m.ErrorReply):
        raise SystemExit(f"the broker cannot serve data: {reply.reason}")
    raise ProtocolError(f"expected a data chunk, got {type(reply).__name__}")
