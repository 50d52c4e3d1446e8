"""Issue 20, item 4: a flood of reads against a broker on PostgreSQL, on real processes.

    ./run.sh bench readflood [--batches 5] [--size 10000] [--jobs 200]

A broker on PostgreSQL with two workers first runs `--jobs` jobs to the end, so that
reading them goes to the store. Then, for each attack, an attacker sends `--batches`
BATCHes of `--size` requests at once over a bare DEALER and reads every answer, while a
victim pings over a DEALER of its own every 10 ms:

- get: GETs of the finished jobs (each one a read of the store, before issue 20);
- num-jobs: NUM_JOBS.

Printed per attack: the victim's ping round trip (p50, p99, max) without the attacker
and during it, the requests answered and how long they took, and the workers the broker
lost meanwhile (its `worker_lost` events). To measure the code before a change, run
this module from an export of that commit (`git archive COMMIT | tar -x -C DIR`, then
copy this file into DIR/bench and run `python -m bench.readflood` there).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import Service, raw_dealer
from bench.postgres import postgres_server, skip_reason
from clients import Client
from protocol import messages as m
from workers.standin import generate

QUESTION = "Percent of adults aged 18 years and older who have obesity"
PING_EVERY_S = 0.01
QUIET_S = 10.0  # the attacker stops reading once no answer came for this long


def _pinger(endpoint: str, stop: threading.Event, rtts: list[tuple[float, float]]) -> None:
    """Ping every PING_EVERY_S until `stop`; (when sent, round trip) of each into `rtts`."""
    with raw_dealer(endpoint) as sock:
        n = 0
        while not stop.is_set():
            n += 1
            tag = str(n).encode()
            sent = time.monotonic()
            sock.send_multipart(m.encode(m.Ping(), tag))
            while sock.poll(10_000):
                envelopes, _ = m.decode_all(sock.recv_multipart())
                if any(env.tag == tag for env in envelopes):
                    rtts.append((sent, time.monotonic() - sent))
                    break
            stop.wait(PING_EVERY_S)  # the pace of the pings, not synchronisation


def _pings(
    endpoint: str, during: Callable[[], object], at_least_s: float
) -> list[tuple[float, float]]:
    """(when sent, round trip) of pings while `during()` runs (and for `at_least_s` in all)."""
    rtts: list[tuple[float, float]] = []
    stop = threading.Event()
    thread = threading.Thread(target=_pinger, args=(endpoint, stop, rtts), daemon=True)
    started = time.monotonic()
    thread.start()
    during()
    stop.wait(max(0.0, at_least_s - (time.monotonic() - started)))
    stop.set()
    thread.join(30)
    return rtts


def _flood(
    endpoint: str, requests: list[m.Message], batches: int, size: int
) -> tuple[int, float, float]:
    """Send `batches` BATCHes of `size` of `requests` (cycled) at once, then read answers
    until none came for QUIET_S: (answers, when the first was sent, when the last came)."""
    with raw_dealer(endpoint, receive_hwm=0) as sock:
        started = last = time.monotonic()
        for b in range(batches):
            sock.send_multipart(m.batch([
                m.encode(requests[(b * size + n) % len(requests)], f"{b}-{n}".encode())
                for n in range(size)
            ]))  # fmt: skip
        answers = 0
        while sock.poll(int(QUIET_S * 1000)):
            envelopes, _ = m.decode_all(sock.recv_multipart())
            answers += len(envelopes)
            last = time.monotonic()
        return answers, started, last


def _ms(rtts: list[float]) -> str:
    if not rtts:
        return "no pings answered"
    p99 = statistics.quantiles(rtts, n=100, method="inclusive")[98] if len(rtts) > 1 else rtts[0]
    over = sum(1 for rtt in rtts if rtt > 0.05)
    return (f"p50 {1000 * statistics.median(rtts):.1f} ms, p99 {1000 * p99:.1f} ms,"
            f" max {1000 * max(rtts):.1f} ms; {over} of {len(rtts)} over 50 ms")  # fmt: skip


def _flood_apart(
    endpoint: str, requests: list[m.Message], batches: int, size: int
) -> tuple[int, float, float]:
    """`_flood` in a process of its own: decoding 50,000 answers here would hold the
    pinger's thread back (one interpreter lock), and the pings would measure that."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_flood, (endpoint, requests, batches, size))


def attack(service: Service, name: str, requests: list[m.Message], batches: int, size: int) -> None:
    calm = [rtt for _, rtt in _pings(service.client_endpoint, lambda: None, 2.0)]
    lost_before = len(service.events("worker_lost"))
    got: list[tuple[int, float, float]] = []
    flood = lambda: got.append(_flood_apart(service.client_endpoint, requests, batches, size))  # noqa: E731
    pings = _pings(service.client_endpoint, flood, 0.0)
    answers, started, last = got[0]
    attacked = [rtt for sent, rtt in pings if started <= sent + rtt and sent <= last]
    took = last - started
    lost = len(service.events("worker_lost")) - lost_before
    print(f"{name}: {batches} BATCHes of {size:,}: {answers:,} answered in {took:.2f} s"
          f" (the rest dropped: over a peer's share)")  # fmt: skip
    print(f"  ping without the attacker: {_ms(calm)}")
    print(f"  ping during the attack:    {_ms(attacked)}")
    print(f"  workers lost: {lost}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.readflood", description=__doc__)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--attack", choices=("get", "num-jobs", "both"), default="both")
    args = parser.parse_args(argv)
    if skip_reason():
        raise SystemExit(skip_reason())
    with tempfile.TemporaryDirectory(prefix="lss-readflood-") as tmp:
        work = Path(tmp)
        data = work / "standin.csv"
        generate(data, rows=18_000)
        with postgres_server() as pg, Service(work / "state", data, 2,
                                              store=pg.database()) as service:  # fmt: skip
            with Client(service.client_endpoint, timeout=60) as client:
                jobs = [("global_mean", {"question": QUESTION})] * args.jobs
                finished = sum(1 for _ in client.outcomes(jobs, window=64))
                ids = list(client.jobs(status="done", limit=finished))
            if args.attack in ("get", "both"):
                gets: list[m.Message] = [m.Get(job) for job in ids]
                attack(service, "get", gets, args.batches, args.size)
            if args.attack in ("num-jobs", "both"):
                attack(service, "num-jobs", [m.NumJobs()], args.batches, args.size)


if __name__ == "__main__":
    main()
