"""The bench's PostgreSQL section (`python -m bench --postgres`): brokers on one database.

One broker on SQLite, then 1, 2 and 3 brokers sharing one throwaway PostgreSQL (with
fsync on, as in production), each broker with its own workers; producer N is given
every broker's endpoint, starting with broker N mod count: it works with that one, and
would move on if it fell silent, as a user's client does. Each row
gives jobs/s, p50 and CPU per job by process kind: brokers, workers, PostgreSQL (the
postmaster and its connections), clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

    def target(self) -> Target:
        endpoints = [broker.client_endpoint for broker in self.brokers]
        rotations = [",".join(endpoints[n:] + endpoints[:n]) for n in range(len(endpoints))]
        return Target("ours", rotations[0], {"addresses": rotations})


def markdown(rows: list[dict[str, Any]]) -> str:
    """The section as a Markdown table."""
    lines = [
        "| store | brokers | jobs/s | p50 ms | CPU ms/job: brokers | workers | PostgreSQL |"
        " clients |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        median = row["median"]
        roles = median["cpu_ms_per_job_by_role"]
        cells = [
            row["store"], row["brokers"], f"{median['jobs_per_s']:,.0f}",
            f"{median['p50_ms']:.2f}",
            *(f"{roles.get(role, 0.0):.3f}" for role in ("broker", "worker", "postgresql")),
            f"{median['client_cpu_ms_per_job']:.3f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def measure_all(bench: Any, data: Path) -> list[dict[str, Any]]:
    """The section's rows: SQLite with one broker, then PostgreSQL with each count."""
    p, w, n = bench.plan.producers, bench.plan.window, bench.plan.workers
    shape = bench.shape(p, w)
    with bench.started(SharedStoreBrokers(bench.work_dir / "sqlite", data, "sqlite", 1, n)) as one:
        rows = [bench.measure(one, shape, workers=n, store="sqlite", brokers=1)]
    reason = skip_reason()
    if reason:
        bench.say(f"PostgreSQL section skipped: {reason}")
        return rows
    with postgres_server(fsync=True) as server:
        for count in BROKER_COUNTS:
            state = bench.work_dir / f"postgresql-{count}"
            brokers = SharedStoreBrokers(state, data, server.database(), count, n, server=server)
            with bench.started(brokers) as running:
                rows.append(bench.measure(running, shape, workers=n, store="postgresql",
                                          brokers=count))  # fmt: skip
    return rows
