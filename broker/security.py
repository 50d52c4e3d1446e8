"""CurveZMQ on the broker's sockets: encryption, an allow-list of public keys, refusal logs.

With security on, both broker sockets are CURVE servers: every byte on them is
encrypted, and a ZAP authenticator thread admits only peers whose public key is a file
in `<curve_dir>/authorized/` (reread when a key file changes, so keys can be added or
revoked without a restart; see protocol.curve for the layout). Every refusal is logged at
WARNING with the peer's address and public key (at most once per REPEAT_LOG_S for the
same peer and key, with a count): unknown keys through ZAP, and peers that do not speak
CURVE at all (keyless, or garbage) through a socket monitor, which cannot tell their
address, only the endpoint they reached.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from protocol.curve import AUTHORIZED_DIR, BROKER_KEY, load_public_key, load_secret_pair

log = logging.getLogger("lss.broker.auth")

REPEAT_LOG_S = 10.0  # one refusal line per peer and key per this many seconds
MAX_TRACKED = 1024  # refusal counters kept, oldest dropped first
MONITOR_POLL_MS = 200
# ZAP refusals (HANDSHAKE_FAILED_AUTH) are logged by the authenticator, with the address.
_FAILED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class RefusalLog:
    """Rate-limited WARNING lines: the first refusal of a (peer, key) at once, then a count."""

    def __init__(
        self, every_s: float = REPEAT_LOG_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self.lock = threading.Lock()  # ZAP and monitor threads both report
        self.total = 0
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def refused(self, peer: str, key: str, why: str) -> bool:
        """Count one refusal; log it unless this peer and key were logged recently."""
        now = self.clock()
        with self.lock:
            self.total += 1
            logged_at, quiet = self._seen.pop((peer, key), (None, 0))
            if logged_at is not None and now - logged_at < self.every_s:
                self._seen[(peer, key)] = (logged_at, quiet + 1)
                return False
            self._seen[(peer, key)] = (now, 0)
            while len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)
        again = f" (refused {quiet} more time(s) since the last report)" if quiet else ""
        log.warning("refused %s with key %s: %s%s", peer, key, why, again)
        return True


class AllowList:
    """The public keys in a directory, reread when a key file changes (a ZAP callback).

    Checked at every handshake (connections are few): adding, deleting or rewriting a
    `.key` file takes effect for the next connection, without a restart.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._keys: dict[bytes, str] = {}

    def callback(self, _domain: str, key: bytes) -> bool:
        """zmq.auth's credentials-provider hook: is this z85 public key allowed?"""
        self._reload_if_changed()
        return key in self._keys

    def names(self) -> list[str]:
        self._reload_if_changed()
        return sorted(self._keys.values())

    def _reload_if_changed(self) -> None:
        try:
            stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self._files()))
        except OSError:  # a file vanished while listing: look again next time
            stamp = None
        if stamp is None or stamp != self._stamp:
            self._stamp = stamp
            self._keys = self._load()

    def _files(self) -> list[Path]:
        return list(self.directory.glob("*.key"))

    def _load(self) -> dict[bytes, str]:
        keys = {}
        for path in sorted(self._files()):
            try:
                keys[load_public_key(path)] = path.stem
            except ValueError as exc:
                log.error("ignoring %s: %s", path, exc)
        return keys


class LoggingAuthenticator(ThreadAuthenticator):
    """zmq.auth's authenticator, reporting each refused handshake to a `RefusalLog`."""

    def __init__(self, context: zmq.Context[Any], refusals: RefusalLog) -> None:
        super().__init__(context, log=logging.getLogger("lss.broker.zap"))
        self.refusals = refusals
        self._request: list[bytes] = []

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._request = msg  # requests are handled one at a time, in the ZAP thread
        try:
            await super().handle_zap_message(msg)
        finally:
            self._request = []

    def _send_zap_reply(
        self,
        request_id: bytes,
        status_code: bytes,
        status_text: bytes,
        user_id: str = "anonymous",
    ) -> None:
        super()._send_zap_reply(request_id, status_code, status_text, user_id)
        if status_code != b"200":
            peer, key = _describe(self._request)
            self.refusals.refused(peer, key, status_text.decode("ascii", "replace"))


def _describe(request: list[bytes]) -> tuple[str, str]:
    """(peer address, z85 public key) of a ZAP request, as far as it tells."""
    peer = request[3].decode("utf-8", "replace") if len(request) > 3 else "?"
    if len(request) > 6 and request[5] == b"CURVE" and len(request[6]) == 32:
        return peer, z85.encode(request[6]).decode("ascii")
    return peer, "?"


class HandshakeWatch:
    """A thread watching the broker sockets for peers that fail the CURVE handshake early.

    ZAP never sees a peer that offers no CURVE keys at all; a socket monitor does, but it
    only knows the local endpoint, so that is what the refusal line names.
    """

    def __init__(self, context: zmq.Context[Any], refusals: RefusalLog) -> None:
        self.context = context
        self.refusals = refusals
        self._lock = threading.Lock()
        self._new: list[str] = []  # monitor addresses the thread has not connected yet
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lss-curve-watch", daemon=True)
        self._thread.start()

    def watch(self, sock: zmq.Socket[bytes]) -> None:
        """Report the handshake failures of `sock` (the thread connects on its next turn)."""
        self._count += 1
        address = f"inproc://lss-curve-monitor-{id(self)}-{self._count}"
        sock.monitor(address, _FAILED)
        with self._lock:
            self._new.append(address)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        monitors: list[zmq.Socket[bytes]] = []
        poller = zmq.Poller()
        try:
            while not self._stop.is_set():
                for monitor in self._connect_new():
                    poller.register(monitor, zmq.POLLIN)
                    monitors.append(monitor)
                for monitor, _ in poller.poll(MONITOR_POLL_MS):
                    self._report(recv_monitor_message(monitor))
        finally:
            for monitor in monitors:
                monitor.close(linger=0)

    def _connect_new(self) -> list[zmq.Socket[bytes]]:
        with self._lock:
            addresses, self._new = self._new, []
        made = []
        for address in addresses:
            monitor: zmq.Socket[bytes] = self.context.socket(zmq.PAIR)
            monitor.setsockopt(zmq.LINGER, 0)
            monitor.connect(address)
            made.append(monitor)
        return made

    def _report(self, event: dict[str, Any]) -> None:
        if event["event"] & _FAILED:
            endpoint = bytes(event["endpoint"]).decode("utf-8", "replace")
            why = "it does not speak CURVE (no keys, or not ZMTP)"
            self.refusals.refused(f"a peer on {endpoint}", "none", why)


class CurveServer:
    """Runs the authenticator and turns the broker's sockets into CURVE servers."""

    def __init__(self, context: zmq.Context[Any], curve_dir: str | Path) -> None:
        root = Path(curve_dir)
        secret_file = root / f"{BROKER_KEY}.key_secret"
        if not secret_file.exists():
            raise SystemExit(f"no broker key at {secret_file}: run './run.sh keys {root}' first")
        try:
            self.public, self.secret = load_secret_pair(secret_file)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        self.refusals = RefusalLog()
        self.allowed = AllowList(root / AUTHORIZED_DIR)
        self.authenticator = LoggingAuthenticator(context, self.refusals)
        self.authenticator.start()
        self.authenticator.configure_curve_callback(domain="*", credentials_provider=self.allowed)
        self.watch = HandshakeWatch(context, self.refusals)
        names = ", ".join(self.allowed.names()) or "none yet"
        log.info("CURVE on: peers must hold a key from %s (%s)", root / AUTHORIZED_DIR, names)

    def secure(self, sock: zmq.Socket[bytes]) -> None:
        """Make `sock` a CURVE server (call before `bind()`); refusals on it get logged."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        self.watch.watch(sock)

    def stop(self) -> None:
        """Stop the threads (after the broker's sockets are closed, before `context.term()`)."""
        self.watch.stop()
        self.authenticator.stop()


def exposed(endpoint: str) -> bool:
    """Whether a bound endpoint is reachable from other hosts (TCP, not on loopback)."""
    if not endpoint.startswith("tcp://"):
        return False  # ipc:// and inproc:// stay on this host
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # "*", an interface name or a host name


def warn_if_plaintext(endpoints: list[str], curve_on: bool) -> list[str]:
    """Log a WARNING for each endpoint other hosts can reach without CURVE; return them."""
    open_to_all = [] if curve_on else [e for e in endpoints if exposed(e)]
    for endpoint in open_to_all:
        log.warning(
            "%s is reachable from other hosts WITHOUT CurveZMQ: traffic is plaintext and anyone "
            "who can connect may submit jobs and read answers (see docs/deployment.md)",
            endpoint,
        )
    return open_to_all
