"""Many producers at once: 8 threads sharing one Client, plus 2 producer processes."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench.harness import Service
from bench.reference import Reference, assert_close
from bench.service import ROOT, stop_process
from tests.producer import job_mix, run

pytestmark = pytest.mark.integration

THREADS, PER_THREAD = 8, 150
PROCESSES, PER_PROCESS = 2, 400


def test_two_thousand_jobs_from_threads_and_processes(service: Service, standin_csv: Path) -> None:
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.producer",
                service.client_endpoint,
                str(PER_PROCESS),
                str(n),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env=service.env,
        )
        for n in range(PROCESSES)
    ]
    try:
        with service.client(timeout=60) as client, ThreadPoolExecutor(THREADS) as pool:
            batches = pool.map(lambda n: run(client, job_mix(PER_THREAD, n)), range(THREADS))
            records = [record for batch in batches for record in batch]
        for proc in processes:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            records += [json.loads(line) for line in out.decode().splitlines()]
    finally:
        for proc in processes:
            stop_process(proc)
    check(records, Reference(standin_csv))


def check(records: list[dict[str, Any]], reference: Reference) -> None:
    assert len(records) == THREADS * PER_THREAD + PROCESSES * PER_PROCESS == 2000
    ids = [record["job_id"] for record in records]
    assert len(set(ids)) == len(ids), "a job id was handed out twice"
    for record in records:
        params = record["params"]
        expected = reference.answer(record["statistic"], params["question"], params.get("state"))
        assert_close(record["answer"], expected, f"{record['job_id']} {record['statistic']}")
