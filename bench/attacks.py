"""Issue 17's attacks on admission (holes 2 and 5), measured on real processes.

    python -m bench.attacks nul-submit [--duration 6]   # PostgreSQL store
    python -m bench.attacks nul-reason [--duration 6]   # PostgreSQL store
    python -m bench.attacks quota [--duration 4]        # CURVE keys, a small disk (root)
    python -m bench.attacks commit-retry [--duration 4] # a small disk (root)

- nul-submit: a victim submits over a bare DEALER, one request at a time, while an
  attacker sends one submit with a NUL in its request id per second; the victim's
  accepted and refused submits, against the same time without the attacker.
- nul-reason: a victim runs jobs (`Client.outcomes`, 64 in flight) served by a real
  worker and a fake one that answers every job it gets with an error whose reason holds
  a NUL; the victim's finished jobs per second, against a run with the real worker alone.
- quota: on a 96 MB tmpfs (64 MB disk reserve: a margin of about 32 MB), key alice
  submits `mean_by_category` (a 72 KB answer each) as fast as it can, with the default
  8 MB quota of this run (`--quota-mb`), while key bob submits one job every 50 ms; what
  each got, and what alice stores.
- commit-retry: two accepted jobs whose answers cannot be committed (the state
  directory's disk filled after they were accepted): failed commits per second and the
  broker's CPU while they wait.

Not part of the test suite (it takes tens of seconds and, for `quota`, root); the
checks that hold the fixes are tests/unit/test_admission.py and
tests/integration/test_admission.py. Give `--old` to run against a broker without the
`--key-quota-mb` flag (the code before the fix), through PYTHONPATH.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from bench import procstat
from bench.harness import Service, raw_dealer
from bench.postgres import postgres_server, skip_reason
from clients import Client
from clients.transport import Security
from protocol import messages as m
from protocol.curve import generate_keys
from protocol.errors import RequestRefused
from workers.standin import generate

QUESTION = "Percent of adults aged 18 years and older who have obesity"
HEARTBEAT_S = 0.5


def _request(sock: zmq.Socket[bytes], submit: m.Submit) -> m.Message | None:
    sock.send_multipart(m.encode(submit, b"t"))
    if not sock.poll(10_000):
        return None
    return m.decode(sock.recv_multipart()).message


def _victim_submits(endpoint: str, duration_s: float) -> Counter[str]:
    """Submits one at a time for `duration_s`: how many were accepted, refused (by code)."""
    got: Counter[str] = Counter()
    with raw_dealer(endpoint) as sock:
        deadline, n = time.monotonic() + duration_s, 0
        while time.monotonic() < deadline:
            n += 1
            reply = _request(sock, m.Submit(f"victim-{n}", "global_mean", {"question": QUESTION}))
            got["accepted" if isinstance(reply, m.Submitted) else
                getattr(reply, "code", "no reply")] += 1  # fmt: skip
    return got


def _nul_attacker(endpoint: str, stop: threading.Event) -> None:
    with raw_dealer(endpoint) as sock:
        n = 0
        while not stop.is_set():
            n += 1
            _request(sock, m.Submit(f"nul\x00{n}", "global_mean", {"question": QUESTION}))
            stop.wait(1.0)


@contextlib.contextmanager
def _in_background(target: Callable[[threading.Event], None]) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def nul_submit(service: Service, duration_s: float) -> None:
    calm = _victim_submits(service.client_endpoint, 2.0)
    print(f"without the attacker, 2 s: {dict(calm)}")
    with _in_background(lambda stop: _nul_attacker(service.client_endpoint, stop)):
        attacked = _victim_submits(service.client_endpoint, duration_s)
    print(f"with a NUL submit per second, {duration_s:g} s: {dict(attacked)}")


def _fake_worker(endpoint: str, fingerprint: str, stop: threading.Event) -> None:
    """Takes jobs and answers each with an error whose reason holds a NUL."""
    with raw_dealer(endpoint) as sock:
        sock.send_multipart(m.encode(m.Ready(8, fingerprint, 0, "fake")))
        beat = time.monotonic()
        while not stop.is_set():
            if sock.poll(50):
                envelopes, _ = m.decode_all(sock.recv_multipart())
                for env in envelopes:
                    if isinstance(env.message, m.Job):
                        result = m.Result("error", fingerprint, reason="bad\x00reason")
                        sock.send_multipart(m.encode(result, env.tag))
            if time.monotonic() - beat >= HEARTBEAT_S:
                sock.send_multipart(m.encode(m.Heartbeat()))
                beat = time.monotonic()


def _finished_per_s(service: Service, duration_s: float) -> float:
    jobs = [("global_mean", {"question": QUESTION})] * 64
    finished, started = 0, time.monotonic()
    with Client(service.client_endpoint, timeout=30) as client:
        while time.monotonic() - started < duration_s:
            finished += sum(1 for _ in client.outcomes(jobs, window=64))
    return finished / (time.monotonic() - started)


def nul_reason(service: Service, duration_s: float) -> None:
    print(f"one real worker alone: {_finished_per_s(service, 2.0):.1f} jobs finished/s")
    with service.client() as client:
        fingerprint = str(client.stats()["fingerprint"])
    fake = lambda stop: _fake_worker(service.worker_endpoint, fingerprint, stop)  # noqa: E731
    with _in_background(fake):
        rate = _finished_per_s(service, duration_s)
    print(f"with a worker whose reasons hold a NUL, {duration_s:g} s: {rate:.1f} jobs finished/s")


@contextlib.contextmanager
def _tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def _submitter(client: Client, statistic: str, pause_s: float, got: Counter[str]) -> Callable[
    [threading.Event], None
]:  # fmt: skip
    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client.submit(statistic, question=QUESTION)
                got["accepted"] += 1
            except RequestRefused as exc:
                got[exc.code] += 1
                if got[exc.code] == 1:
                    print(f"  first {exc.code} for {statistic}: {exc.reason}")
            stop.wait(pause_s)

    return run


def quota(work: Path, data: Path, duration_s: float, quota_mb: float | None) -> None:
    keys = work / "keys"
    generate_keys(keys, ["worker:worker", "client:alice", "client:bob", "admin:admin"])
    os.environ["LSS_CURVE_SERVER_KEY"] = str(keys / "broker.key")  # the harness's own client
    os.environ["LSS_CURVE_SECRET"] = str(keys / "admin.key_secret")
    flags: dict[str, Any] = {"curve_dir": keys}
    if quota_mb is not None:
        flags["key_quota_mb"] = quota_mb
    secure = {"curve_server_key": keys / "broker.key", "curve_secret": keys / "worker.key_secret"}
    with _tmpfs(work / "state", 96 << 20) as state, Service(state, data, 0, **flags) as service:
        service.start_workers(2, **secure)
        alice, bob = (
            Client(service.client_endpoint, 30, security=Security(str(keys / "broker.key"),
                   str(keys / f"{name}.key_secret"))) for name in ("alice", "bob")
        )  # fmt: skip
        got_alice: Counter[str] = Counter()
        got_bob: Counter[str] = Counter()
        with (
            alice, bob,
            _in_background(_submitter(alice, "mean_by_category", 0.0, got_alice)),
            _in_background(_submitter(bob, "best5", 0.05, got_bob)),
        ):  # fmt: skip
            time.sleep(duration_s)  # the measured span, not synchronisation
        stored = sum(f.stat().st_size for f in state.glob("jobs.sqlite3*"))
        print(f"alice ({duration_s:g} s): {dict(got_alice)}")
        print(f"bob: {dict(got_bob)}; store files {stored / 2**20:.1f} MB")


def _fill_disk(directory: Path) -> Path:
    """Write a file in `directory` until the disk is full; the file."""
    filler = directory / "filler"
    with filler.open("ab") as out, contextlib.suppress(OSError):
        while True:
            out.write(bytes(1 << 20))
            out.flush()
    return filler


def commit_retry(work: Path, data: Path, duration_s: float) -> None:
    """Two accepted jobs whose answers cannot be committed (a full disk): the broker's
    failed commits per second and its CPU while they wait."""
    with _tmpfs(work / "state", 96 << 20) as state, Service(state, data, 0) as service:
        with service.client() as client:
            for _ in range(2):
                client.submit("mean_by_category", question=QUESTION)
            _fill_disk(state)
            service.start_workers(2)
            assert service.broker is not None
            before_failures = client.stats()["storage_failures"].get("commit", 0)
            before_cpu, started = procstat.cpu_s(service.broker.pid), time.monotonic()
            time.sleep(duration_s)  # the measured span, not synchronisation
            elapsed = time.monotonic() - started
            cpu = (procstat.cpu_s(service.broker.pid) - before_cpu) / elapsed
            failures = client.stats()["storage_failures"].get("commit", 0) - before_failures
        (state / "filler").unlink()
        print(f"disk full, 2 answers waiting, {elapsed:.1f} s: {failures / elapsed:.1f} failed"
              f" commits/s, broker CPU {100 * cpu:.0f} % of a core")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__)
    parser.add_argument("attack", choices=("nul-submit", "nul-reason", "quota", "commit-retry"))
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--quota-mb", type=float, default=8.0)
    parser.add_argument("--old", action="store_true", help="a broker without --key-quota-mb")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lss-attacks-") as tmp:
        work = Path(tmp)
        data = work / "standin.csv"
        generate(data, rows=18_000)
        if args.attack == "quota":
            quota(work, data, args.duration, None if args.old else args.quota_mb)
            return
        if args.attack == "commit-retry":
            commit_retry(work, data, args.duration)
            return
        if skip_reason():
            raise SystemExit(skip_reason())
        workers = 1 if args.attack == "nul-reason" else 2
        with postgres_server() as pg, Service(work / "state", data, workers,
                                              store=pg.database()) as service:  # fmt: skip
            (nul_submit if args.attack == "nul-submit" else nul_reason)(service, args.duration)


if __name__ == "__main__":
    main()
