"""The ceiling: a minimal ZeroMQ load-balancing broker that only echoes.

Same shape as ours, with no store, no protocol decoding and no computing: producers
(DEALER) -> broker (ROUTER/ROUTER, least-recently-used credit queue) -> DEALER workers
that hold up to `credit` jobs each and send every request straight back. What it
achieves is what any Python broker on this machine could hope for.

    python -m bench.echo broker --endpoints-file F    # binds loopback ports, writes F
    python -m bench.echo worker --connect E [--credit 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.service import Processes, Target, read_json, wait_until
from protocol.config import WORKER_CREDIT
from protocol.wire import READS_PER_TURN

READY = b"READY"
CREDIT = WORKER_CREDIT  # as our workers' default
Job = tuple[str, dict[str, Any]]


# --- broker process -----------------------------------------------------------------


class EchoBroker:
    """ROUTER for producers, ROUTER for workers, a deque with one entry per free credit."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.frontend = _router(context)
        self.backend = _router(context)
        self.credits: deque[bytes] = deque()
        self.queued: deque[list[bytes]] = deque()
        self.running = True

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        while self.running:
            ready = dict(poller.poll(200))
            if self.backend in ready:
                self._from_workers()
            if self.frontend in ready:
                self._from_producers()

    def _from_producers(self) -> None:
        for frames in _drain(self.frontend):
            self.queued.append(frames)  # [producer, b"", tag, body]
        self._dispatch()

    def _from_workers(self) -> None:
        for frames in _drain(self.backend):
            worker, rest = frames[0], frames[1:]
            if rest[0] == READY:
                self.credits.extend([worker] * int(rest[1]))
            else:
                self.frontend.send_multipart(rest)  # [producer, b"", tag, body]
                self.credits.append(worker)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.queued and self.credits:
            self.backend.send_multipart([self.credits.popleft(), *self.queued.popleft()])


def _router(context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind("tcp://127.0.0.1:*")
    return sock


def _drain(sock: zmq.Socket[bytes]) -> Iterator[list[bytes]]:
    for _ in range(READS_PER_TURN):
        try:
            yield sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


def run_broker(endpoints_file: Path) -> int:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    broker = EchoBroker(context)

    def stop(_signum: int, _frame: object) -> None:
        broker.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    endpoints = {
        "client": broker.frontend.getsockopt_string(zmq.LAST_ENDPOINT),
        "worker": broker.backend.getsockopt_string(zmq.LAST_ENDPOINT),
    }
    partial = endpoints_file.with_suffix(".tmp")
    partial.write_text(json.dumps(endpoints))
    partial.replace(endpoints_file)
    try:
        broker.run()
    finally:
        context.destroy(linger=0)
    return 0


# --- worker process -----------------------------------------------------------------


def run_worker(connect: str, credit: int) -> int:
    """Announce `credit`, then send every job straight back, until SIGTERM."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(connect)
    sock.send_multipart([READY, str(credit).encode()])
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    try:
        while running[0]:
            if sock.poll(200):
                for frames in _drain(sock):
                    sock.send_multipart(frames)
    finally:
        context.destroy(linger=0)
    return 0


# --- producer side ------------------------------------------------------------------


class Producer:
    """A bare DEALER loop in the calling thread (no I/O thread, no futures)."""

    def __init__(self, address: str) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.tags = itertools.count()

    def run(self, jobs: Iterable[Job], window: int) -> list[float]:
        """Run `jobs` through the echo broker, `window` in flight; latencies in seconds."""
        sent: dict[bytes, float] = {}
        latencies: list[float] = []
        for job in jobs:
            tag = str(next(self.tags)).encode()
            sent[tag] = time.perf_counter()
            self.sock.send_multipart([b"", tag, msgpack.packb(job)])
            if len(sent) >= window:
                _receive_one(self.sock, sent, latencies)
        while sent:
            _receive_one(self.sock, sent, latencies)
        return latencies

    def close(self) -> None:
        self.context.destroy(linger=0)


def produce(address: str, jobs: Iterable[Job], window: int) -> list[float]:
    """`jobs` through a new producer: latencies in seconds."""
    producer = Producer(address)
    try:
        return producer.run(jobs, window)
    finally:
        producer.close()


def _receive_one(sock: zmq.Socket[bytes], sent: dict[bytes, float], out: list[float]) -> None:
    if not sock.poll(10_000):
        raise TimeoutError("the echo broker did not answer within 10 s")
    _empty, tag, _body = sock.recv_multipart()
    out.append(time.perf_counter() - sent.pop(tag))


# --- the service, as the bench starts it ---------------------------------------------


class EchoService(Processes):
    """The echo broker and `workers` echo workers as real processes."""

    name = "echo"

    def __init__(self, state_dir: Path, workers: int = 2, credit: int = CREDIT) -> None:
        super().__init__(state_dir)
        self.worker_count = workers
        self.credit = credit
        self.client_endpoint = ""

    def start(self) -> None:
        endpoints_file = self.state_dir / "echo.endpoints.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        endpoints_file.unlink(missing_ok=True)
        self.spawn(["-m", "bench.echo", "broker", f"--endpoints-file={endpoints_file}"], "broker")

        def bound() -> dict[str, Any] | None:
            self.check_alive()
            return read_json(endpoints_file)

        endpoints = wait_until(bound, 20.0, "the echo broker's endpoints")
        self.client_endpoint = endpoints["client"]
        for n in range(self.worker_count):
            args = [
                "-m",
                "bench.echo",
                "worker",
                f"--connect={endpoints['worker']}",
                f"--credit={self.credit}",
            ]
            self.spawn(args, f"worker-{n + 1}")
        # Ready when a round trip works (at least one worker has connected).
        produce(self.client_endpoint, [("ping", {})], 1)

    def target(self) -> Target:
        return Target("echo", self.client_endpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    broker = sub.add_parser("broker", help="run the echo broker")
    broker.add_argument("--endpoints-file", type=Path, required=True)
    worker = sub.add_parser("worker", help="run one echo worker")
    worker.add_argument("--connect", required=True)
    worker.add_argument("--credit", type=int, default=CREDIT)
    args = parser.parse_args(argv)
    if args.role == "broker":
        return run_broker(args.endpoints_file)
    return run_worker(args.connect, args.credit)


if __name__ == "__main__":
    sys.exit(main())
