"""The bench's PostgreSQL section (`python -m bench --postgres`): brokers on one database.

One broker on SQLite and one on a throwaway PostgreSQL (with fsync on, as in
production), each in its default durability, and one more of each in like-for-like pairs
(SQLite FULL; PostgreSQL with synchronous_commit off), all running and measured in turns
(the same load on the machine for all, medians of the runs; each pair's ratio printed
after the table); then 2 and 3 brokers sharing one
database, each broker with its own workers; producer N is given every broker's
endpoint, starting with broker N mod count: it works with that one, and would move on
if it fell silent, as a user's client does. Each row gives jobs/s, p50, CPU per job by
process kind (brokers, workers, PostgreSQL: the postmaster and its connections,
clients) and the brokers' database round trips per job over its runs (their `stats`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import psycopg

from bench import procstat
from bench.harness import Service
from bench.postgres import PostgresServer, postgres_server, skip_reason
from bench.service import Processes, Target
from protocol import config

BROKER_COUNTS = (1, 2, 3)


class SharedStoreBrokers(Processes):
    """`count` of our brokers on the store `store`, `workers` workers in all (at least
    one per broker), dealt round-robin."""

    name = "ours-postgresql"

    def __init__(
        self,
        state_dir: Path,
        data: Path,
        store: str,
        count: int,
        workers: int,
        *,
        server: PostgresServer | None = None,
    ) -> None:
        super().__init__(state_dir)
        per_broker = [workers // count + (n < workers % count) for n in range(count)]
        self.brokers = [
            Service(state_dir / f"broker-{n}", data, max(1, per_broker[n])) for n in range(count)
        ]
        for broker in self.brokers:
            broker.env[config.SETTINGS["store"].variable] = store
        self.server = server
        self.name = f"ours-{'postgresql' if server else 'sqlite'}-x{count}"

    def set_env(self, variable: str, value: str) -> None:
        """`variable`=`value` in every broker's environment (before `start`)."""
        for broker in self.brokers:
            broker.env[variable] = value
        self.name += f"-{value.lower()}"

    def start(self) -> None:
        for broker in self.brokers:
            broker.start()

    def stop(self) -> None:
        for broker in self.brokers:
            broker.stop()

    def settle(self) -> None:
        for broker in self.brokers:
            broker.settle()

    def cpu_by_role(self) -> dict[str, float]:
        parts: dict[str, float] = {}
        for broker in self.brokers:
            for role, cpu in broker.cpu_by_role().items():
                parts[role] = parts.get(role, 0.0) + cpu
        if self.server is not None:
            parts["postgresql"] = procstat.tree_cpu_s([self.server.pid()])
        return parts

    def logs(self, tail_chars: int | None = 4000) -> str:
        return "\n".join(broker.logs(tail_chars) for broker in self.brokers)

    def round_trips(self) -> int:
        """The brokers' round trips to their store so far (their `stats`)."""
        total = 0
        for broker in self.brokers:
            with broker.client() as client:
                total += int(client.stats().get("store", {}).get("round_trips", 0))
        return total

    def jobs_stored(self) -> int:
        """Jobs in the store (PostgreSQL only; 0 on SQLite)."""
        if self.server is None:
            return 0
        with psycopg.connect(self.brokers[0].env[config.SETTINGS["store"].variable]) as db:
            row = db.execute("SELECT count(*) FROM jobs").fetchone()
        return int(row[0]) if row else 0

    def target(self) -> Target:
        endpoints = [broker.client_endpoint for broker in self.brokers]
        rotations = [",".join(endpoints[n:] + endpoints[:n]) for n in range(len(endpoints))]
        return Target("ours", rotations[0], {"addresses": rotations})


def markdown(rows: list[dict[str, Any]]) -> str:
    """The section as a Markdown table."""
    lines = [
        "| store | brokers | jobs/s | p50 ms | CPU µs/job: brokers | workers | PostgreSQL |"
        " clients | round trips/job |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        median = row["median"]
        roles = median["cpu_ms_per_job_by_role"]
        cells = [
            row["store"], row["brokers"], f"{median['jobs_per_s']:,.0f}",
            f"{median['p50_ms']:.2f}",
            *(f"{1000 * roles.get(role, 0.0):.0f}" for role in ("broker", "worker", "postgresql")),
            f"{1000 * median['client_cpu_ms_per_job']:.0f}",
            f"{row.get('round_trips_per_job', 0.0):.3f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join([*lines, "", *pair_ratios(rows)])


# (PostgreSQL's row, SQLite's row) compared: the default of each, then like for like.
PAIRS = ((1, 0), (1, 2), (3, 0))


def pair_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """PostgreSQL's jobs/s and p50 over SQLite's, for each pair measured in turns."""
    one_broker = [row for row in rows if row["brokers"] == 1]
    if len(one_broker) < len(DURABILITY_LABELS):
        return []
    lines = []
    for pg, lite in PAIRS:
        pg_median, lite_median = one_broker[pg]["median"], one_broker[lite]["median"]
        rate = pg_median["jobs_per_s"] / lite_median["jobs_per_s"]
        p50 = pg_median["p50_ms"] / lite_median["p50_ms"]
        lines.append(
            f"- {DURABILITY_LABELS[pg]} / {DURABILITY_LABELS[lite]}: "
            f"jobs/s {rate:.2f} x, p50 {p50:.2f} x"
        )
    return lines


def measure_all(bench: Any, data: Path) -> list[dict[str, Any]]:
    """The section's rows: one broker on SQLite and one on PostgreSQL in turns, then
    PostgreSQL with each further count."""
    n = bench.plan.workers
    shape = bench.shape(bench.plan.producers, bench.plan.window)
    on_sqlite = SharedStoreBrokers(bench.work_dir / "sqlite", data, "sqlite", 1, n)
    reason = skip_reason()
    if reason:
        bench.say(f"PostgreSQL section skipped: {reason}")
        with bench.started(on_sqlite) as one:
            return [measured(bench, one, shape, store="sqlite", brokers=1)]
    with postgres_server(fsync=True) as server:
        state = bench.work_dir / "postgresql-1"
        on_pg = SharedStoreBrokers(state, data, server.database(), 1, n, server=server)
        on_sqlite_full = SharedStoreBrokers(bench.work_dir / "sqlite-full", data, "sqlite", 1, n)
        on_sqlite_full.set_env(config.SETTINGS["sqlite_synchronous"].variable, "FULL")
        lazy_db = asynchronous_commit_database(server)
        on_pg_lazy = SharedStoreBrokers(
            bench.work_dir / "postgresql-lazy", data, lazy_db, 1, n, server=server
        )
        on_pg_lazy.name += "-lazy"
        with contextlib.ExitStack() as stack:
            started = [stack.enter_context(bench.started(s)) for s in
                       (on_sqlite, on_pg, on_sqlite_full, on_pg_lazy)]  # fmt: skip
            rows = in_turns(bench, shape, list(zip(started, DURABILITY_LABELS, strict=True)))
        for count in BROKER_COUNTS[1:]:
            state = bench.work_dir / f"postgresql-{count}"
            brokers = SharedStoreBrokers(state, data, server.database(), count, n, server=server)
            with bench.started(brokers) as running:
                rows.append(measured(bench, running, shape, store="postgresql", brokers=count))
    return rows


# One broker on each store in the default durability of each (the comparison),
# then in like-for-like pairs: every commit synced before its reply (SQLite FULL against
# PostgreSQL's default), and a commit that survives the broker's crash but not its
# host's (SQLite's default NORMAL against PostgreSQL with synchronous_commit off).
DURABILITY_LABELS = (
    "sqlite",
    "postgresql",
    "sqlite (synchronous FULL)",
    "postgresql (synchronous_commit off)",
)


def asynchronous_commit_database(server: PostgresServer) -> str:
    """A new database on `server` whose sessions commit without waiting for the WAL's
    sync (`synchronous_commit = off`, a deployment's choice: docs/deployment.md); its URL."""
    url = server.database()
    with psycopg.connect(url, autocommit=True) as db:
        name = db.info.dbname
        db.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return url


def measured(bench: Any, service: SharedStoreBrokers, shape: Any, **about: Any) -> dict[str, Any]:
    """`bench.measure` of `service`, with its round trips per job over the runs."""
    trips, jobs = service.round_trips(), service.jobs_stored()
    row: dict[str, Any] = bench.measure(service, shape, workers=bench.plan.workers, **about)
    return {**row, "round_trips_per_job": per_job(service, trips, jobs)}


def in_turns(
    bench: Any, shape: Any, services: list[tuple[SharedStoreBrokers, str]]
) -> list[dict[str, Any]]:
    """One broker each on `services` (with their store's name), run in turns."""
    runs: list[list[Any]] = [[] for _ in services]
    before = [(service.round_trips(), service.jobs_stored()) for service, _ in services]
    for number in range(1, bench.plan.repetitions + 1):
        for (service, _), done in zip(services, runs, strict=True):
            done.append(bench.run_once(service, shape, number))
    rows = []
    for (service, store), done, (trips, jobs) in zip(services, runs, before, strict=True):
        row = bench.summary(
            service, shape, done, workers=bench.plan.workers, store=store, brokers=1
        )
        rows.append({**row, "round_trips_per_job": per_job(service, trips, jobs)})
    return rows


def per_job(service: SharedStoreBrokers, trips_before: int, jobs_before: int) -> float:
    """Round trips per job stored since the counts given (0 on SQLite: no job is counted)."""
    jobs = service.jobs_stored() - jobs_before
    return (service.round_trips() - trips_before) / jobs if jobs > 0 else 0.0
