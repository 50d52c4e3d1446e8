"""A tiny JSON-over-HTTP client for the gateway started by the `gateway_for` fixture
(tests/integration/conftest.py), used by the tests of the gateway and of the dashboard."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.service import wait_until

HTTP_TIMEOUT_S = 15.0


class Http:
    """A tiny JSON-over-HTTP client on urllib: every call returns (status, decoded body)."""

    def __init__(self, base: str, proc: subprocess.Popen[bytes], address_file: Path) -> None:
        self.base = base
        self.proc = proc
        self.address_file = address_file

    def call(
        self, method: str, path: str, body: bytes | None = None, /, **headers: str
    ) -> tuple[int, Any]:
        """One request; `headers` add to (or, with the same name, replace) the JSON defaults."""
        headers = {"Content-Type": "application/json", **headers}
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.status, _decode(resp.read(), resp.headers.get_content_type())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, _decode(err.read(), err.headers.get_content_type())

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, payload: Any) -> tuple[int, Any]:
        return self.call("POST", path, json.dumps(payload).encode())

    def submit(self, statistic: str, **params: str) -> str:
        status, body = self.post(f"/api/{statistic}", params)
        assert status == 200, body
        job: str = body["job_id"]
        return job

    def poll(self, job_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """The original client: GET get_results until the job is no longer running."""

        def finished() -> dict[str, Any] | None:
            status, body = self.get(f"/api/get_results/{job_id}")
            assert status == 200, body
            return None if body == {"status": "running"} else body

        return wait_until(finished, timeout_s, f"{job_id} to finish")

    @property
    def host(self) -> str:
        return self.base.removeprefix("http://")


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None  # HEAD
    return json.loads(raw) if content_type == "application/json" else raw.decode()
