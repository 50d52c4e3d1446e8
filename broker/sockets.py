"""The broker's sockets: a ROUTER bound with the broker's per-peer limits (or a
`BindError` naming the setting to change), and the file that says where they listen."""

from __future__ import annotations

import errno
import json
import logging
import socket
from pathlib import Path

import zmq

from broker.limits import HARD_LIMIT_FACTOR, RECEIVE_HWM, SEND_HWM
from broker.security import CurveServer
from protocol import config

log = logging.getLogger("lss.broker")

ENDPOINTS_FILE = "broker.endpoints.json"


class BindError(Exception):
    """An endpoint the broker cannot listen on; the message names the setting to change."""

    def __init__(self, endpoint: str, setting: str, cause: zmq.ZMQError) -> None:
        option = config.SETTINGS[setting]
        why = "address already in use" if cause.errno == errno.EADDRINUSE else cause.strerror
        super().__init__(
            f"cannot listen on {endpoint}: {why} (another broker or program has it?);"
            f" choose another with {option.variable} or {option.flag}"
        )


def bind_router(
    context: zmq.Context[zmq.Socket[bytes]],
    endpoint: str,
    setting: str,
    max_message_bytes: int,
    curve: CurveServer | None,
) -> zmq.Socket[bytes]:
    """A ROUTER bound to `endpoint`, the value of `setting` (`client_endpoint`, whose ZAP
    domain is `client`, or `worker_endpoint`)."""
    sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    # Messages up to 4x the limit are read and refused with a reply; beyond that
    # libzmq drops the connection before anything is read.
    sock.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT_FACTOR * max_message_bytes)
    sock.setsockopt(zmq.SNDHWM, SEND_HWM)
    sock.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
    if curve:
        curve.secure(sock, setting.removesuffix("_endpoint"))
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise BindError(endpoint, setting, exc) from exc
    return sock


def write_endpoints(
    state: Path, frontend: zmq.Socket[bytes], backend: zmq.Socket[bytes], broker_id: str
) -> None:
    """Where this broker listens, for run.sh and the tests (ENDPOINTS_FILE)."""
    endpoints = {
        "client": frontend.getsockopt_string(zmq.LAST_ENDPOINT),
        "worker": backend.getsockopt_string(zmq.LAST_ENDPOINT),
        "broker_id": broker_id,
        "host": socket.gethostname(),
    }
    path = state / ENDPOINTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(endpoints))
    tmp.replace(path)
    log.info("broker ready: clients on %s, workers on %s", endpoints["client"], endpoints["worker"])
