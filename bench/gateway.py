"""The HTTP gateway's cost and its behaviour under slow peers (`python -m bench.gateway`).

Measures, against one fresh service: the median time of one request through the gateway
(submit, and a read of a finished job) next to the same call on the direct `Client`;
then opens `slow` connections that drip one header byte every few seconds and times
normal requests while they are open. `./run.sh bench` runs it; the README keeps the
figures. The slow peers are also what tests/integration/test_gateway.py uses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.data import dataset
from bench.harness import Service
from bench.plan import BASE_ROWS
from bench.service import ROOT

QUESTION = "Percent of adults aged 18 years and older who have obesity"
SUBMIT_BODY = json.dumps({"question": QUESTION}).encode()


def start_gateway(service: Service, *flags: str) -> str:
    """Start `python -m clients.gateway` for `service` on a free port; its base URL."""
    return "http://" + service.start_gateway(*flags).address


def http(base: str, path: str, body: bytes | None = None, timeout_s: float = 10.0) -> Any:
    """One JSON request to the gateway (POST when `body` is given); the decoded answer."""
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(base + path, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def median_ms(call: Callable[[], object], count: int) -> float:
    """The median wall time of `count` sequential calls, after a few unmeasured ones."""
    for _ in range(5):
        call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def per_request(service: Service, base: str, count: int) -> dict[str, float]:
    """p50 (ms) of a submit and of a read of a done job: over HTTP and on the `Client`."""
    with service.client() as client:
        done = client.submit("global_mean", question=QUESTION)
        client.wait(done)
        return {
            "http_submit_p50_ms": median_ms(
                lambda: http(base, "/api/global_mean", SUBMIT_BODY), count
            ),
            "client_submit_p50_ms": median_ms(
                lambda: client.submit("global_mean", question=QUESTION), count
            ),
            "http_get_p50_ms": median_ms(lambda: http(base, f"/api/get_results/{done}"), count),
            "client_get_p50_ms": median_ms(lambda: client.get(done), count),
        }


class SlowPeers:
    """`count` connections that send a request line, then one header byte every `drip_s`.

    A context manager; `closed_by_server` counts the connections the server has closed.
    """

    def __init__(self, base: str, count: int, drip_s: float = 2.0) -> None:
        host, _, port = base.removeprefix("http://").rpartition(":")
        self._address = (host.strip("[]"), int(port))
        self._start = f"GET /api/num_jobs HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode()
        self._count = count
        self._drip_s = drip_s
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, name="slow-peers", daemon=True)
        self.closed_by_server = 0

    def __enter__(self) -> SlowPeers:
        for _ in range(self._count):
            sock = socket.create_connection(self._address, timeout=5)
            sock.sendall(self._start)
            self._socks.append(sock)
        self._thread.start()
        return self

    def _drip(self) -> None:
        while not self._stop.wait(self._drip_s):
            for sock in list(self._socks):
                try:
                    sock.send(b"a")
                except OSError:
                    self.closed_by_server += 1
                    self._socks.remove(sock)
                    sock.close()

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self._socks:
            sock.close()


def under_slow_peers(base: str, count: int, probes: int = 20) -> dict[str, float]:
    """Normal requests timed while `count` slow peers are connected (None: no answer in 5 s)."""
    with SlowPeers(base, count):
        times = []
        for _ in range(probes):
            started = time.perf_counter()
            try:
                http(base, "/api/num_jobs", timeout_s=5)
            except OSError:
                return {"slow_peers": count, "answered": 0, "p50_ms": float("nan")}
            times.append(time.perf_counter() - started)
    return {
        "slow_peers": count,
        "answered": len(times),
        "p50_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
    }


@contextlib.contextmanager
def measured_service(work_dir: Path, data: Path, workers: int = 2) -> Iterator[Service]:
    service = Service(work_dir / "gateway-bench", data, workers)
    with service:
        yield service


def measure(work_dir: Path, data: Path, count: int = 300, slow: int = 200) -> dict[str, Any]:
    """Every figure of this module, on a fresh service with the gateway in front."""
    with measured_service(work_dir, data) as service:
        # The slow peers and the probes share an address: the figure is about waitress,
        # not the per-address share (which would close all but 64 slow peers at once).
        base = start_gateway(service, "--http-connections-per-address", str(slow + 100))
        figures: dict[str, Any] = per_request(service, base, count)
        figures["under_slow_peers"] = under_slow_peers(base, slow)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--slow", type=int, default=200)
    args = parser.parse_args(argv)
    (ROOT / "var").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-", dir=ROOT / "var") as work:
        data = dataset(BASE_ROWS, ROOT / "data")
        figures = measure(Path(work), data, args.requests, args.slow)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
