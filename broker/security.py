"""CurveZMQ on the broker's sockets: encryption, keys admitted by role, refusal logs.

With security on, both broker sockets are CURVE servers: every byte on them is
encrypted, and a ZAP handler thread admits a peer only if its public key is a file in
`<curve_dir>/authorized/<role>/` for a role that endpoint takes: `worker` on the worker
endpoint; `client` or `admin` on the client endpoint (see protocol.curve for the layout;
the directories are reread when a key file changes, so keys can be added or revoked
without a restart). The ZAP user id names the admitted key (broker.access), and ZeroMQ
attaches it to every message the peer sends. Every refusal is logged at WARNING with the
peer's address and public key (at most once per REPEAT_LOG_S for the same peer and reason,
with a count): wrong or unknown keys through ZAP, and peers that do not speak CURVE at
all (keyless, or garbage) through a socket monitor, which cannot tell their address,
only the endpoint they reached.

Fail closed (docs/deployment.md, "Trust"): libzmq admits every key when no ZAP handler
is bound, so the sockets set ZMQ_ZAP_ENFORCE_DOMAIN (no handler: no handshake); an error
while answering refuses that handshake (logged at ERROR) and the handler goes on; and
`CurveServer.check()`, called from the broker's loop, restarts a handler thread that died
and reports one that is stuck (handshakes wait meanwhile, and none is admitted).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from broker.access import Role, user_id
from protocol.curve import (
    AUTHORIZED_DIR,
    BROKER_KEY,
    check_key_name,
    load_public_key,
    load_secret_pair,
    old_layout_note,
)
from protocol.logs import shown

log = logging.getLogger("lss.broker.auth")

REPEAT_LOG_S = 10.0  # one refusal line per peer and reason per this many seconds
MAX_TRACKED = 1024  # refusal counters kept, oldest dropped first
MONITOR_POLL_MS = 200
ZAP_STALL_S = 5.0  # a ZAP request in hand this long: the handler is stuck (ERROR)
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks (RFC 27)
DOMAIN_ROLES = {"worker": (Role.WORKER,), "client": (Role.ADMIN, Role.CLIENT)}
"""The ZAP domain of each broker socket, and the roles it admits (first match wins)."""
# ZAP refusals (HANDSHAKE_FAILED_AUTH) are logged by the authenticator, with the address.
_FAILED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class RefusalLog:
    """Rate-limited WARNING lines: the first refusal of a (peer, reason) at once, then a
    count. By reason, not key: a peer making up a new key per connection is one peer."""

    def __init__(
        self, every_s: float = REPEAT_LOG_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self.lock = threading.Lock()  # ZAP and monitor threads both report
        self.total = 0
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def refused(self, peer: str, key: str, why: str) -> bool:
        """Count one refusal; log it unless this peer was refused so recently."""
        now = self.clock()
        with self.lock:
            self.total += 1
            logged_at, quiet = self._seen.pop((peer, why), (None, 0))
            if logged_at is not None and now - logged_at < self.every_s:
                self._seen[(peer, why)] = (logged_at, quiet + 1)
                return False
            self._seen[(peer, why)] = (now, 0)
            while len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)
        again = f" (refused {quiet} more time(s) since the last report)" if quiet else ""
        log.warning("refused %s with key %s: %s%s", shown(peer), key, why, again)
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

    def name_of(self, key: bytes) -> str | None:
        """The key file's name (stem) of this z85 public key, or None if not allowed."""
        self._reload_if_changed()
        return self._keys.get(key)

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
                check_key_name(path.stem)
                keys[load_public_key(path)] = path.stem
            except ValueError as exc:  # e.g. a name that is not UTF-8: never admitted
                log.error("ignoring %s: %s", shown(os.fsencode(path)), shown(exc))
        return keys


class RoleKeys:
    """The allow-lists of every role, and which one admits a key on an endpoint."""

    def __init__(self, root: Path) -> None:
        self.lists = {role: AllowList(root / AUTHORIZED_DIR / role) for role in Role}

    def admit(self, domain: str, key: bytes) -> tuple[Role, str] | None:
        """(role, key name) if the z85 `key` may connect to the `domain` endpoint."""
        for role in DOMAIN_ROLES.get(domain, ()):
            name = self.lists[role].name_of(key)
            if name is not None:
                return role, name
        return None

    def elsewhere(self, key: bytes) -> str | None:
        """The role a key has, if any (to say why a key was refused on an endpoint)."""
        return next((str(r) for r, keys in self.lists.items() if keys.name_of(key)), None)

    def summary(self) -> str:
        return "; ".join(f"{r}: {', '.join(k.names()) or 'none'}" for r, k in self.lists.items())


class ZapHandler:
    """A thread answering libzmq's ZAP requests (RFC 27) for CURVE handshakes.

    Admits a key by the endpoint's domain (`DOMAIN_ROLES`), names it in the user id,
    and reports refusals to a `RefusalLog`. Any error while answering refuses the
    handshake (status 500, logged) and the thread goes on. Bind it before the broker's
    sockets; they enforce the domain, so while no handler is bound nobody is admitted.
    """

    def __init__(self, context: zmq.Context[Any], keys: RoleKeys, refusals: RefusalLog) -> None:
        self.keys = keys
        self.refusals = refusals
        self._sock: zmq.Socket[bytes] = context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            self._sock.close(linger=0)
            raise
        self._stop = threading.Event()
        self._answering_since: float | None = None  # monotonic; None between requests
        self._last_traceback_s = -REPEAT_LOG_S
        self._thread = threading.Thread(target=self._run, name="lss-zap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def alive(self) -> bool:
        """Whether the thread still runs (it ends only when stopped, or on a ZeroMQ error)."""
        return self._thread.is_alive()

    def stuck_s(self) -> float:
        """How long the request in hand has waited for its answer (0 if none is)."""
        since = self._answering_since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sock.poll(MONITOR_POLL_MS, zmq.POLLIN):
                    self._serve(self._sock.recv_multipart())
        except Exception:  # the socket failed: CurveServer.check() restarts the thread
            log.exception("the ZAP handler stopped; CURVE handshakes are refused meanwhile")
        finally:
            self._sock.close(linger=0)

    def _serve(self, request: list[bytes]) -> None:
        """Answer one request; an error refuses it (a REP socket must answer each one)."""
        self._answering_since = time.monotonic()
        try:
            reply = self.answer(request)
        except Exception as exc:
            reply = self._failed(request, exc)
        self._sock.send_multipart(reply)
        self._answering_since = None

    def _failed(self, request: list[bytes], exc: Exception) -> list[bytes]:
        """Refuse a handshake the handler could not decide; log it at ERROR (a traceback
        once per REPEAT_LOG_S, so that a peer repeating it cannot flood the log)."""
        peer, key = _describe(request)
        now = time.monotonic()
        traceback = now - self._last_traceback_s >= REPEAT_LOG_S
        if traceback:
            self._last_traceback_s = now
        log.error("refused %s with key %s: the ZAP handler failed (%s: %s)", shown(peer), key,
                  type(exc).__name__, shown(exc), exc_info=traceback)  # fmt: skip
        return _reply(request, b"500", b"Internal error")

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply frames for one request."""
        domain = request[2].decode("utf-8", "replace") if len(request) > 2 else ""
        peer, key = _describe(request)
        admitted = self.keys.admit(domain, key.encode()) if key != "?" else None
        if admitted is None:
            why = self._refusal(domain, key)
            self.refusals.refused(peer, key, why)
            return _reply(request, b"400", why.encode()[:255])
        role, name = admitted
        return _reply(request, b"200", b"OK", user_id(role, key, name).encode())

    def _refusal(self, domain: str, key: str) -> str:
        role = self.keys.elsewhere(key.encode()) if key != "?" else None
        if role is None:
            return "Unknown key"
        return f"a {role} key may not use the {shown(domain)} endpoint"


def _reply(request: list[bytes], status: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
    """ZAP reply frames to `request` (RFC 27): version, request id, status, text, user id,
    metadata."""
    request_id = request[1] if len(request) > 1 else b""
    return [b"1.0", request_id, status, text, user, b""]


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
    """Runs the ZAP handler and turns the broker's sockets into CURVE servers."""

    def __init__(self, context: zmq.Context[Any], curve_dir: str | Path) -> None:
        root = Path(curve_dir)
        secret_file = root / f"{BROKER_KEY}.key_secret"
        if not secret_file.exists():
            raise SystemExit(f"no broker key at {secret_file}: run './run.sh keys {root}' first")
        try:
            self.public, self.secret = load_secret_pair(secret_file)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        self.context = context
        self.refusals = RefusalLog()
        self.keys = RoleKeys(root)
        self.zap = ZapHandler(context, self.keys, self.refusals)
        self._stuck_reported_s = -REPEAT_LOG_S
        self.watch = HandshakeWatch(context, self.refusals)
        log.info("CURVE on: admitted keys by role in %s (%s)", root / AUTHORIZED_DIR,
                 self.keys.summary())  # fmt: skip
        note = old_layout_note(root)
        if note:
            log.error("%s", note)

    def secure(self, sock: zmq.Socket[bytes], domain: str) -> None:
        """Make `sock` a CURVE server admitting the roles of `domain` (call before
        `bind()`); refusals on it get logged."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        sock.setsockopt_string(zmq.ZAP_DOMAIN, domain)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler: refuse, never admit
        self.watch.watch(sock)

    def check(self) -> None:
        """Restart the ZAP handler if its thread died; report at ERROR if it is stuck on
        one request. Either way libzmq admits nobody meanwhile (the domain is enforced)."""
        if not self.zap.alive():
            self._restart_zap()
            return
        stuck_s, now = self.zap.stuck_s(), time.monotonic()
        if stuck_s >= ZAP_STALL_S and now - self._stuck_reported_s >= REPEAT_LOG_S:
            self._stuck_reported_s = now
            log.error(
                "the ZAP handler has been answering one request for %.0f s: CURVE handshakes"
                " wait, and none is admitted until it answers", stuck_s,
            )  # fmt: skip

    def _restart_zap(self) -> None:
        try:
            self.zap = ZapHandler(self.context, self.keys, self.refusals)
        except zmq.ZMQError as exc:  # the dead one's endpoint not released yet: next check
            log.error("the ZAP handler is down and cannot restart yet (%s); CURVE handshakes "
                      "are refused meanwhile", exc)  # fmt: skip
            return
        log.error("the ZAP handler thread had stopped: restarted it (CURVE handshakes were "
                  "refused meanwhile)")  # fmt: skip

    def stop(self) -> None:
        """Stop the threads (after the broker's sockets are closed, before `context.term()`)."""
        self.watch.stop()
        self.zap.stop()


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
