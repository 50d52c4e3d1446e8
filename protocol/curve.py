"""CurveZMQ key files and the client side of a secured socket (workers and clients).

Key layout made by `generate_keys()` (and `./run.sh keys`):

    DIR/broker.key, DIR/broker.key_secret      the broker's pair
    DIR/<name>.key, DIR/<name>.key_secret      one pair per worker or client identity
    DIR/authorized/<name>.key                  public keys the broker accepts
"""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth

BROKER_KEY = "broker"
AUTHORIZED_DIR = "authorized"


def generate_keys(directory: str | Path, names: list[str]) -> list[Path]:
    """Create the broker's pair and one authorized pair per name; keep existing ones."""
    root = Path(directory)
    (root / AUTHORIZED_DIR).mkdir(parents=True, exist_ok=True)
    made = []
    for name in [BROKER_KEY, *names]:
        if not (root / f"{name}.key_secret").exists():
            public, _secret = zmq.auth.create_certificates(str(root), name)
            made.append(Path(public))
        if name != BROKER_KEY:
            (root / AUTHORIZED_DIR / f"{name}.key").write_bytes((root / f"{name}.key").read_bytes())
    return made


def secure_client(
    sock: zmq.Socket[bytes], server_key_file: str | Path, secret_file: str | Path
) -> None:
    """Make `sock` a CURVE client of the broker whose public key is in `server_key_file`."""
    server_public, _ = zmq.auth.load_certificate(str(server_key_file))
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ValueError(f"{secret_file} holds no secret key")
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
