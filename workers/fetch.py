"""Getting the data file onto a worker host: use the local file, or fetch it from the broker.

The broker serves its data file in chunks (FETCH_DATA -> DATA_CHUNK). The fetch is
written beside its final name, checked against the SHA-256 the broker announces, and only
then renamed into place, so a torn fetch is never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import zmq

from protocol import config
from protocol import messages as m
from protocol.curve import secure_client
from protocol.errors import BrokerUnavailable, ProtocolError
from workers.settings import WorkerSettings

log = logging.getLogger("lss.worker")

CHUNK_TIMEOUT_MS = 10_000
FETCH_RETRIES = 3


def ensure_data(settings: WorkerSettings) -> Path:
    """The local data file: `settings.data` if present, else a verified copy from the broker."""
    path = Path(settings.data)
    if path.exists():
        return path
    if not settings.fetch_data:
        raise SystemExit(
            f"data file {path} not found (pass --fetch-data to get it from the broker)"
        )
    target = Path(settings.state_dir) / "data" / path.name
    fingerprint = fetch(settings, target)
    log.info("fetched %s from the broker (sha256 %s)", target, fingerprint[:12])
    return target


def fetch(settings: WorkerSettings, target: Path) -> str:
    """Download the data file of the first broker (of `settings.connect`) that answers to
    `target`; return its verified SHA-256."""
    sockets = [_dealer(settings, endpoint) for endpoint in config.endpoints(settings.connect)]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # workers share dirs
    try:
        sock, first = _first_to_answer(sockets)
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


def _first_to_answer(sockets: list[zmq.Socket[bytes]]) -> tuple[zmq.Socket[bytes], m.DataChunk]:
    """Ask every broker for the first chunk at once; the first to send it, and its chunk."""
    if len(sockets) == 1:
        return sockets[0], _request_chunk(sockets[0], 0)
    poller = zmq.Poller()
    for sock in sockets:
        sock.setsockopt(zmq.SNDTIMEO, 0)  # a broker not reached yet gets the request later
        sock.send_multipart(m.encode(m.FetchData(0, config.DATA_CHUNK_BYTES)))
        poller.register(sock, zmq.POLLIN)
    for sock, _event in poller.poll(CHUNK_TIMEOUT_MS * FETCH_RETRIES):
        return sock, _chunk_in(m.decode(sock.recv_multipart()).message)
    raise BrokerUnavailable(f"no broker sent data within {CHUNK_TIMEOUT_MS * FETCH_RETRIES} ms")


def _download(sock: zmq.Socket[bytes], out: object, first: m.DataChunk) -> str:
    digest = hashlib.sha256()
    offset, total, announced = 0, None, ""
    while total is None or offset < total:
        chunk = first if offset == 0 else _request_chunk(sock, offset)
        if chunk.offset != offset:
            raise ProtocolError(f"asked for offset {offset}, got {chunk.offset}")
        total, announced = chunk.total_bytes, chunk.fingerprint
        if not chunk.data and offset < total:
            raise ProtocolError("empty chunk before the end of the file")
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
