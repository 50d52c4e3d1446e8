"""Who a request comes from, and what that peer may do (roles: docs/deployment.md).

With CurveZMQ on, the broker's ZAP handler (broker.security) admits a peer by its public
key and names it in the ZAP user id as `role:key:name`; ZeroMQ attaches that to every
message from the peer as its "User-Id", which a peer cannot choose. Without CURVE
(loopback development) there is no user id and every peer is `OPEN`: it may do
everything, as before roles existed.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

MAX_CACHED_CALLERS = 10_000
Z85_KEY_CHARS = 40  # a CURVE public key as z85 text


class Role(enum.StrEnum):
    """A key's role: the `authorized/<role>/` directory its public key is in."""

    WORKER = "worker"
    CLIENT = "client"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """The peer behind a request: its role, public key (z85) and key file name."""

    role: Role | None  # None: CURVE is off, nothing is checked
    key: str = ""
    name: str = ""

    @property
    def sees_all(self) -> bool:
        """Whether this peer may read every job (admins, and everyone without CURVE)."""
        return self.role is None or self.role is Role.ADMIN

    @property
    def may_ask(self) -> bool:
        """Whether this peer may use the client endpoint (any key but a worker's)."""
        return self.role is not Role.WORKER

    @property
    def may_serve(self) -> bool:
        """Whether this peer may use the worker endpoint (worker keys, and all without
        CURVE): checked on every message, not only by the ZAP handler."""
        return self.role is None or self.role is Role.WORKER

    @property
    def may_change_service(self) -> bool:
        """Whether this peer may shut the service down (admins, and all without CURVE)."""
        return self.role is None or self.role is Role.ADMIN

    @property
    def owner(self) -> str:
        """What a job this peer submits records as its owner ("" without CURVE)."""
        return self.key


def may_see(caller: Caller, owner: str | None) -> bool:
    """Whether `caller` may know of a job submitted by `owner`: the one rule of who sees
    a job (a client key: only its own jobs; admins, and all without CURVE: every job)."""
    return caller.sees_all or owner == caller.key


def owner_filter(caller: Caller) -> str | None:
    """The owner whose jobs a listing for `caller` shows (None: every owner's), by
    `may_see`."""
    return None if caller.sees_all else caller.key


OPEN = Caller(None)
NOBODY = Caller(Role.CLIENT, "-", "(no key)")
"""A message without a user id although CURVE is on (never expected): the least rights."""


def user_id(role: str, key: str, name: str) -> str:
    """The ZAP user id that names an admitted peer (read back by `Callers.of`); `key` is
    the z85 public key (40 characters)."""
    return f"{role}:{key}:{name}"


class Callers:
    """User ids -> `Caller`, parsed once each (user ids come from our own ZAP handler,
    never from a peer, so caching by them is safe; routing ids would not be)."""

    def __init__(self, secured: bool = True) -> None:
        self._known: dict[str, Caller] = {}
        self._nobody = NOBODY if secured else OPEN

    def of(self, user: str | None) -> Caller:
        """The caller a message's User-Id names; without one, `OPEN` if CURVE is off and
        `NOBODY` if it is on (fail closed)."""
        if not user:
            return self._nobody
        caller = self._known.get(user)
        if caller is None:
            if len(self._known) >= MAX_CACHED_CALLERS:
                self._known.clear()
            caller = self._known[user] = _parse(user)
        return caller


def _parse(user: str) -> Caller:
    role, _, rest = user.partition(":")
    key, name = rest[:Z85_KEY_CHARS], rest[Z85_KEY_CHARS + 1 :]  # z85 text may hold ":"
    try:
        return Caller(Role(role), key, name)
    except ValueError:  # not ours (another ZAP handler): the least a key may do
        return Caller(Role.CLIENT, user, user)


class Owners:
    """Which key submitted each unfinished job (with CURVE on), and how many each has
    running: what a client key's reads and counts are checked against in memory."""

    def __init__(self) -> None:
        self._of: dict[int, str] = {}
        self._running: Counter[str] = Counter()

    def own(self, seq: int, owner: str) -> None:
        if owner:  # without CURVE jobs have no owner, and this costs nothing
            self._of[seq] = owner
            self._running[owner] += 1

    def disown(self, seq: int) -> None:
        owner = self._of.pop(seq, None)
        if owner is not None:
            self._running[owner] -= 1
            if not self._running[owner]:
                del self._running[owner]

    def of(self, seq: int) -> str | None:
        return self._of.get(seq)

    def running(self, owner: str) -> int:
        return self._running.get(owner, 0)
