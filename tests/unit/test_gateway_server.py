"""The gateway's HTTP server in-process (a tiny WSGI app, no broker): header, reply and
idle deadlines (on the monotonic clock), the request policy at the head, pipelined
requests, and room for a new connection when all are taken."""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from waitress import channel as waitress_channel
from waitress import server as waitress_server
from waitress import wasyncore

from bench.service import wait_until
from clients.http.guard import Policy, StartResponse
from clients.http.server import DeadlineServer, HttpLimits, make_server

TOKEN = "t0ken"
KEPT_ALIVE = b"GET /ok HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer t0ken\r\n\r\n"
REQUEST = (
    b"GET /ok HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer t0ken\r\nConnection: close\r\n\r\n"
)


class App:
    """A WSGI app that counts its calls and answers 200, once `release` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[bytes] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.calls += 1
        self.release.wait(10)
        self.bodies.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


@contextmanager
def served(limits: HttpLimits, app: App) -> Iterator[DeadlineServer]:
    """A server with `app` and a token policy, its event loop on a thread until the end."""
    server = make_server(app, "127.0.0.1", 0, limits)
    server.guard(Policy.for_listen("127.0.0.1", server.port, token=TOKEN))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            wasyncore.loop(timeout=0.05, map=server.channels, use_poll=True, count=1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        app.release.set()
        stop.set()
        thread.join(5)
        server.task_dispatcher.shutdown(timeout=5)
        for channel in list(server.channels.values()):
            channel.close()


def connect(server: DeadlineServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), 5, (source, 0))


def host(server: DeadlineServer) -> bytes:
    return server.address.encode()


def read_all(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """What the server sends until it closes the connection."""
    sock.settimeout(timeout_s)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_reply(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """One whole reply of `App` (its body: "ok") on a connection kept alive; its head and
    body may come in separate reads."""
    sock.settimeout(timeout_s)
    reply = b""
    while not reply.endswith(b"\r\n\r\nok") and (chunk := sock.recv(65536)):
        reply += chunk
    return reply


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server has closed `sock` within `timeout_s` (reading what it sent)."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def reset_by_server(sock: socket.socket) -> bool:
    """Whether the server has reset `sock` (its error is pending, whatever it still holds)."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET


def test_a_dripped_head_is_closed_at_its_deadline_though_each_byte_comes_soon() -> None:
    with served(HttpLimits(header_timeout_s=1.0, request_timeout_s=30.0), App()) as server:
        kept = connect(server)  # kept alive: idle between requests past the head deadline
        kept.sendall(KEPT_ALIVE % host(server))
        assert read_reply(kept).startswith(b"HTTP/1.1 200 OK\r\n")
        sock = connect(server)
        started = time.monotonic()
        sock.sendall(b"GET /ok HTTP/1.1\r\nX-Slow: ")
        while not closed_by_server(sock, 0.1):  # a byte every 100 ms
            assert time.monotonic() - started < 5, "still open at 5 s"
            try:
                sock.send(b"a")
            except OSError:
                break
        took = time.monotonic() - started
        sock.close()
        assert 1.0 <= took < 3.0, took  # the deadline, and the 1 s sweep that enforces it
        with kept:
            kept.sendall(REQUEST % host(server))
            assert read_all(kept).startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_wrong_token_is_refused_at_the_head_before_the_body_is_sent() -> None:
    app = App()
    with served(HttpLimits(), app) as server:
        with connect(server) as sock:
            sock.sendall(
                b"POST /ok HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer wrong\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n"
                b"Expect: 100-continue\r\n\r\n" % host(server)
            )
            answer = read_all(sock)  # no body sent: the server must answer and close
        assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), answer
        assert b"100 Continue" not in answer and b"www-authenticate: bearer" in answer.lower()
        assert answer.endswith(
            b'"reason": "a valid \'Authorization: Bearer <token>\' is required"}'
        )
        body = b"[%s]" % b",".join([b"1"] * 50_000)  # past waitress's in-memory strings
        with connect(server) as sock:  # the right token: served, with its whole body
            sock.sendall(
                b"POST /ok HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer t0ken\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n"
                b"\r\n" % (host(server), len(body))
            )
            sock.sendall(body)
            assert read_all(sock).startswith(b"HTTP/1.1 200 OK\r\n")
    assert app.bodies == [body]


def started_requests(server: Any, count: int) -> bool | None:
    """Whether `count` of `server`'s connections have read the first byte of a request."""
    channels = list(server.channels.values())
    started = sum(getattr(channel, "request_started_s", None) is not None for channel in channels)
    return started >= count or None


def test_connections_that_drip_from_many_addresses_cannot_lock_out_a_request() -> None:
    limits = HttpLimits(connections=20, per_address=5, header_timeout_s=30.0)
    with served(limits, App()) as server, contextlib.ExitStack() as held:
        drippers = [held.enter_context(connect(server, f"127.0.0.{2 + n % 4}")) for n in range(20)]
        for number, sock in enumerate(drippers, 1):
            sock.sendall(b"GET /ok HTTP/1.1\r\nX-Slow: a")
            # each one's first byte read before the next is sent: the server's order of
            # waiting is then theirs (bytes read in one pass of its loop may go in any order)
            wait_until(functools.partial(started_requests, server, number), 5, "a byte read")
        wait_until(lambda: len(server.channels) >= 22 or None, 5, "all 20 connections")
        for _ in range(3):
            started = time.monotonic()
            with connect(server) as sock:
                sock.sendall(REQUEST % host(server))
                assert read_all(sock, 2.0).startswith(b"HTTP/1.1 200 OK\r\n")
            assert time.monotonic() - started < 1.0
        # the room was made by closing the connection that had waited longest (one: the
        # requests came one after the other)
        assert closed_by_server(drippers[0], 0.5)
        assert not any(closed_by_server(sock, 0.01) for sock in drippers[1:])


def test_requests_being_served_are_never_closed_to_make_room() -> None:
    app = App()
    app.release.clear()
    with served(HttpLimits(connections=2), app) as server:
        busy = [connect(server) for _ in range(2)]
        for sock in busy:
            sock.sendall(REQUEST % host(server))
        wait_until(lambda: app.calls == 2 or None, 5, "two requests in the app")
        with connect(server) as late:
            assert closed_by_server(late, 2.0)  # closed at once: no room
        app.release.set()
        for sock in busy:
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            sock.close()


class BigApp(App):
    """`App`, answering with `size` bytes (a page a slow reader asks for again and again)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.calls += 1
        start_response("200 OK", [("Content-Length", str(self.size))])
        return [b"x" * self.size]


def test_a_peer_reading_its_replies_a_byte_at_a_time_is_closed_at_the_deadline() -> None:
    limits = HttpLimits(response_timeout_s=1.0, idle_timeout_s=30.0, header_timeout_s=30.0)
    with served(limits, BigApp(1 << 20)) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        sock.connect(("127.0.0.1", server.port))
        sock.sendall((KEPT_ALIVE % host(server)) * 8)  # pipelined: 8 MiB of replies
        sock.settimeout(5)
        assert sock.recv(1) == b"H"  # the first reply has begun
        started = time.monotonic()
        with sock:
            while len(server.channels) > 2:  # its connection, the listener and waitress's pipe
                assert time.monotonic() - started < 8, "still open at 8 s"
                assert sock.recv(1)
                time.sleep(0.05)  # the peer's pace (a byte per 50 ms), not a wait for the server
            took = time.monotonic() - started
            assert reset_by_server(sock)  # what the kernel held for it is dropped
        assert 1.0 <= took < 4.0, took  # the deadline, and the 1 s sweep that enforces it
        with connect(server) as other:  # a peer that reads is served as before
            other.sendall(REQUEST % host(server))
            assert len(read_all(other)) > 1 << 20


def test_pipelined_requests_wait_unparsed_past_a_connections_share_and_are_all_served() -> None:
    app = App()
    app.release.clear()
    with served(HttpLimits(pipelined=3), app) as server:
        with connect(server) as sock:
            sock.sendall((KEPT_ALIVE % host(server)) * 9 + REQUEST % host(server))  # one packet
            wait_until(lambda: app.calls == 1 or None, 5, "the first request in the app")
            (channel,) = [c for c in server.channels.values() if hasattr(c, "requests")]
            assert len(channel.requests) == 3  # the other 7 wait as bytes
            app.release.set()
            replies = read_all(sock)
        assert replies.count(b"HTTP/1.1 200 OK\r\n") == 10 and app.calls == 10


def test_deadlines_run_on_the_monotonic_clock_though_the_wall_clock_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall_clock = time.time()  # stopped (as if set back a little at each read)
    monkeypatch.setattr(waitress_server, "time", SimpleNamespace(time=lambda: wall_clock))
    monkeypatch.setattr(waitress_channel, "time", SimpleNamespace(time=lambda: wall_clock))
    with served(HttpLimits(idle_timeout_s=1.0, header_timeout_s=1.0), App()) as server:
        kept = connect(server)
        kept.sendall(KEPT_ALIVE % host(server))
        assert read_reply(kept).startswith(b"HTTP/1.1 200 OK\r\n")
        started = time.monotonic()
        silent = connect(server)  # never sends its head
        with kept, silent:
            assert closed_by_server(kept, 4.0), "idle past its deadline, yet open"
            assert closed_by_server(silent, 4.0), "no head past its deadline, yet open"
        assert time.monotonic() - started < 4.0
