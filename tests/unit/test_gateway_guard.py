"""The gateway's request policy and JSON body checks, without a server."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from clients.http.guard import Policy
from clients.http.jsonbody import MAX_DEPTH, InvalidBody, nesting, parse_json


def environ(**headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/num_jobs"}
    env.update({key.upper(): value for key, value in headers.items()})
    return env


def test_nesting_skips_brackets_inside_strings() -> None:
    assert nesting('{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert nesting('["\\"[[[", []]') == 2
    assert nesting("[" * 1_000_000) == MAX_DEPTH + 1  # stops counting early


def test_parse_json_refuses_deep_and_malformed_bodies_with_a_reason() -> None:
    assert parse_json(b'{"question": "q"}') == {"question": "q"}
    for body in (b"[" * 1_000_000, b"[" * 40 + b"]" * 40, b"{", b"\xff"):
        with pytest.raises(InvalidBody):
            parse_json(body)


def test_the_policy_names_the_gateway_and_the_loopback_names() -> None:
    policy = Policy.for_listen("127.0.0.1", 5000, ["lss.internal", "proxy.example:8443"])
    assert policy.refusal(environ(http_host="127.0.0.1:5000")) is None
    assert policy.refusal(environ(http_host="LOCALHOST:5000")) is None
    assert policy.refusal(environ(http_host="[::1]:5000")) is None
    assert policy.refusal(environ(http_host="lss.internal:5000")) is None
    assert policy.refusal(environ(http_host="proxy.example:8443")) is None
    for host in ("127.0.0.1", "127.0.0.1:5001", "evil.example:5000", "lss.internal:80"):
        refusal = policy.refusal(environ(http_host=host))
        assert refusal is not None and refusal.status == 400, host
    assert policy.allows_origin("http://localhost:5000")
    assert not policy.allows_origin("http://localhost:5000.evil.example")
    assert not policy.allows_origin("null")


def test_the_token_is_taken_from_bearer_or_basic_only() -> None:
    policy = Policy.for_listen("127.0.0.1", 80, token="t0ken")
    host = {"http_host": "127.0.0.1"}
    basic = "Basic " + base64.b64encode(b"me:t0ken").decode()
    assert policy.refusal(environ(**host, http_authorization="Bearer t0ken")) is None
    assert policy.refusal(environ(**host, http_authorization=basic)) is None
    for given in ("", "t0ken", "Bearer t0ke", "Basic t0ken", "Token t0ken"):
        refusal = policy.refusal(environ(**host, http_authorization=given))
        assert refusal is not None and refusal.status == 401, given


def test_the_shutdown_wants_bearer_as_a_browser_sends_basic_from_any_page() -> None:
    policy = Policy.for_listen("10.0.0.1", 5000, token="t0ken")
    shutdown = {"http_host": "10.0.0.1:5000", "PATH_INFO": "/api/graceful_shutdown"}
    basic = "Basic " + base64.b64encode(b"me:t0ken").decode()
    refusal = policy.refusal(environ(**shutdown, http_authorization=basic))
    assert refusal is not None and refusal.status == 401 and "Bearer" in refusal.reason
    assert policy.refusal(environ(**shutdown, http_authorization="Bearer t0ken")) is None


def test_a_refusal_log_line_escapes_what_the_peer_sent(caplog: pytest.LogCaptureFixture) -> None:
    policy = Policy.for_listen("127.0.0.1", 5000)
    forged = "/api/x\n2026-01-01T00:00:00.000Z INFO    lss.gateway[1] forged \x1b[2J"
    request = environ(http_host="evil.example", PATH_INFO=forged)
    refusal = policy.refusal(request)
    assert refusal is not None
    with caplog.at_level("WARNING", logger="lss.gateway"):
        policy.log_refusal(request, refusal)
    (line,) = [record.getMessage() for record in caplog.records]
    assert "\n" not in line and "\x1b" not in line and "forged" in line
