"""The HTTP gateway under a slowloris from many addresses (`python -m bench.slowloris`).

Issue 17, hole 6: connections that drip their headers, from more addresses than the
per-address share can stop, fill the gateway's connections; normal requests then wait.
This module starts one fresh service with the gateway at its default limits, opens
`--addresses` x `--per-address` connections from 127.0.0.2, 127.0.0.3, ... (loopback
addresses that Linux answers without setup) that send a request line, then one header
byte every `--drip-s`, and open again whenever the gateway closes them (as an attacker
would); meanwhile it times normal requests from 127.0.0.1, started at a steady pace so
that a slow answer does not delay the next one. Prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data import dataset
from bench.gateway import http, measured_service, start_gateway
from bench.plan import BASE_ROWS
from bench.service import ROOT

FIRST_ADDRESS = 2  # 127.0.0.2: the probes come from 127.0.0.1
PROBE_TIMEOUT_S = 30.0
SPARE_DESCRIPTORS = 1000  # above the slow sockets: the service, the probes, the gateway's


@dataclass
class _Peer:
    source: str
    sock: socket.socket
    connected: bool = False


class Slowloris:
    """`addresses` x `per_address` dripping connections, kept open: one reopens as soon
    as the server closes it. A context manager; `closed_by_server` counts the closes."""

    def __init__(self, target: tuple[str, int], addresses: int, per_address: int,
                 drip_s: float) -> None:  # fmt: skip
        self._target = target
        self._sources = [f"127.0.0.{FIRST_ADDRESS + n}" for n in range(addresses)]
        self._per_address = per_address
        self._drip_s = drip_s
        host, port = target
        self._start = f"GET /api/num_jobs HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode()
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)
        self.closed_by_server = 0

    def __enter__(self) -> Slowloris:
        for source in self._sources:
            for _ in range(self._per_address):
                self._open(source)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]  # sockets only
        self._selector.close()

    @property
    def connected(self) -> int:
        return sum(1 for key in self._selector.get_map().values() if key.data.connected)

    def _open(self, source: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        sock.connect_ex(self._target)  # in progress: writable once connected
        self._selector.register(sock, selectors.EVENT_WRITE, _Peer(source, sock))

    def _reopen(self, peer: _Peer) -> None:
        self._selector.unregister(peer.sock)
        peer.sock.close()
        self.closed_by_server += peer.connected
        if not self._stop.is_set():
            self._open(peer.source)

    def _run(self) -> None:
        next_drip = time.monotonic() + self._drip_s
        while not self._stop.is_set():
            for key, _mask in self._selector.select(timeout=0.05):
                self._event(key.data)
            if time.monotonic() >= next_drip:
                next_drip += self._drip_s
                self._drip()

    def _event(self, peer: _Peer) -> None:
        try:
            if not peer.connected:
                error = peer.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, "connect failed")
                peer.sock.send(self._start)  # far below the socket buffer
                peer.connected = True
                self._selector.modify(peer.sock, selectors.EVENT_READ, peer)
            elif not peer.sock.recv(4096):  # an answer (an error) is read and dropped
                raise ConnectionResetError("closed by the server")
        except BlockingIOError:
            pass
        except OSError:
            self._reopen(peer)

    def _drip(self) -> None:
        for key in list(self._selector.get_map().values()):
            peer: _Peer = key.data
            if not peer.connected:
                continue
            try:
                peer.sock.send(b"a")
            except BlockingIOError:
                pass
            except OSError:
                self._reopen(peer)


def raise_open_files(wanted: int) -> None:
    """Raise this process's soft limit of open files to `wanted` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit(f"needs {wanted} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))


def probe_latencies(base: str, duration_s: float, interval_s: float) -> list[float | None]:
    """Requests to `base` started every `interval_s` for `duration_s`, each on a thread
    of its own; their times in seconds (None: no answer within PROBE_TIMEOUT_S)."""
    times: list[float | None] = []
    lock = threading.Lock()

    def probe() -> None:
        started = time.monotonic()
        try:
            http(base, "/api/num_jobs", timeout_s=PROBE_TIMEOUT_S)
            took: float | None = time.monotonic() - started
        except OSError:
            took = None
        with lock:
            times.append(took)

    threads = []
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        threads.append(threading.Thread(target=probe, daemon=True))
        threads[-1].start()
        time.sleep(interval_s)  # the pace of the probes, not a synchronisation
    for thread in threads:
        thread.join(PROBE_TIMEOUT_S + 5)
    return times


def summary(times: list[float | None]) -> dict[str, Any]:
    answered = sorted(t for t in times if t is not None)
    if not answered:
        return {"probes": len(times), "answered": 0}
    quantiles = statistics.quantiles(answered, n=100, method="inclusive")
    return {
        "probes": len(times),
        "answered": len(answered),
        "p50_ms": round(statistics.median(answered) * 1000, 1),
        "p99_ms": round(quantiles[98] * 1000, 1),
        "max_ms": round(answered[-1] * 1000, 1),
    }


@contextmanager
def gateway_under_attack(work_dir: Path, data: Path, addresses: int, per_address: int,
                         drip_s: float) -> Iterator[tuple[str, Slowloris]]:  # fmt: skip
    """A fresh service and gateway (default limits), with the slowloris running."""
    with measured_service(work_dir, data) as service:
        base = start_gateway(service)
        host, _, port = base.removeprefix("http://").rpartition(":")
        with Slowloris((host, int(port)), addresses, per_address, drip_s) as attack:
            yield base, attack


def measure(work_dir: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    with gateway_under_attack(work_dir, data, args.addresses, args.per_address,
                              args.drip_s) as (base, attack):  # fmt: skip
        time.sleep(args.warmup_s)  # let the attack fill the gateway's connections
        held = attack.connected
        times = probe_latencies(base, args.duration_s, args.interval_s)
        figures: dict[str, Any] = {
            "slow_connections": args.addresses * args.per_address,
            "addresses": args.addresses,
            "drip_s": args.drip_s,
            "connected_at_start": held,
            "closed_by_server": attack.closed_by_server,
        }
    figures["requests"] = summary(times)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slowloris", description=__doc__)
    parser.add_argument("--addresses", type=int, default=40)
    parser.add_argument("--per-address", type=int, default=50)
    parser.add_argument("--drip-s", type=float, default=1.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--interval-s", type=float, default=0.25)
    args = parser.parse_args(argv)
    raise_open_files(args.addresses * args.per_address + SPARE_DESCRIPTORS)
    (ROOT / "var").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-slowloris-", dir=ROOT / "var") as work:
        data = dataset(BASE_ROWS, ROOT / "data")
        figures = measure(Path(work), data, args)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
