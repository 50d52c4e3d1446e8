"""The benchmark harness works: a tiny run against every system, end to end.

Not the benchmark (that is `python -m bench`): tenths of a second per run, one
repetition, only to prove that services start and stop, producers drive them, every
job is answered, and the report is written. Celery is measured only where installed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench import ab, procstat, report
from bench.__main__ import main
from bench.data import cached_path
from bench.driver import FULL_MIX, PER_STATE, jobs, percentile

pytestmark = pytest.mark.integration


@pytest.mark.slow  # about 25 s: `./run.sh bench --smoke` is the same run
def test_a_tiny_bench_run_measures_every_system(tmp_path: Path, standin_csv: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "out"
    data_dir.mkdir()
    shutil.copy(standin_csv, cached_path(18_000, data_dir))  # the bench reuses it
    flags = ["--smoke", "--skip-rows", f"--data-dir={data_dir}", f"--out-dir={out}"]
    assert main(flags) == 0
    results = json.loads((out / "latest.json").read_text())
    systems = {row["system"] for row in results["comparison"]}
    skipped = {row["system"] for row in results["skipped"]}
    assert {"echo", "ours", "original"} <= systems
    assert "celery" in systems | skipped
    for row in results["comparison"]:
        assert row["median"]["jobs"] > 0, row
        if row["system"] != "original":  # its polls may read half-written files (HTTP 500)
            assert row["median"]["errors"] == 0, row
        assert row["median"]["p50_ms"] > 0, row
    checked = {t["target"]: t["value"] for t in results["targets"]}
    assert checked["throughput ours / echo (small mix)"] > 0
    table = (out / "latest.md").read_text()
    assert "| system | mix |" in table
    assert "| ours | full |" in table


def test_the_workload_covers_the_nine_statistics_with_valid_parameters() -> None:
    generator = jobs("full", seed=1, deadline=float("inf"))
    drawn = [next(generator) for _ in range(2000)]
    assert {statistic for statistic, _ in drawn} == set(FULL_MIX)
    for statistic, params in drawn:
        assert set(params) == ({"question", "state"} if statistic in PER_STATE else {"question"})


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.999) == 100
    assert percentile([], 0.5) == 0


def test_procstat_reads_this_process() -> None:
    assert procstat.cpu_s(os.getpid()) > 0
    memory = procstat.memory_mb(os.getpid())
    assert memory["VmHWM"] >= memory["VmRSS"] > 1


def _entry(
    system: str,
    jobs_per_s: float,
    p50_ms: float,
    producers: int,
    window: int,
    *,
    style: str = "map",
) -> dict[str, Any]:
    median: dict[str, Any] = dict.fromkeys(report.MEDIAN_KEYS, 1.0)
    median.update(jobs_per_s=jobs_per_s, p50_ms=p50_ms, other_cpu_share=0.1)
    median["cpu_ms_per_job_by_role"] = {"broker": 0.5}
    about = {"system": system, "mix": "small", "producers": producers, "window": window}
    return {**about, "style": style, "median": median}


def test_the_report_checks_targets_against_the_same_run_and_renders_every_table() -> None:
    results: dict[str, Any] = {
        "meta": {"shape": {"producers": 4, "window": 16}, "when": "now", "cpus": 2,
                 "mode": "full", "commit": "abc", "repetitions": 3, "duration_s": 4.0,
                 "workers": 2, "rows": 18_000},
        "comparison": [
            _entry("echo", 1000, 0.5, 4, 16), _entry("ours", 800, 1.0, 4, 16),
            _entry("echo", 900, 0.5, 1, 1), _entry("ours", 400, 1.5, 1, 1, style="call"),
            _entry("echo", 1000, 0.1, 1, 64), _entry("ours", 600, 0.2, 1, 64),
            _entry("original", 10, 100, 4, 4),
        ],
        "skipped": [{"system": "celery", "reason": "redis-server not found"}],
        "scaling": [
            {**_entry("ours", 700, 9, p, 16), "workers": w} for w in (1, 2) for p in (1, 4)
        ],
        "rows": [
            {"rows": rows, "file_mb": 7.0, "load_s": load, "ready_s": 1.0, "vmrss_mb": 80.0,
             "vmhwm_mb": 90.0, "latency": {"median": {"p50_ms": p50, "p99_ms": 5.0}}}
            for rows, load, p50 in ((18_000, 0.2, 1.0), (1_000_000, 16.0, 1.05))
        ],
    }  # fmt: skip
    checks = {c["target"]: c for c in report.targets(results)}
    assert checks["throughput ours / echo (small mix)"]["value"] == 0.8
    assert checks["throughput ours / echo (small mix)"]["met"] is True
    assert checks["throughput ours / original (small mix)"]["met"] is False  # 80 < 100
    assert checks["throughput ours / celery (small mix)"]["met"] is None
    assert checks["p50 latency ours / echo (P=1, W=1)"]["value"] == 3.0
    assert checks["throughput ours / echo (P=1, W=64)"]["value"] == 0.6
    assert checks["1M rows: worker load time (s)"]["met"] is False
    assert checks["1M rows: p50 latency / 18k rows p50 (P=1, W=1)"]["met"] is True
    results["targets"] = list(checks.values())
    text = report.markdown(results)
    assert "| celery | skipped: redis-server not found |" in text
    assert "| workers \\ producers | 1 | 4 |" in text
    assert "| 1,000,000 | 7.00 | 16.0 |" in text
    assert "| ours | small | 1 x 1 (one call at a time) |" in text


def test_a_tiny_ab_run_compares_an_arm_with_its_twin(
    tmp_path: Path, standin_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    data_dir, out, scratch = tmp_path / "data", tmp_path / "out", tmp_path / "scratch"
    data_dir.mkdir()
    scratch.mkdir()
    shutil.copy(standin_csv, cached_path(18_000, data_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the export goes
    flags = ["--shape=small:1x1", "--rounds=2", "--seconds=0.1", "--warmup-s=0.05"]
    assert ab.main(["HEAD", *flags, f"--data-dir={data_dir}", f"--out-dir={out}"]) == 0
    (written,) = out.glob("ab-*.jsonl")
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert [(r["round"], r["arm"]) for r in rows] == [
        (0, "HEAD"), (0, "HEAD A/A"), (1, "HEAD A/A"), (1, "HEAD"),
    ]  # fmt: skip
    assert all(r["jobs"] > 0 and r["errors"] == 0 and r["p50_ms"] > 0 for r in rows), rows
    assert "| small:1x1 | HEAD A/A (the noise) | 2 |" in capsys.readouterr().out
    assert list(scratch.iterdir()) == []  # the export and the state directories are gone
