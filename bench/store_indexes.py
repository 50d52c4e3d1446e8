"""`python -m bench.store_indexes`: what the job-listing indexes cost the SQLite store.

Runs the broker's store path for each job (add, finish, one commit per 50 jobs, as a
busy loop turn does) on a fresh `SqliteStore`, with and without the indexes that list
jobs by status and by statistic (broker/store/sqlite_schema.py `LIST_INDEXES`), and
prints the CPU time per job of this process (the store's own thread included): minimum
and median of `--reps` runs, alternating, so that a noisy machine shows as a spread,
not a bias.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from broker.store import Outcome, SqliteStore
from protocol import messages as m
from protocol.messages import JobStatus

DONE = Outcome(JobStatus.DONE, answer=m.pack({"Ohio": 31.2}), fingerprint="f" * 64)
QUESTION = "Percent of adults aged 18 years and older who have obesity"
BODY = m.body_of(m.Job("state_mean", {"question": QUESTION, "state": "Ohio"}))
JOBS_PER_TURN = 50


def cpu_us_per_job(directory: Path, with_indexes: bool, turns: int) -> float:
    store = SqliteStore(directory / "jobs.sqlite3", boot="bench")
    if not with_indexes:
        store._db.executescript("DROP INDEX jobs_status; DROP INDEX jobs_statistic;")
    started = time.process_time()
    for turn in range(turns):
        for n in range(JOBS_PER_TURN):
            seq, _ = store.add(f"r{turn}-{n}", BODY, 0.0, "", "state_mean")
            store.finish(seq, DONE, 1.0)
        store.commit()
    spent = time.process_time() - started
    store.close()
    return spent / (turns * JOBS_PER_TURN) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--turns", type=int, default=400)
    args = parser.parse_args()
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.reps):
        for with_indexes in (False, True):
            with tempfile.TemporaryDirectory() as directory:
                runs[with_indexes].append(cpu_us_per_job(Path(directory), with_indexes, args.turns))
    for with_indexes, times in runs.items():
        label = "with the listing indexes" if with_indexes else "without them"
        print(f"{label:26} CPU us/job: min {min(times):.1f}, median {statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
