"""Issue 20, item 3: what the PostgreSQL store's reads cost as it grows to 1,000,000 jobs.

    ./run.sh bench pggrowth [--sizes 10000,100000,1000000] [--reps 30] [--explain]
    ./run.sh bench pggrowth --churn 300     # autovacuum over a long run

Fills a fresh database (a throwaway server, bench.postgres) to each size with one
server-side INSERT ... SELECT generate_series of realistic rows (a real job body and
answer, 1 % failed, 1 % running, a few keys and statistics; the running counts and the
keys' stored bytes filled to match, as the broker would have kept them), ANALYZEs, and
times through `PgStore`, medians of `--reps` in ms: `get` of a random job, `get_many`
of 500, a page of 100 (all jobs, by status, by key, by key and status), a key's running
jobs, `recent` (all, failed ones), the counts by status, and `expire` of one batch
(rolled back: the size stays); next to them
the GROUP BY over the jobs that the counts no longer run. Then the bytes per job of the
table (TOAST included) and of each index. `--explain` prints each query's plan at the
largest size.

`--churn SECONDS` instead runs the broker's write path on 100,000 jobs for that long
(add, finish, commit 50 at a time; expiry of the oldest as it goes, so the table keeps
its size) and samples `pg_stat_user_tables` every 10 s: live and dead rows, and when
autovacuum last visited `jobs`; `--naptime S` sets `autovacuum_naptime` first.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.postgres import postgres_server, skip_reason
from broker.store import Outcome
from broker.store import postgres as pg
from broker.store.pg_schema import count_slot
from broker.store.postgres import PgStore
from broker.store.sql import JOB_COLUMNS, SUMMARY_COLUMNS
from protocol import messages as m
from protocol.messages import JobStatus

QUESTION = "Percent of adults aged 18 years and older who have obesity"
BODY = m.body_of(m.Job("state_mean", {"question": QUESTION, "state": "Ohio"}))
ANSWER = m.pack({"Ohio": 31.2})
DONE = Outcome(JobStatus.DONE, answer=ANSWER, fingerprint="f" * 64)
KEYS = 20  # owners: '' and 19 keys
STATISTICS = ("state_mean", "global_mean", "best5", "worst5", "mean_by_category")
PAGE = 100

# Rows g = first..last: job g finished at g seconds (1 % failed, 1 % still running).
_FILL = f"""
INSERT INTO jobs (seq, request_id, request, status, attempts, answer, reason, fingerprint,
                  created_s, finished_s, owner, broker_id, broker_epoch, statistic)
SELECT g, 'fill-' || g, %(body)s,
       CASE WHEN g %% 100 = 0 THEN 'error' WHEN g %% 100 = 1 THEN 'running' ELSE 'done' END,
       0,
       CASE WHEN g %% 100 > 1 THEN %(answer)s END,
       CASE WHEN g %% 100 = 0 THEN 'no data for this question' END,
       CASE WHEN g %% 100 > 1 THEN repeat('f', 64) END,
       g - 1, CASE WHEN g %% 100 <> 1 THEN g::float8 END,
       CASE WHEN g %% {KEYS} = 0 THEN '' ELSE 'key-' || (g %% {KEYS}) END,
       'fill', 0,
       (ARRAY{list(STATISTICS)})[1 + g %% {len(STATISTICS)}]
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""
_COUNT_FILLED = """
INSERT INTO job_counts (slot, status, n)
SELECT %(slot)s, status, count(*) FROM jobs WHERE seq BETWEEN %(first)s AND %(last)s
GROUP BY status ORDER BY status
ON CONFLICT (slot, status) DO UPDATE SET n = job_counts.n + excluded.n
"""
_USAGE_FILLED = """
INSERT INTO key_usage (owner, stored_bytes)
SELECT owner, sum(octet_length(request) + coalesce(octet_length(answer), 0)
                  + coalesce(octet_length(reason), 0))
FROM jobs WHERE seq BETWEEN %(first)s AND %(last)s GROUP BY owner ORDER BY owner
ON CONFLICT (owner) DO UPDATE SET stored_bytes = key_usage.stored_bytes + excluded.stored_bytes
"""


def fill(store: PgStore, first: int, last: int) -> None:
    """Jobs `first`..`last`, written by the server itself, and the totals kept of them."""
    db = store._session.conn()
    params = {"body": BODY, "answer": ANSWER, "first": first, "last": last,
              "slot": count_slot(store.epoch)}  # fmt: skip
    with db.transaction():
        db.execute(_FILL, params)
        db.execute(_COUNT_FILLED, params)
        db.execute(_USAGE_FILLED, params)
        db.execute("SELECT setval('job_seq', %s)", (last,))
    db.execute("VACUUM ANALYZE jobs")


def median_ms(action: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def expire_batch(store: PgStore, size: int) -> Callable[[], object]:
    """Expire one batch of the oldest finished jobs, then roll it back (the size stays)."""

    def run() -> None:
        removed = store.expire(finished_before_s=float(size))
        store.rollback()
        assert removed == pg.EXPIRE_BATCH, removed

    return run


def counts_read(store: PgStore) -> Callable[[], object]:
    def run() -> None:
        store._counts_at = -pg.COUNTS_MAX_AGE_S  # read the totals again, as once a second
        store.count(JobStatus.DONE)

    return run


def operations(store: PgStore, size: int) -> dict[str, Callable[[], object]]:
    pick = random.Random(size)
    scan = store._session.conn()
    return {
        "get": lambda: store.get(pick.randint(1, size)),
        "get_many(500)": lambda: store.get_many([pick.randint(1, size) for _ in range(500)]),
        "page": lambda: store.page(pick.randint(0, size - PAGE), PAGE),
        "page by status": lambda: store.page(pick.randint(0, size), PAGE, status="running"),
        "page by key": lambda: store.page(pick.randint(0, size), PAGE, owner="key-3"),
        "page by key, status": lambda: store.page(  # none is in it: the worst case
            pick.randint(0, size), PAGE, owner="key-3", status="error"
        ),
        "a key's running jobs": lambda: store.running_of("key-3"),
        "recent": lambda: store.recent(50),
        "recent failed": lambda: store.recent(50, status=JobStatus.ERROR),
        "counts": counts_read(store),
        "expire a batch": expire_batch(store, size),
        "(old counts: GROUP BY)": lambda: scan.execute(
            "SELECT status, count(*) FROM jobs GROUP BY status"
        ).fetchall(),
    }


def bytes_per_job(store: PgStore, size: int) -> dict[str, float]:
    db = store._session.conn()
    sizes: dict[str, float] = {}
    row = db.execute(
        "SELECT pg_table_size('jobs'), pg_indexes_size('jobs'), pg_total_relation_size('jobs')"
    ).fetchone()
    assert row is not None
    sizes["table (with TOAST)"], sizes["all indexes"], sizes["total"] = (v / size for v in row)
    for name, index_bytes in db.execute(
        "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
        " WHERE relname = 'jobs' ORDER BY 2 DESC"
    ):
        sizes[f"  index {name}"] = index_bytes / size
    return sizes


EXPLAINED: dict[str, tuple[str, tuple[Any, ...]]] = {
    "get": (f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = %s", (12345,)),
    "get_many": (f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY(%s)", ([7, 70_007, 700_007],)),
    "page": ("SELECT seq, status FROM jobs WHERE seq > %s ORDER BY seq LIMIT %s", (1000, PAGE)),
    "page by status": (
        "SELECT seq, status FROM jobs WHERE status = %s AND seq > %s ORDER BY seq LIMIT %s",
        ("running", 1000, PAGE),
    ),
    "page by key": (
        "SELECT seq, status FROM jobs WHERE owner = %s AND owner != '' AND seq > %s"
        " ORDER BY seq LIMIT %s",
        ("key-3", 1000, PAGE),
    ),
    "page by key, status": (
        "SELECT seq, status FROM jobs WHERE owner = %s AND owner != '' AND status = %s"
        " AND seq > %s ORDER BY seq LIMIT %s",
        ("key-3", "error", 1000, PAGE),
    ),
    "counts": (pg._COUNTS, ()),
}


def explain(store: PgStore, size: int) -> None:
    db = store._session.conn()
    queries = dict(EXPLAINED)
    queries["recent failed"] = (
        f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE seq > %s AND (%s::text IS NULL OR status = %s)"
        " AND (%s::text IS NULL OR owner = %s) ORDER BY seq DESC LIMIT %s",
        (size - 10_000, "error", "error", None, None, 50),
    )
    queries["expire a batch"] = (
        "SELECT seq FROM jobs WHERE finished_s < %s ORDER BY finished_s LIMIT %s"
        " FOR UPDATE SKIP LOCKED",
        (float(size), pg.EXPIRE_BATCH),
    )
    for name, (sql, params) in queries.items():
        print(f"\n-- {name}")
        with db.transaction(force_rollback=True):
            for (line,) in db.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params):
                print(f"   {line}")


def growth(sizes: list[int], reps: int, show_plans: bool) -> None:
    with postgres_server() as server:
        store = PgStore(server.database(), "bench")
        store.register(lease_s=3600.0)
        filled = 0
        table: dict[str, list[float]] = {}
        per_job: dict[str, list[float]] = {}
        for size in sizes:
            fill(store, filled + 1, size)
            filled = size
            for name, action in operations(store, size).items():
                action()  # warm: the first run plans, later ones use prepared statements
                table.setdefault(name, []).append(median_ms(action, reps))
            for name, value in bytes_per_job(store, size).items():
                per_job.setdefault(name, []).append(value)
        header = "".join(f"{size:>12,}" for size in sizes)
        print(f"median ms (of {reps})      {header}")
        for name, values in table.items():
            print(f"{name:26}" + "".join(f"{v:12.3f}" for v in values))
        print(f"\nbytes per job              {header}")
        for name, values in per_job.items():
            print(f"{name:26}" + "".join(f"{v:12.0f}" for v in values))
        if show_plans:
            explain(store, sizes[-1])
        store.close()


def churn(seconds: float, naptime_s: float, size: int = 100_000) -> None:
    """The broker's write path for `seconds` on `size` jobs, expiring as it goes, with
    autovacuum looking every `naptime_s` (0: PostgreSQL's default, 60 s)."""
    with postgres_server() as server:
        store = PgStore(server.database(), "bench")
        store.register(lease_s=3600.0)
        fill(store, 1, size)
        db = store._session.conn()
        if naptime_s:
            db.execute(f"ALTER SYSTEM SET autovacuum_naptime = '{naptime_s:g}s'")
            db.execute("SELECT pg_reload_conf()")
        started = next_sample = time.monotonic()
        n, written = 0, 0
        print("  s     jobs/s   live rows   dead rows   MB in all  last autovacuum of jobs")
        while (now := time.monotonic()) - started < seconds:
            for _ in range(50):
                n += 1
                seq, _ = store.add(f"churn-{n}", BODY, float(size + n), "key-1", "state_mean")
                store.finish(seq, DONE, float(size + n), "key-1")
            store.commit()
            written += 50
            while store.expire(finished_before_s=float(n)):  # the table keeps its size
                store.commit()
            store.commit()
            if now >= next_sample:
                live, dead, total, vacuumed = db.execute(
                    "SELECT n_live_tup, n_dead_tup, pg_total_relation_size('jobs'),"
                    " last_autovacuum FROM pg_stat_user_tables WHERE relname = 'jobs'"
                ).fetchone() or (0, 0, 0, None)
                rate = written / max(now - started, 1e-9)
                print(f"{now - started:5.0f} {rate:10.0f} {live:11,} {dead:11,}"
                      f" {total / 2**20:11.1f}  {vacuumed}")  # fmt: skip
                next_sample = now + 10.0
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pggrowth", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--churn", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--naptime", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    if skip_reason():
        raise SystemExit(skip_reason())
    if args.churn:
        churn(args.churn, args.naptime)
    else:
        growth(sorted(int(s) for s in args.sizes.split(",")), args.reps, args.explain)


if __name__ == "__main__":
    main()
