"""Database round trips per job of one broker on PostgreSQL (`python -m bench.round_trips`).

A broker's logic (BrokerCore on a PgStore, no sockets) on a throwaway PostgreSQL, fed
turns as a loaded broker sees them: each turn `--jobs` submits and the results of the
previous turn's jobs, then the turn's commit. The store's connection counts the round
trips (broker.store.pg_connection.CountingConnection, read from the session, so that
the same module measures an older store given this connection module). Prints round
trips per turn and per job, over `--turns` turns after one to warm up.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.postgres import postgres_server
from broker.core import BrokerCore, CoreSettings
from broker.store.postgres import PgStore
from protocol import messages as m

FINGERPRINT = "f" * 64
SETTINGS = CoreSettings(
    heartbeat_interval_s=0.5, heartbeat_liveness=5, job_timeout_s=60.0, max_attempts=3,
    max_queue=1_000_000, result_ttl_s=1e9, max_message_bytes=1 << 24,
)  # fmt: skip
ANSWER = m.pack({"global_mean": 1.0})


def turn(core: BrokerCore, number: int, jobs: int, running: list[bytes]) -> list[bytes]:
    """One loop turn: `jobs` submits, the results of `running`, dispatch, commit; the
    jobs sent to the worker in it."""
    for n in range(jobs):
        submit = m.Submit(f"t{number}-{n}", "global_mean", {"question": "Q"})
        core.on_client(m.Envelope(submit, tag=b"%d" % n, identity=b"producer"), 0.0)
    for tag in running:
        result = m.Envelope(m.Result("done", FINGERPRINT), tag, ANSWER, b"worker")
        core.on_worker(result, 0.0)
    core.dispatch(0.0)
    core.commit()
    _, to_workers = core.outbox.take()
    return [frames[1] for frames in to_workers]


def measure(jobs: int, turns: int) -> dict[str, Any]:
    with postgres_server() as server:
        store = PgStore(server.database(), "bench-broker")
        store.register(lease_s=60.0)
        try:
            core = BrokerCore(store, SETTINGS, FINGERPRINT)
            core.on_worker(m.Envelope(m.Ready(1_000_000, FINGERPRINT), identity=b"worker"), 0.0)
            running = turn(core, 0, jobs, [])
            before = store._session.round_trips
            for number in range(1, turns + 1):
                running = turn(core, number, jobs, running)
            trips = store._session.round_trips - before
        finally:
            store.close()
    return {
        "jobs_per_turn": jobs,
        "turns": turns,
        "round_trips": trips,
        "per_turn": trips / turns,
        "per_job": trips / (turns * jobs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.round_trips", description=__doc__)
    parser.add_argument("--jobs", type=int, default=64, help="submits (and results) per turn")
    parser.add_argument("--turns", type=int, default=100, help="turns measured")
    args = parser.parse_args(argv)
    got = measure(args.jobs, args.turns)
    print(
        f"{got['jobs_per_turn']} jobs a turn, {got['turns']} turns: {got['round_trips']} round"
        f" trips, {got['per_turn']:.2f} per turn, {got['per_job']:.3f} per job"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
