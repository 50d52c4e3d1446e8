"""Fixtures of the integration tests that start the HTTP gateway."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.harness import Service
from bench.service import ROOT, stop_process, wait_until
from tests.integration.gateway_http import Http


@pytest.fixture
def gateway_for(tmp_path: Path) -> Iterator[Callable[..., Http]]:
    """Start `python -m clients.gateway` on a free loopback port; stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(service: Service, *flags: str, env: dict[str, str] | None = None) -> Http:
        state = tmp_path / f"gateway{len(started)}"
        args = ["-m", "clients.gateway", "--listen", "127.0.0.1:0", "--timeout", "2"]
        args += ["--endpoint", service.client_endpoint, "--state-dir", str(state), *flags]
        state.mkdir()
        with open(state / "gateway.stderr", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env={**service.env, **(env or {})},
                stdout=log,
                stderr=log,
            )
        started.append(proc)
        address_file = state / "gateway.address"

        def address() -> str | None:
            assert proc.poll() is None, (state / "gateway.stderr").read_text()
            return address_file.read_text().strip() if address_file.exists() else None

        return Http(f"http://{wait_until(address, 20, 'the gateway address')}", proc, address_file)

    yield start
    for proc in started:
        stop_process(proc)
