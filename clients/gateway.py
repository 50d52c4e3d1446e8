"""The HTTP gateway: the original Flask service's REST routes, served by one shared `Client`.

    python -m clients.gateway --listen 127.0.0.1:5000 [--endpoint tcp://127.0.0.1:5555]

This module owns the HTTP API and nothing else: every route turns into one broker request
(a thin producer that computes nothing), and answers in the original service's JSON shapes:

    POST /api/<statistic>          {"question": Q[, "state": S]} -> {"job_id": "job_id_N"}
    GET  /api/get_results/<job_id> {"status": "running" | "done" + "data" | "error" + "reason"}
    GET  /api/jobs                 {"status": "done", "data": [{"job_id_1": "done"}, ...]}
    GET  /api/num_jobs             {"num_jobs": N}
    GET  /api/graceful_shutdown    {"status": "shutting_down"} until drained, then "done"
    GET  /metrics                  the broker's `stats` for Prometheus (with prometheus-client)

The JSON fields of a submit are passed to the job as its parameters, so the workers'
validation answers missing or unexpected fields; malformed JSON and fields of the wrong
type get HTTP 400 here. The bound address goes to `<state-dir>/gateway.address` (useful
with `--listen 127.0.0.1:0`). SIGTERM or SIGINT stops serving and exits 0; so does the
broker's end after a graceful shutdown (a few seconds later, `--linger-s`), as the
gateway has nothing left to serve. A broker that merely goes away is waited for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from clients.client import Client
from protocol import config
from protocol.errors import BrokerUnavailable, RequestRefused
from protocol.lifetime import die_with_parent
from protocol.logs import setup_logging
from protocol.messages import STATISTICS, ErrorCode

log = logging.getLogger("lss.gateway")

DEFAULT_LISTEN = "127.0.0.1:5000"
ADDRESS_FILE = "gateway.address"
SHUTTING_DOWN = {"job_id": -1, "reason": "shutting down"}
TEXT_FIELDS = ("question", "state")
_REFUSAL_HTTP_STATUS: dict[str, int] = {ErrorCode.BAD_REQUEST: 400, ErrorCode.QUEUE_FULL: 503}
_SERVE_POLL_S = 0.2  # how often serve_forever checks for shutdown()
PROBE_TIMEOUT_S = 1.0  # the broker watch's deadline per ping
LINGER_S = 3.0

ViewResult = Response | tuple[Response, int]


class InvalidRequest(ValueError):
    """A request body this gateway refuses with HTTP 400; `str()` is the reason."""


class _OrderedJSON(DefaultJSONProvider):
    """Flask's JSON, without sorting keys: answers keep the contract's order."""

    sort_keys = False


class Gateway:
    """The routes, over one thread-safe `Client`; remembers whether a shutdown was asked."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.shutdown_seen = threading.Event()  # asked by us, refused for it, or seen in a ping
        self.drained = threading.Event()  # nothing left to run: the broker exits (or has)

    def submit(self, statistic: str) -> ViewResult:
        if statistic not in STATISTICS:
            return _error(404, f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}")
        if self.drained.is_set():
            return jsonify(SHUTTING_DOWN)
        params = _params(request.get_data())
        try:
            return jsonify({"job_id": self.client.submit(statistic, **params)})
        except RequestRefused as exc:
            return self._refused(exc)
        except (OverflowError, ValueError) as exc:  # a number msgpack cannot carry
            raise InvalidRequest(f"cannot send these parameters: {exc}") from exc

    def get_results(self, job_id: str) -> ViewResult:
        return jsonify(self.client.get(job_id))

    def jobs(self) -> ViewResult:
        listing = self.client.jobs()
        return jsonify({"status": "done", "data": [{job: st} for job, st in listing.items()]})

    def num_jobs(self) -> ViewResult:
        return jsonify({"num_jobs": self.client.num_jobs()})

    def graceful_shutdown(self) -> ViewResult:
        if self.drained.is_set():
            return jsonify({"status": "done"})
        try:
            pending = self.client.shutdown()
        except BrokerUnavailable:
            if not self.shutdown_seen.is_set():
                raise
            pending = 0  # it drained and exited since the shutdown began
        self.shutdown_seen.set()
        if not pending:
            self.drained.set()
        return jsonify({"status": "shutting_down" if pending else "done"})

    def metrics(self) -> ViewResult:
        try:
            from clients.metrics import render
        except ImportError:  # an optional extra
            return _error(404, "metrics need the prometheus-client package (the 'metrics' extra)")
        body, content_type = render(self.client.stats)
        return Response(body, content_type=content_type)

    def _refused(self, exc: RequestRefused) -> ViewResult:
        if exc.code == ErrorCode.SHUTTING_DOWN:
            self.shutdown_seen.set()
            return jsonify(SHUTTING_DOWN)
        return jsonify({"job_id": -1, "reason": exc.reason}), _refusal_status(exc)


def create_app(gateway: Gateway) -> Flask:
    """The Flask application serving the original REST routes through `gateway`."""
    app = Flask("lss.gateway")
    app.json = _OrderedJSON(app)
    app.config["MAX_CONTENT_LENGTH"] = config.MAX_MESSAGE_BYTES
    app.add_url_rule("/api/<statistic>", view_func=gateway.submit, methods=["POST"])
    app.add_url_rule("/api/get_results/<job_id>", view_func=gateway.get_results)
    app.add_url_rule("/api/jobs", view_func=gateway.jobs)
    app.add_url_rule("/api/num_jobs", view_func=gateway.num_jobs)
    app.add_url_rule("/api/graceful_shutdown", view_func=gateway.graceful_shutdown)
    app.add_url_rule("/metrics", view_func=gateway.metrics)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InvalidRequest, lambda exc: _error(400, str(exc)))
    app.register_error_handler(BrokerUnavailable, lambda exc: _error(503, str(exc)))
    app.register_error_handler(RequestRefused, lambda exc: _error(_refusal_status(exc), exc.reason))
    app.register_error_handler(Exception, _internal_error)
    return app


def _params(raw: bytes) -> dict[str, Any]:
    """A submit's JSON body as job parameters; `InvalidRequest` when it is not a fit object."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type(body).__name__}")
    for name in TEXT_FIELDS:
        if name in body and not isinstance(body[name], str):
            raise InvalidRequest(f"{name!r} must be a string, got {type(body[name]).__name__}")
    return body


def _error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify({"status": "error", "reason": reason}), status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return _error(exc.code or 500, exc.description or exc.name)


def _internal_error(exc: Exception) -> tuple[Response, int]:
    log.exception("internal error serving %s %s", request.method, request.path)
    return _error(500, f"internal error: {type(exc).__name__}")


def _refusal_status(exc: RequestRefused) -> int:
    return _REFUSAL_HTTP_STATUS.get(exc.code, 502)


# --- the process ------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (port 0: any free port) -> (host, port); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m clients.gateway",
        description="Serve the original LSS REST API over HTTP, as a producer of the broker.",
    )
    p.add_argument(
        "--listen",
        default=config.env_str("http_addr", DEFAULT_LISTEN),
        help="HOST:PORT to serve on; port 0 picks a free one (LSS_HTTP_ADDR)",
    )
    p.add_argument("--endpoint", default=None, help="the broker (LSS_CLIENT_ENDPOINT)")
    p.add_argument(
        "--state-dir",
        default=config.env_str("state_dir", config.STATE_DIR),
        help="logs and gateway.address go here (LSS_STATE_DIR)",
    )
    p.add_argument(
        "--timeout", type=float, default=config.CLIENT_TIMEOUT_S, help="broker deadline, s"
    )
    p.add_argument(
        "--linger-s",
        type=float,
        default=LINGER_S,
        help="after the broker has shut down, keep answering for this long, then exit",
    )
    p.add_argument("--log-level", default=config.env_str("log_level", "INFO"))
    return p.parse_args(argv)


def serve(server: BaseWSGIServer, stop: threading.Event) -> None:
    """Serve on a thread until `stop` is set, then finish the loop and close the socket."""
    thread = threading.Thread(
        target=server.serve_forever, args=(_SERVE_POLL_S,), name="lss-http", daemon=True
    )
    thread.start()
    stop.wait()
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


def follow_broker(
    gateway: Gateway, stop: threading.Event, linger_s: float, interval_s: float = 0.5
) -> None:
    """Ping the broker until `stop`; once it has shut down and gone, linger, then set `stop`.

    A broker that vanishes without a shutdown may come back: the gateway waits for it.
    The probe has its own short-deadline `Client`, so a busy route never delays it.
    """
    with Client(gateway.client.endpoint, timeout=PROBE_TIMEOUT_S) as probe:
        while not stop.wait(interval_s):
            try:
                if probe.ping()["shutting_down"]:
                    gateway.shutdown_seen.set()
            except BrokerUnavailable:
                if gateway.shutdown_seen.is_set():
                    break
        else:
            return
    gateway.drained.set()
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


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    args = parse_args(argv)
    if args.listen == "off":
        print("the HTTP gateway is off (LSS_HTTP_ADDR=off)", file=sys.stderr)
        return config.EXIT_OK
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"lss-gateway: {exc}", file=sys.stderr)
        return config.EXIT_USAGE
    setup_logging(args.state_dir, "gateway", args.log_level)
    logging.getLogger("werkzeug").setLevel(max(logging.WARNING, logging.getLogger().level))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal(stop))
    with Client(args.endpoint, timeout=args.timeout) as client:
        gateway = Gateway(client)
        try:
            server = make_server(host, port, create_app(gateway), threaded=True)
        except OSError as exc:
            log.error("cannot listen on %s: %s", args.listen, exc)
            return config.EXIT_FAILURE
        return _run(server, gateway, stop, args)


def _run(
    server: BaseWSGIServer, gateway: Gateway, stop: threading.Event, args: argparse.Namespace
) -> int:
    address = f"{server.host}:{server.port}"
    written = _write_address(args.state_dir, address)
    log.info("HTTP API on http://%s/api/ for the broker at %s", address, gateway.client.endpoint)
    follower = threading.Thread(
        target=follow_broker, args=(gateway, stop, args.linger_s), name="lss-follow", daemon=True
    )
    follower.start()
    try:
        serve(server, stop)
    finally:
        written.unlink(missing_ok=True)
        stop.set()
        follower.join(timeout=5)
    return config.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
