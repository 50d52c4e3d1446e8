"""The original REST routes, over one shared `Client` (the gateway computes nothing).

    POST /api/<statistic>          {"question": Q[, "state": S][, "years": [FIRST, LAST]]
                                    [, "priority": 0..9][, "deadline": SECONDS]}
                                   -> {"job_id": "job_id_N"}
    GET  /api/get_results/<job_id> {"status": "running" | "done" + "data" | "error" + "reason"
                                    | "cancelled" + "reason"}
    POST /api/cancel/<job_id>      {"job_id": ID, "status": "cancelled" | "done" | "error"};
                                   404 (with GET's unknown-job reason) for an unknown id
    GET  /api/jobs                 {"status": "done", "data": [{"job_id_1": "done"}, ...]}
         ?status=S&statistic=S&limit=N&after=job_id_N   only those jobs (each optional)
    GET  /api/num_jobs             {"num_jobs": N}
    GET  /api/questions            {"questions": [{"id": "obesity", "question": Q}, ...]}
    GET  /api/graceful_shutdown    {"status": "shutting_down"} until drained, then "done"
    GET  /metrics                  the broker's `stats` for Prometheus (with prometheus-client)

The JSON fields of a submit are passed to the job as its parameters, so the workers'
validation answers missing or unexpected fields; malformed or too deeply nested JSON
and fields of the wrong type get HTTP 400 here. `priority` and `deadline` are not
parameters but where the job waits (`Client.submit`'s); a bad value of either is 400.
The gateway is one producer of the broker (one connection; with CURVE, its key): every
job sent through it shares one fair share, whoever sent it. Every reply is strict JSON
(`clients.http.strictjson`: no NaN or Infinity, whatever a peer stored). Who may call
these routes at all is decided before them, by `clients.http.guard`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from clients import operations
from clients.client import Client
from clients.http.dashboard import Dashboard, register
from clients.http.jsonbody import InvalidBody, parse_json
from clients.http.strictjson import StrictJSON
from clients.listing import job_number, whole_number
from protocol import config
from protocol.errors import BrokerUnavailable, RequestRefused, UnknownJob
from protocol.logs import shown
from protocol.messages import SHUTDOWN_ALL, STATISTICS, ErrorCode, JobStatus
from protocol.questions import question_list

log = logging.getLogger("lss.gateway")

SHUTTING_DOWN = {"job_id": -1, "reason": "shutting down"}
TEXT_FIELDS = ("question", "state")
SCHEDULING_FIELDS = ("priority", "deadline")  # where a job waits: not its parameters
JOB_FILTERS = ("status", "statistic", "limit", "after")
_REFUSAL_HTTP_STATUS: dict[str, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.TOO_LARGE: 413,  # the caller's doing, not the broker's (502 said otherwise)
    ErrorCode.FORBIDDEN: 403,  # the gateway's key may not (e.g. a client key's shutdown)
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.STORAGE: 503,
    ErrorCode.OVER_LIMIT: 503,
    ErrorCode.NO_WORKER: 503,  # the service is up, but no worker can load its data
}

ViewResult = Response | tuple[Response, int]


class GatewayRoutes:
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
        when = _scheduling(params)
        try:
            job_id = self.client.submit(statistic, **when, **params)
            return jsonify({"job_id": job_id})
        except RequestRefused as exc:
            return self._refused(exc)
        except (OverflowError, ValueError) as exc:  # a number msgpack cannot carry
            raise InvalidBody(f"cannot send these parameters: {exc}") from exc

    def get_results(self, job_id: str) -> ViewResult:
        return jsonify(self.client.get(job_id))

    def cancel(self, job_id: str) -> ViewResult:
        """The job's final status; 404 with GET's reason for an unknown id (no body needed)."""
        try:
            status = self.client.cancel(job_id)
        except UnknownJob as exc:
            return _error(404, str(exc))
        return jsonify({"job_id": job_id, "status": status})

    def jobs(self) -> ViewResult:
        listing = self.client.jobs(**_job_filters(request.args))
        return jsonify({"status": "done", "data": [{job: st} for job, st in listing.items()]})

    def num_jobs(self) -> ViewResult:
        return jsonify({"num_jobs": self.client.num_jobs()})

    def questions(self) -> ViewResult:
        return jsonify({"questions": question_list()})

    def graceful_shutdown(self) -> ViewResult:
        if self.drained.is_set():
            return jsonify({"status": "done"})
        try:
            pending = self.client.shutdown(SHUTDOWN_ALL)  # every broker on the store
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


def create_app(routes: GatewayRoutes) -> Flask:
    """The Flask application: the original REST routes through `routes`, and the dashboard."""
    app = Flask("lss.gateway", static_folder=None)
    app.json = StrictJSON(app)  # every reply: strict JSON, keys in the contract's order
    app.config["MAX_CONTENT_LENGTH"] = config.MAX_MESSAGE_BYTES
    app.add_url_rule("/api/<statistic>", view_func=routes.submit, methods=["POST"])
    app.add_url_rule("/api/get_results/<job_id>", view_func=routes.get_results)
    app.add_url_rule("/api/cancel/<job_id>", view_func=routes.cancel, methods=["POST"])
    app.add_url_rule("/api/jobs", view_func=routes.jobs)
    app.add_url_rule("/api/num_jobs", view_func=routes.num_jobs)
    app.add_url_rule("/api/questions", "api_questions", view_func=routes.questions)
    app.add_url_rule("/api/graceful_shutdown", view_func=routes.graceful_shutdown)
    app.add_url_rule("/metrics", view_func=routes.metrics)
    register(app, Dashboard(routes.client))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InvalidBody, lambda exc: _error(400, str(exc)))
    app.register_error_handler(BrokerUnavailable, lambda exc: _error(503, str(exc)))
    app.register_error_handler(RequestRefused, lambda exc: _error(_refusal_status(exc), exc.reason))
    app.register_error_handler(Exception, _internal_error)
    return app


def _params(raw: bytes) -> dict[str, Any]:
    """A submit's JSON body as job parameters; `InvalidBody` when it is not a fit object."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidBody(f"the body must be a JSON object, got {type(body).__name__}")
    for name in TEXT_FIELDS:
        if name in body and not isinstance(body[name], str):
            raise InvalidBody(f"{name!r} must be a string, got {type(body[name]).__name__}")
    return body


def _scheduling(body: dict[str, Any]) -> dict[str, Any]:
    """Take `priority` and `deadline` (seconds; null: none) out of a submit's body, as
    `Client.submit`'s keywords; `InvalidBody` (400) for a bad value."""
    when = {name: body.pop(name) for name in SCHEDULING_FIELDS if name in body}
    try:
        operations.scheduling(**when)
    except ValueError as exc:
        raise InvalidBody(str(exc)) from exc
    return when


def _job_filters(args: Mapping[str, str]) -> dict[str, Any]:
    """`GET /api/jobs`'s query parameters as `Client.jobs` arguments; `InvalidBody` (400)
    for an unknown parameter or a bad value."""
    unknown = set(args) - set(JOB_FILTERS)
    if unknown:
        names = ", ".join(shown(name) for name in sorted(unknown))
        raise InvalidBody(f"unknown parameter(s) {names}; known: {', '.join(JOB_FILTERS)}")
    filters: dict[str, Any] = {}
    status = args.get("status")
    if status is not None:
        if status not in set(JobStatus):
            raise InvalidBody(f"status must be one of {', '.join(JobStatus)}")
        filters["status"] = status
    if "statistic" in args:
        filters["statistic"] = args["statistic"]
    if "limit" in args:
        filters["limit"] = _positive(args["limit"], "limit")
    if "after" in args:
        filters["after"] = _job_number(args["after"])
    return filters


def _positive(text: str, name: str) -> int:
    number = whole_number(text)
    if number is None or number < 1:
        raise InvalidBody(f"{name} must be a positive whole number")
    return number


def _job_number(text: str) -> int:
    """`after`: a job id (job_id_N) or its number N."""
    seq = job_number(text)
    if seq is None:
        raise InvalidBody("after must be a job id such as job_id_7 (or its number)")
    return seq


def _error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify({"status": "error", "reason": reason}), status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return _error(exc.code or 500, exc.description or exc.name)


def _internal_error(exc: Exception) -> tuple[Response, int]:
    log.exception("internal error serving %s %s", request.method, shown(request.path))
    return _error(500, f"internal error: {type(exc).__name__}")


def _refusal_status(exc: RequestRefused) -> int:
    return _REFUSAL_HTTP_STATUS.get(exc.code, 502)
