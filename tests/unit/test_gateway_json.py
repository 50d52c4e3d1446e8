"""The gateway's replies are strict JSON, whatever a peer stored: checked without a server."""

from __future__ import annotations

import json
import math
from typing import Any, cast

from flask import Flask

from clients.client import Client
from clients.http.api import GatewayRoutes, create_app
from clients.http.strictjson import MAX_DEPTH, TOO_DEEP, StrictJSON, plain
from protocol.errors import RequestRefused
from protocol.messages import ErrorCode

INF, NAN = math.inf, math.nan


def strict_loads(text: str) -> Any:
    """`text` parsed as JSON is defined: `NaN`, `Infinity` and `-Infinity` refused."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def nested(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


def test_plain_turns_non_finite_numbers_into_null_and_keeps_the_rest() -> None:
    value = {"a": [1.5, INF, -INF, NAN], "b": {"c": (NAN, "x", 3, True, None)}}
    assert plain(value) == {"a": [1.5, None, None, None], "b": {"c": [None, "x", 3, True, None]}}
    assert list(plain({"z": 1, "a": 2})) == ["z", "a"]  # the order kept


def test_plain_describes_bytes_and_odd_keys_and_cuts_deep_nesting() -> None:
    assert plain({b"k": b"\x00\x01", INF: 1, 2: b""}) == {
        "<1 bytes>": "<2 bytes>", "inf": 1, 2: "<0 bytes>",
    }  # fmt: skip
    cut = plain(nested(5000))
    for _ in range(MAX_DEPTH):
        cut = cut[0]
    assert cut == TOO_DEEP


class StoredHostileJobs:
    """A `Client` whose broker answers what peers stored: non-finite numbers, bytes,
    parameters nested deeper than the JSON encoder recurses."""

    def __init__(self) -> None:
        self.hostile = {"question": "q", "x": INF, "y": NAN, "raw": b"\xff", "deep": nested(2000)}

    def get(self, job_id: str) -> dict[str, Any]:
        return {"status": "done", "data": {"Ohio": NAN, "Utah": INF, "Iowa": 30.5}}

    def stats(self) -> dict[str, Any]:
        return {"workers": [{"id": "w1", "credit": INF}], "rates_per_s": {"done": NAN}}

    def recent(self, limit: int) -> dict[str, list[dict[str, Any]]]:
        job = {"job_id": "job_id_1", "statistic": "state_mean", "params": self.hostile}
        return {"jobs": [job], "failures": [{**job, "reason": "bad", "finished_s": INF}]}


def test_every_reply_is_strict_json_even_for_hostile_stored_jobs() -> None:
    app = create_app(GatewayRoutes(cast(Client, StoredHostileJobs())))
    http = app.test_client()
    reply = http.get("/api/get_results/job_id_1")
    assert reply.status_code == 200
    assert strict_loads(reply.get_data(as_text=True))["data"] == {
        "Ohio": None, "Utah": None, "Iowa": 30.5,
    }  # fmt: skip
    reply = http.get("/api/dashboard/live")
    assert reply.status_code == 200
    live = strict_loads(reply.get_data(as_text=True))
    params = live["failures"][0]["params"]
    assert (params["x"], params["y"], params["raw"]) == (None, None, "<1 bytes>")
    assert live["failures"][0]["finished_s"] is None
    assert live["workers"][0]["credit"] is None
    assert live["rates_per_s"] == {"done": None}


def test_a_reply_with_a_key_json_cannot_write_is_made_plain_too() -> None:
    encoder = StrictJSON(Flask("test"))
    assert encoder.dumps({b"k": [NAN, 1]}) == '{"<1 bytes>": [null, 1]}'
    assert encoder.dumps({"a": 1.5}) == '{"a": 1.5}'  # the fast path, unchanged


class NoWorker:
    """A `Client` whose broker knows that no worker can load the data."""

    def submit(self, statistic: str, **params: Any) -> str:
        raise RequestRefused(ErrorCode.NO_WORKER, "no worker can load the data: missing column")


def test_no_worker_is_a_503_that_says_why() -> None:
    app = create_app(GatewayRoutes(cast(Client, NoWorker())))
    reply = app.test_client().post("/api/best5", json={"question": "obesity"})
    assert reply.status_code == 503
    assert "no worker can load the data: missing column" in reply.get_data(as_text=True)
