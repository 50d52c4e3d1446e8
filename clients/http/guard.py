"""Who may talk to the HTTP gateway: the checks every request passes before any route runs.

This module owns the gateway's request policy, as WSGI middleware (`Guard`) around the
application, so that no route can forget it:

- **Host**: the `Host` header must name the gateway (its listen address, `localhost`,
  `127.0.0.1` or `[::1]` with its port, or a configured name). A page on another name
  that resolves to this address (DNS rebinding) gets 400.
- **Other sites**: `Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` or
  `Referer` naming another host, gets 403. Clients that are not browsers send none of
  these headers and are served as before.
- **Token**: when the gateway has a token (`LSS_HTTP_TOKEN`), every request needs
  `Authorization: Bearer <token>` (or HTTP Basic with the token as password, which a
  browser asks its user for, except on the shutdown route); compared in constant time;
  401 otherwise.
- **Bodies**: a POST must be `Content-Type: application/json` (415 otherwise).
- **HEAD** only reads: a HEAD of a route that acts (the shutdown) gets 405.

Every check reads only the request's head: the server (`clients.http.server`) applies the
`Policy` as soon as a head is in, so a refused request's body is never read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from protocol.logs import Throttle, shown

log = logging.getLogger("lss.gateway")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
CROSS_SITE_FETCHES = frozenset({"cross-site", "same-site"})
ACTING_GET_PATHS = frozenset({"/api/graceful_shutdown"})
"""GET routes that change the service (the original API's shutdown): never by HEAD."""

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Refusal:
    """A request the guard turns away: HTTP status and a reason for the JSON body."""

    status: int
    reason: str
    cause: str  # a short name for the log throttle
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """The HTTP status line, headers and JSON body that say so."""
        body = json.dumps({"status": "error", "reason": self.reason}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        return f"{self.status} {_PHRASES[self.status]}", headers + list(self.headers), body


@dataclass(frozen=True)
class Policy:
    """The names the gateway answers to, and its token ("" when none is needed)."""

    hosts: frozenset[str]
    token: str = ""
    _refusals: Throttle = field(default_factory=lambda: Throttle(log), compare=False)

    @classmethod
    def for_listen(cls, host: str, port: int, extra: Iterable[str] = (), token: str = "") -> Policy:
        """The policy of a gateway listening on `host:port`, also answering to `extra` names.

        An extra name without a port is allowed on this port and on none (port 80).
        """
        names = {_bracketed(host), *LOOPBACK_NAMES}
        names.update(name.strip().lower() for name in extra if name.strip())
        hosts = set()
        for name in names:
            hosts.add(name if _has_port(name) else f"{name}:{port}")
            if port == 80 and not _has_port(name):
                hosts.add(name)
        return cls(frozenset(h.lower() for h in hosts), token)

    def refusal(self, environ: dict[str, Any]) -> Refusal | None:
        """Why this request is refused, or None when it may go on."""
        checks = (self._host, self._token, _cross_site, self._foreign_page, _content_type, _head)
        for check in checks:
            refused = check(environ)
            if refused is not None:
                return refused
        return None

    def _host(self, environ: dict[str, Any]) -> Refusal | None:
        host = str(environ.get("HTTP_HOST", "")).lower()
        if host in self.hosts:
            return None
        return Refusal(400, f"this gateway does not answer to Host {shown(host)!r}", "host")

    def _token(self, environ: dict[str, Any]) -> Refusal | None:
        if not self.token:
            return None
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        if hmac.compare_digest(_credential(header).encode(), self.token.encode()):
            return _basic_acting(header, environ)
        challenge = (("WWW-Authenticate", "Bearer"), ("WWW-Authenticate", 'Basic realm="lss"'))
        return Refusal(401, "a valid 'Authorization: Bearer <token>' is required", "token",
                       challenge)  # fmt: skip

    def _foreign_page(self, environ: dict[str, Any]) -> Refusal | None:
        for header in ("HTTP_ORIGIN", "HTTP_REFERER"):
            value = environ.get(header)
            if value is not None and not self.allows_origin(str(value)):
                name = header.removeprefix("HTTP_").title()
                return Refusal(403, f"requests from other sites are refused ({name})", "origin")
        return None

    def allows_origin(self, url: str) -> bool:
        """Whether `url` (an Origin or Referer) is a page of this gateway."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # a malformed port
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        name = _bracketed(parts.hostname)
        return f"{name}:{port}" in self.hosts or (port == 80 and name in self.hosts)

    def log_refusal(self, environ: dict[str, Any], refusal: Refusal) -> None:
        peer = str(environ.get("REMOTE_ADDR"))
        self._refusals.warning(
            (refusal.cause, peer), "refused %s %s from %s: %d %s",
            shown(environ.get("REQUEST_METHOD")), shown(environ.get("PATH_INFO", "")), peer,
            refusal.status, shown(refusal.reason),
        )  # fmt: skip


class Guard:
    """WSGI middleware: requests the `policy` refuses never reach `app`."""

    def __init__(self, app: WsgiApp, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refusal = self.policy.refusal(environ)
        if refusal is None:
            return self.app(environ, start_response)
        self.policy.log_refusal(environ, refusal)
        return _refuse(refusal, start_response)


def _basic_acting(header: str, environ: dict[str, Any]) -> Refusal | None:
    """A route that acts wants Bearer: a browser that has HTTP Basic credentials for the
    gateway sends them by itself, also for an `<img>` on another site's page, and over
    plain HTTP to a non-loopback address it sends no `Sec-Fetch-Site` to give that away."""
    if environ.get("PATH_INFO") in ACTING_GET_PATHS and header.lower().startswith("basic"):
        why = "this route needs 'Authorization: Bearer <token>' (HTTP Basic: a browser's)"
        return Refusal(401, why, "token", (("WWW-Authenticate", "Bearer"),))
    return None


def _cross_site(environ: dict[str, Any]) -> Refusal | None:
    if environ.get("HTTP_SEC_FETCH_SITE", "").lower() in CROSS_SITE_FETCHES:
        return Refusal(403, "requests from other sites are refused (Sec-Fetch-Site)", "origin")
    return None


def _content_type(environ: dict[str, Any]) -> Refusal | None:
    if environ.get("REQUEST_METHOD") != "POST":
        return None
    media_type = str(environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return None
    return Refusal(415, "a POST body must be Content-Type: application/json", "content-type")


def _head(environ: dict[str, Any]) -> Refusal | None:
    if environ.get("REQUEST_METHOD") == "HEAD" and environ.get("PATH_INFO") in ACTING_GET_PATHS:
        return Refusal(405, "HEAD does not act; use GET", "head", (("Allow", "GET"),))
    return None


def _refuse(refusal: Refusal, start_response: StartResponse) -> Iterator[bytes]:
    status, headers, body = refusal.response()
    start_response(status, headers)
    yield body


_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}


def _credential(header: str) -> str:
    """The token in a Bearer header, or the password of a Basic one; "" otherwise."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def _bracketed(host: str) -> str:
    """An IPv6 literal as it appears in a Host header."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host.lower()


def _has_port(name: str) -> bool:
    return name.rpartition(":")[2].isdigit() and not name.endswith("]")
