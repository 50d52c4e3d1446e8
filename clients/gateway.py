"""The HTTP gateway process: the original REST API (and the dashboard) over one `Client`.

    python -m clients.gateway --listen 127.0.0.1:5000 [--endpoint tcp://127.0.0.1:5555]
                              [--allow-host NAME ...]

This module owns the process: settings, the checks made before serving, the server's
lifetime. The routes are `clients.http.api`, the request policy `clients.http.guard`,
the server `clients.http.server` (waitress). A non-loopback `--listen` needs a token in
`LSS_HTTP_TOKEN` (then every request carries `Authorization: Bearer <token>`); without
one the gateway refuses to start. The bound address goes to `<state-dir>/gateway.address`
(useful with `--listen 127.0.0.1:0`). SIGTERM or SIGINT stops serving and exits 0; so
does the broker's end after a graceful shutdown (a few seconds later, `--linger-s`), as
the gateway has nothing left to serve. A broker that merely goes away is waited for.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from clients.client import Client
from clients.http.api import GatewayRoutes, create_app
from clients.http.guard import Policy
from clients.http.server import DeadlineServer, HttpLimits, make_server, serve_until
from protocol import config
from protocol.errors import BrokerUnavailable
from protocol.lifetime import die_with_parent
from protocol.logs import setup_logging

log = logging.getLogger("lss.gateway")

ADDRESS_FILE = "gateway.address"
PROBE_TIMEOUT_S = 1.0  # the broker watch's deadline per ping


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (port 0: any free port) -> (host, port); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (unresolvable: False)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


GATEWAY_SETTINGS = (
    "listen",
    "endpoint",
    "allow_host",
    "state_dir",
    "timeout",
    "linger_s",
    "max_connections",
    "threads",
    "http_connections_per_address",
    "http_header_timeout_s",
    "http_response_timeout_s",
    "request_timeout_s",
    "log_level",
)  # its token is LSS_HTTP_TOKEN's alone: a flag would show it to every `ps`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients.gateway",
        description="Serve the original LSS REST API over HTTP, as a producer of the broker.",
    )
    config.add_flags(parser, GATEWAY_SETTINGS)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def follow_broker(
    routes: GatewayRoutes, stop: threading.Event, linger_s: float, interval_s: float = 0.5
) -> None:
    """Ping the broker until `stop`; once it has shut down and gone, linger, then set `stop`.

    A broker that vanishes without a shutdown may come back: the gateway waits for it.
    The probe has its own short-deadline `Client`, so a busy route never delays it.
    """
    with Client(routes.client.endpoint, timeout=PROBE_TIMEOUT_S) as probe:
        while not stop.wait(interval_s):
            try:
                if probe.ping()["shutting_down"]:
                    routes.shutdown_seen.set()
            except BrokerUnavailable:
                if routes.shutdown_seen.is_set():
                    break
        else:
            return
    routes.drained.set()
    log.info("the broker has shut down; the HTTP gateway follows in %g s", linger_s)
    stop.wait(linger_s)
    stop.set()


def _on_signal(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: the HTTP gateway stops", signal.Signals(signum).name)
        stop.set()

    return handler


def _write_address(state_dir: str, address: str) -> Path:
    path = Path(state_dir) / ADDRESS_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(address + "\n")
    os.replace(temporary, path)  # readers never see half an address
    return path


def _settings(args: argparse.Namespace) -> tuple[str, int, str]:
    """(host, port, token) from the arguments; ValueError with the reason not to start."""
    host, port = parse_listen(args.listen)
    for flag, seconds in (("--request-timeout-s", args.request_timeout_s),
                          ("--http-header-timeout-s", args.http_header_timeout_s),
                          ("--http-response-timeout-s", args.http_response_timeout_s)):  # fmt: skip
        if not seconds > 0:  # NaN too: a deadline that never comes is none
            raise ValueError(f"{flag} must be a positive number of seconds, got {seconds}")
    token = config.env_str("http_token", "")
    if not token and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {args.listen} (not loopback) without a token: "
            "set LSS_HTTP_TOKEN, and send it as 'Authorization: Bearer <token>'"
        )
    return host, port, token


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    args = parse_args(argv)
    if args.listen == "off":
        print("the HTTP gateway is off (LSS_HTTP_ADDR=off)", file=sys.stderr)
        return config.EXIT_OK
    try:
        host, port, token = _settings(args)
    except ValueError as exc:
        print(f"lss-gateway: {exc}", file=sys.stderr)
        return config.EXIT_USAGE
    setup_logging(args.state_dir, "gateway", args.log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal(stop))
    limits = HttpLimits(
        connections=args.max_connections,
        threads=args.threads,
        request_timeout_s=args.request_timeout_s,
        per_address=args.http_connections_per_address,
        header_timeout_s=args.http_header_timeout_s,
        response_timeout_s=args.http_response_timeout_s,
    )
    with Client(args.endpoint, timeout=args.timeout) as client:
        routes = GatewayRoutes(client)
        try:
            server = make_server(create_app(routes), host, port, limits)
        except OSError as exc:
            log.error("cannot listen on %s: %s; choose another with LSS_HTTP_ADDR or --listen"
                      " (off: no gateway)", args.listen, exc.strerror or exc)  # fmt: skip
            return config.EXIT_FAILURE
        policy = Policy.for_listen(host, server.port, args.allow_host, token)
        server.guard(policy)  # the port is known now
        return _run(server, routes, stop, args, token)


def _run(
    server: DeadlineServer,
    routes: GatewayRoutes,
    stop: threading.Event,
    args: argparse.Namespace,
    token: str,
) -> int:
    written = _write_address(args.state_dir, server.address)
    log.info(
        "HTTP API on http://%s/ for the broker at %s (token %s)",
        server.address,
        routes.client.endpoint,
        "required" if token else "not required: loopback only",
    )
    follower = threading.Thread(
        target=follow_broker, args=(routes, stop, args.linger_s), name="lss-follow", daemon=True
    )
    follower.start()
    try:
        serve_until(server, stop)
    finally:
        written.unlink(missing_ok=True)
        stop.set()
        follower.join(timeout=5)
    return config.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
