"""CurveZMQ key files, and the client side of a secured socket (workers and producers).

Key layout made by `generate_keys()` (and `./run.sh keys` = `python -m protocol.curve`):

    DIR/broker.key, DIR/broker.key_secret      the broker's pair
    DIR/<name>.key, DIR/<name>.key_secret      one pair per worker or producer identity
    DIR/authorized/<name>.key                  public keys the broker accepts

The broker needs DIR (its secret and `authorized/`, see broker.security); a worker or
producer host needs only `broker.key` (public) and its own `<name>.key_secret`. Secret
files are written with mode 0600. Deployment: docs/deployment.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import zmq
import zmq.auth

BROKER_KEY = "broker"
AUTHORIZED_DIR = "authorized"
DEFAULT_NAMES = ("worker", "client")
SECRET_MODE = 0o600


def generate_keys(directory: str | Path, names: list[str]) -> list[Path]:
    """Create the broker's pair and one authorized pair per name; keep existing pairs.

    Returns the public key files created now (existing pairs are reused, and their
    public keys are copied to `authorized/` again).
    """
    root = Path(directory)
    for name in names:
        _check_name(name)
    (root / AUTHORIZED_DIR).mkdir(parents=True, exist_ok=True)
    made = []
    for name in [BROKER_KEY, *names]:
        if not (root / f"{name}.key_secret").exists():
            public, secret = zmq.auth.create_certificates(str(root), name)
            os.chmod(secret, SECRET_MODE)
            made.append(Path(public))
        if name != BROKER_KEY:
            (root / AUTHORIZED_DIR / f"{name}.key").write_bytes((root / f"{name}.key").read_bytes())
    return made


def _check_name(name: str) -> None:
    if not name or name == BROKER_KEY or Path(name).name != name or name.startswith("."):
        raise ValueError(f"bad key name {name!r}: a plain file name other than {BROKER_KEY!r}")


def load_public_key(path: str | Path) -> bytes:
    """The z85 public key in a `.key` or `.key_secret` file; ValueError if unreadable."""
    try:
        public, _secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read a CURVE key from {path}: {exc}") from exc
    return bytes(public)


def load_secret_pair(path: str | Path) -> tuple[bytes, bytes]:
    """The (public, secret) z85 keys in a `.key_secret` file; ValueError if unreadable."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read a CURVE key from {path}: {exc}") from exc
    if secret is None:
        raise ValueError(f"{path} holds no secret key (pass the .key_secret file)")
    return bytes(public), bytes(secret)


def secure_client(
    sock: zmq.Socket[bytes], server_key_file: str | Path, secret_file: str | Path
) -> None:
    """Make `sock` a CURVE client of the broker whose public key is in `server_key_file`.

    Call before `connect()`. Raises ValueError if a key file is missing or malformed.
    """
    server_public = load_public_key(server_key_file)
    public, secret = load_secret_pair(secret_file)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def usage_note(root: Path, names: list[str]) -> str:
    """How to use the keys in `root`: which file goes to which host, and the flags."""
    worker, client = _pick(names, "worker"), _pick(names, "client")
    return f"""
Broker host (keeps {root}; it needs broker.key_secret and {AUTHORIZED_DIR}/):
  ./run.sh broker --curve-dir {root} --client-endpoint tcp://ADDR:5555 \\
                  --worker-endpoint tcp://ADDR:5556          (or LSS_CURVE_DIR={root})
Worker host (copy {root}/{BROKER_KEY}.key and {root}/{worker}.key_secret):
  ./run.sh workers --connect tcp://BROKER:5556 \\
      --curve-server-key {BROKER_KEY}.key --curve-secret {worker}.key_secret
Producer host (copy {root}/{BROKER_KEY}.key and {root}/{client}.key_secret):
  LSS_CURVE_SERVER_KEY={BROKER_KEY}.key LSS_CURVE_SECRET={client}.key_secret \\
      python -c 'from clients import Client; print(Client("tcp://BROKER:5555").ping())'
To admit another identity: put its public .key file in {root}/{AUTHORIZED_DIR}/ (the broker
rereads the directory when it changes); to revoke one, delete its file there.
Never copy *.key_secret files except each to the one host that uses it."""


def _pick(names: list[str], wanted: str) -> str:
    return wanted if wanted in names else (names[0] if names else wanted)


def main(argv: list[str] | None = None) -> int:
    """`python -m protocol.curve DIR [NAME...]`: create key pairs and say how to use them."""
    parser = argparse.ArgumentParser(
        prog="python -m protocol.curve",
        description="Create CurveZMQ key pairs: the broker's and one per NAME (authorized).",
    )
    parser.add_argument("directory", help="where the keys go (e.g. var/keys)")
    parser.add_argument(
        "names", nargs="*", default=list(DEFAULT_NAMES), help="identities (default: worker client)"
    )
    args = parser.parse_args(argv)
    root = Path(args.directory)
    try:
        made = generate_keys(root, args.names)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    for name in [BROKER_KEY, *args.names]:
        created = root / f"{name}.key" in made
        state, mode = ("created", ", mode 0600") if created else ("kept   ", "")
        print(f"{state} {root / name}.key (public) + {name}.key_secret (secret{mode})")
    authorized = sorted(p.name for p in (root / AUTHORIZED_DIR).glob("*.key"))
    print(f"authorized ({root / AUTHORIZED_DIR}): {', '.join(authorized) or 'none'}")
    print(usage_note(root, args.names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
