"""CurveZMQ key files with roles, and the client side of a secured socket.

Key layout made by `generate_keys()` (and `./run.sh keys` = `python -m protocol.curve`):

    DIR/broker.key, DIR/broker.key_secret      the broker's pair
    DIR/<name>.key, DIR/<name>.key_secret      one pair per worker, client or admin identity
    DIR/authorized/<role>/<name>.key           public keys the broker admits, by role

Roles (docs/deployment.md): `worker` keys may connect to the worker endpoint only;
`client` keys to the client endpoint, where they see only their own jobs; `admin` keys
to the client endpoint, where they see every job and may shut the service down. The
broker needs DIR (its secret and `authorized/`, see broker.security); a worker or
producer host needs only `broker.key` (public) and its own `<name>.key_secret`. Secret
files are created with mode 0600 (never wider, not even for a moment).
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
ROLES = ("worker", "client", "admin")
DEFAULT_KEYS = ("worker:worker", "client:client", "admin:admin")
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def parse_spec(spec: str) -> tuple[str, str]:
    """`ROLE:NAME` -> (role, name); a bare role name means ROLE:ROLE. ValueError if bad."""
    role, sep, name = spec.partition(":")
    if not sep:
        role = name = spec
    if role not in ROLES:
        raise ValueError(f"bad key {spec!r}: give ROLE:NAME, ROLE one of {', '.join(ROLES)}")
    check_key_name(name)
    return role, name


def generate_keys(directory: str | Path, specs: list[str]) -> list[Path]:
    """Create the broker's pair if missing, one pair per `ROLE:NAME` if missing, and put
    each named public key in `authorized/ROLE/`. Returns the public key files created now.
    """
    root = Path(directory)
    wanted = [parse_spec(spec) for spec in specs]
    root.mkdir(parents=True, exist_ok=True)
    made = [path for name in [BROKER_KEY, *(n for _, n in wanted)] if (path := _pair(root, name))]
    for role, name in wanted:
        authorized = root / AUTHORIZED_DIR / role
        authorized.mkdir(parents=True, exist_ok=True)
        (authorized / f"{name}.key").write_bytes((root / f"{name}.key").read_bytes())
    return made


def _pair(root: Path, name: str) -> Path | None:
    """Create `name`'s key pair unless its secret file exists; the new public file, or None."""
    secret_file = root / f"{name}.key_secret"
    if secret_file.exists():
        return None
    public, secret = zmq.curve_keypair()
    _write(secret_file, _certificate(public, secret), SECRET_MODE)
    _write(root / f"{name}.key", _certificate(public, None), PUBLIC_MODE)
    return root / f"{name}.key"


def _certificate(public: bytes, secret: bytes | None) -> str:
    """A key file in ZeroMQ's certificate format (what zmq.auth.load_certificate reads)."""
    lines = ["#   ZeroMQ CURVE " + ("**Secret** Certificate" if secret else "Public Certificate")]
    lines += ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` from the start (O_EXCL: never rewrite an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)


def old_layout_keys(directory: str | Path) -> list[Path]:
    """Public keys directly in `authorized/` (the layout before roles): no longer read."""
    return sorted((Path(directory) / AUTHORIZED_DIR).glob("*.key"))


def old_layout_note(directory: str | Path) -> str | None:
    """What to do about keys in the old layout, or None if there are none."""
    old = old_layout_keys(directory)
    if not old:
        return None
    names = ", ".join(p.name for p in old)
    return (
        f"{names} in {Path(directory) / AUTHORIZED_DIR}/ have no role and are NOT admitted: "
        f"move each into {AUTHORIZED_DIR}/worker/, {AUTHORIZED_DIR}/client/ or "
        f"{AUTHORIZED_DIR}/admin/ (see docs/deployment.md)"
    )


def check_key_name(name: str) -> None:
    """ValueError unless `name` is a plain, printable UTF-8 file name: the broker puts it
    in ZAP user ids and log lines, so a name it cannot encode must never be made."""
    if not name or name == BROKER_KEY or Path(name).name != name or name.startswith("."):
        raise ValueError(f"bad key name {name!r}: a plain file name other than {BROKER_KEY!r}")
    if not name.isprintable():  # also refuses the surrogates of bytes that are not UTF-8
        raise ValueError(f"bad key name {name!r}: only printable UTF-8 characters")


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


def usage_note(root: Path, wanted: list[tuple[str, str]]) -> str:
    """How to use the keys in `root`: which file goes to which host, and the flags."""
    worker, client, admin = (_pick(wanted, role) for role in ROLES)
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
Operator host: the same with {admin}.key_secret, which may also shut the service down.
Roles: a key in {AUTHORIZED_DIR}/worker/ may only serve jobs; one in {AUTHORIZED_DIR}/client/
sees only its own jobs; one in {AUTHORIZED_DIR}/admin/ sees all and may shut down.
To admit another identity: put its public .key file in {root}/{AUTHORIZED_DIR}/ROLE/ (the
broker rereads the directories when they change); to revoke one, delete its file there.
Never copy *.key_secret files except each to the one host that uses it."""


def _pick(wanted: list[tuple[str, str]], role: str) -> str:
    return next((name for r, name in wanted if r == role), role)


def main(argv: list[str] | None = None) -> int:
    """`python -m protocol.curve DIR [ROLE:NAME...]`: create key pairs, say how to use them."""
    parser = argparse.ArgumentParser(
        prog="python -m protocol.curve",
        description="Create CurveZMQ key pairs: the broker's, and one per ROLE:NAME, "
        "authorized for ROLE (worker, client or admin).",
    )
    parser.add_argument("directory", help="where the keys go (e.g. var/keys)")
    parser.add_argument(
        "keys", nargs="*", default=list(DEFAULT_KEYS),
        help="ROLE:NAME pairs (default: worker:worker client:client admin:admin)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    root = Path(args.directory)
    try:
        wanted = [parse_spec(spec) for spec in args.keys]
        made = generate_keys(root, args.keys)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    for name in [BROKER_KEY, *(name for _, name in wanted)]:
        created = root / f"{name}.key" in made
        state, mode = ("created", ", mode 0600") if created else ("kept   ", "")
        print(f"{state} {root / name}.key (public) + {name}.key_secret (secret{mode})")
    for role in ROLES:
        names = sorted(p.stem for p in (root / AUTHORIZED_DIR / role).glob("*.key"))
        print(f"authorized {role + ':':8} {', '.join(names) or 'none'}")
    note = old_layout_note(root)
    if note:
        print(f"WARNING: {note}")
    print(usage_note(root, wanted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
