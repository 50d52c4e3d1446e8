"""The ZAP handler fails closed: an error, a dead handler or a stuck one admits nobody.

A CURVE server socket (broker.security.CurveServer, worker domain) on a loopback port in
this process; peers are DEALERs holding the authorized `worker` key or a stranger's. A
peer is admitted when the server socket receives its message, and refused when its own
socket reports a failed handshake (a monitor event): each attempt waits for one of the
two, never for a fixed time, except where libzmq may give no answer at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from bench.service import wait_until
from broker import security
from broker.security import CurveServer
from protocol.curve import generate_keys, secure_client

ATTEMPT_TIMEOUT_S = 10.0
UNANSWERED_S = 1.0  # how long a peer must stay out when no answer is expected at all
REFUSED = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


@dataclass
class Secured:
    """A CURVE server socket with its `CurveServer`, and the key files of the peers."""

    context: zmq.Context[Any]
    curve: CurveServer
    server: zmq.Socket[bytes]
    endpoint: str
    keys: Path
    stranger: Path

    def attempt(self, secret: Path, timeout_s: float = ATTEMPT_TIMEOUT_S) -> str:
        """ "admitted", "refused" or "no answer" (within `timeout_s`) for a peer holding
        `secret` that connects and sends one message."""
        peer: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        peer.setsockopt(zmq.LINGER, 0)
        secure_client(peer, self.keys / "broker.key", secret)
        monitor = peer.get_monitor_socket(REFUSED)
        try:
            peer.connect(self.endpoint)
            with contextlib.suppress(zmq.Again):  # refused already: no connection to queue on
                peer.send(secret.name.encode(), zmq.NOBLOCK)
            return self._outcome(monitor, secret.name.encode(), timeout_s)
        finally:
            peer.disable_monitor()
            monitor.close(linger=0)
            peer.close(linger=0)

    def _outcome(self, monitor: zmq.Socket[bytes], sent: bytes, timeout_s: float) -> str:
        poller = zmq.Poller()
        poller.register(self.server, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        ready = dict(poller.poll(int(timeout_s * 1000)))
        if self.server in ready:
            _identity, body = self.server.recv_multipart()
            assert body == sent, f"a message from another peer got in: {body!r}"
            return "admitted"
        if monitor in ready:
            assert recv_monitor_message(monitor)["event"] & REFUSED
            return "refused"
        return "no answer"


@pytest.fixture
def secured() -> Iterator[Secured]:
    # A short directory, not tmp_path: the log shows a path cut to a length, and the
    # file name at its end must fit whatever the base (pytest-xdist adds popen-gwN/).
    with tempfile.TemporaryDirectory(prefix="zap-") as short:
        yield from _secured(Path(short))


def _secured(tmp_path: Path) -> Iterator[Secured]:
    keys, rogue = tmp_path / "keys", tmp_path / "rogue"
    generate_keys(keys, ["worker:worker"])
    generate_keys(rogue, ["worker:stranger"])
    context: zmq.Context[Any] = zmq.Context()
    curve = CurveServer(context, keys)
    server: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    curve.secure(server, "worker")
    port = server.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield Secured(context, curve, server, f"tcp://127.0.0.1:{port}", keys, rogue)
    finally:
        server.close(linger=0)
        curve.stop()
        context.term()


def insider(s: Secured) -> Path:
    return s.keys / "worker.key_secret"


def stranger(s: Secured) -> Path:
    return s.stranger / "stranger.key_secret"


def test_the_handler_admits_its_keys_and_refuses_strangers(secured: Secured) -> None:
    assert secured.attempt(insider(secured)) == "admitted"
    assert secured.attempt(stranger(secured)) == "refused"


def test_an_error_in_the_handler_refuses_the_handshake_is_logged_and_the_handler_goes_on(
    secured: Secured, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(domain: str, key: bytes) -> None:
        raise UnicodeEncodeError("utf-8", "caf\udce9", 3, 4, "surrogates not allowed")

    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, "lss.broker.auth"):
        patch.setattr(secured.curve.keys, "admit", broken)
        for _ in range(3):  # its own key too: the handler could not decide, so no
            assert secured.attempt(stranger(secured)) == "refused"
            assert secured.attempt(insider(secured)) == "refused"
    failures = [r for r in caplog.records if "the ZAP handler failed" in r.getMessage()]
    assert len(failures) == 6 and "UnicodeEncodeError" in failures[0].getMessage()
    # one traceback, then a line per failure
    assert [bool(r.exc_info) for r in failures] == [True] + [False] * 5
    assert secured.curve.zap.alive()
    assert secured.attempt(insider(secured)) == "admitted"
    assert secured.attempt(stranger(secured)) == "refused"


def test_without_a_handler_nobody_gets_in_until_the_check_restarts_it(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    secured.curve.zap.stop()  # as if its thread had died: its socket is closed
    # libzmq then fails the handshake, or (with a socket monitor, as here) leaves it
    # hanging: either way nobody gets in; an admission would take milliseconds.
    assert secured.attempt(stranger(secured), UNANSWERED_S) != "admitted"
    assert secured.attempt(insider(secured), UNANSWERED_S) != "admitted"
    assert not secured.curve.zap.alive()
    with caplog.at_level(logging.ERROR, "lss.broker.auth"):

        def restarted() -> bool:
            secured.curve.check()
            return secured.curve.zap.alive()

        wait_until(restarted, ATTEMPT_TIMEOUT_S, "the ZAP handler's restart")
    assert any("restarted" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert secured.attempt(insider(secured)) == "admitted"
    assert secured.attempt(stranger(secured)) == "refused"


def test_a_stuck_handler_admits_nobody_and_is_reported(
    secured: Secured, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    admit = secured.curve.keys.admit

    def stuck(domain: str, key: bytes) -> Any:
        release.wait(ATTEMPT_TIMEOUT_S)
        return admit(domain, key)

    monkeypatch.setattr(secured.curve.keys, "admit", stuck)
    monkeypatch.setattr(security, "ZAP_STALL_S", 0.0)
    outcomes: list[str] = []
    peer = threading.Thread(target=lambda: outcomes.append(secured.attempt(stranger(secured))))
    peer.start()
    try:
        wait_until(lambda: secured.curve.zap.stuck_s() > 0, ATTEMPT_TIMEOUT_S, "a ZAP request")
        with caplog.at_level(logging.ERROR, "lss.broker.auth"):
            secured.curve.check()
        assert any("ZAP handler has been answering" in r.getMessage() for r in caplog.records)
        assert not secured.server.poll(0), "a peer got in while the handler was stuck"
    finally:
        release.set()
        peer.join(ATTEMPT_TIMEOUT_S * 2)
    assert outcomes == ["refused"]


def test_a_key_file_whose_name_is_not_utf8_is_ignored_and_logged(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    generate_keys(secured.stranger, ["worker:cafe"])
    bad_name = os.fsdecode(b"caf\xe9.key")
    shutil.copy(secured.stranger / "cafe.key", secured.keys / "authorized" / "worker" / bad_name)
    with caplog.at_level(logging.ERROR, "lss.broker.auth"):
        assert secured.attempt(secured.stranger / "cafe.key_secret") == "refused"
    (line,) = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert "caf\\xe9.key" in line and "printable UTF-8" in line
    assert secured.curve.zap.alive()
    assert secured.attempt(insider(secured)) == "admitted"
