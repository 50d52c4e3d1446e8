"""A producer process for concurrency tests: submits jobs, waits for them, prints JSON lines.

python -m tests.producer ENDPOINT COUNT SEED  ->  {"job_id", "statistic", "params", "answer"}
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from bench.reference import QUESTIONS
from clients import Client
from protocol.messages import STATE_STATISTICS, STATISTICS

STATES = ["Ohio", "Texas", "Alaska", "National", "Puerto Rico", "Maine", "Iowa"]


def job_mix(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` jobs over all nine statistics, reproducible from `seed`."""
    rng = random.Random(seed)
    jobs: list[tuple[str, dict[str, Any]]] = []
    for _ in range(count):
        statistic = rng.choice(STATISTICS)
        params: dict[str, Any] = {"question": rng.choice(QUESTIONS)}
        if statistic in STATE_STATISTICS:
            params["state"] = rng.choice(STATES)
        jobs.append((statistic, params))
    return jobs


def run(client: Client, jobs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Submit every job first (so they overlap), then wait for each answer."""
    submitted = [(client.submit(stat, **params), stat, params) for stat, params in jobs]
    return [
        {"job_id": job, "statistic": stat, "params": params, "answer": client.wait(job, 60)}
        for job, stat, params in submitted
    ]


def main(argv: list[str]) -> int:
    endpoint, count, seed = argv[0], int(argv[1]), int(argv[2])
    with Client(endpoint, timeout=60) as client:
        for record in run(client, job_mix(count, seed)):
            print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
