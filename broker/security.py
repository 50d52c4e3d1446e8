"""CurveZMQ on the broker's sockets: encryption, and an allow-list of public keys.

With security on, a ZAP authenticator thread admits only peers whose public key is in
`<curve_dir>/authorized/`; every refusal is logged. See protocol.curve for the layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from protocol.curve import AUTHORIZED_DIR, BROKER_KEY

log = logging.getLogger("lss.broker.auth")


class CurveServer:
    """Runs the authenticator and turns sockets into CURVE servers."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], curve_dir: str | Path) -> None:
        root = Path(curve_dir)
        secret_file = root / f"{BROKER_KEY}.key_secret"
        if not secret_file.exists():
            raise SystemExit(f"no broker key at {secret_file}: run './run.sh keys' first")
        self.public, secret = zmq.auth.load_certificate(str(secret_file))
        if secret is None:
            raise SystemExit(f"{secret_file} holds no secret key")
        self.secret: bytes = secret
        self.authenticator = ThreadAuthenticator(context, log=log)
        self.authenticator.start()
        self.authenticator.configure_curve(domain="*", location=str(root / AUTHORIZED_DIR))
        log.info("CURVE on: peers must hold a key from %s", root / AUTHORIZED_DIR)

    def secure(self, sock: zmq.Socket[bytes]) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        self.authenticator.stop()
