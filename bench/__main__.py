"""`python -m bench` / `./run.sh bench`: run every measurement of issue 5 and report it.

In one run, same workload and machine: the echo ceiling, ours (small and full mixes, and
one job in flight), the original design, Celery + Redis when installed, the scaling grid
(workers x producers), and data sizes (load time, memory, latency). Each configuration
gets a fresh service; figures are medians of repetitions; ratios use this run's baselines.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import brokers, gateway, report
from bench.data import dataset
from bench.driver import Shape, run, wait_for_quiet
from bench.echo import EchoService
from bench.harness import Service
from bench.original import OriginalService
from bench.plan import BASE_ROWS, ORIGINAL_MAX_WINDOW, Plan, parse_args, plan_from
from bench.service import ROOT, Processes
from protocol import config

SYNC_MODES = ("OFF", "NORMAL", "FULL")


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


class Bench:
    """Runs the plan; every service lives in its own state directory under `work_dir`."""

    def __init__(self, plan: Plan, work_dir: Path) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.say = say

    def shape(self, producers: int, window: int, mix: str = "small", **kw: Any) -> Shape:
        return Shape(
            producers,
            window,
            kw.pop("duration_s", self.plan.duration_s),
            mix,
            self.plan.warmup_s,
            **kw,
        )

    def measure(
        self, service: Processes, shape: Shape, reps: int | None = None, **about: Any
    ) -> dict[str, Any]:
        """`reps` runs of `shape` against `service`, summarised."""
        runs = [
            self.run_once(service, shape, n) for n in range(1, (reps or self.plan.repetitions) + 1)
        ]
        return self.summary(service, shape, runs, **about)

    def run_once(self, service: Processes, shape: Shape, number: int) -> Any:
        """Run `number` of `shape` against `service`, once it is settled and the machine quiet."""
        service.settle()
        wait_for_quiet()
        result = run(service, shape)
        say(
            f"{service.name} {shape.mix} {shape.producers}x{shape.window} {shape.style} "
            f"run {number}: "
            f"{result.jobs_per_s:,.0f} jobs/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, {result.errors} error(s)"
        )
        return result

    def summary(
        self, service: Processes, shape: Shape, runs: list[Any], **about: Any
    ) -> dict[str, Any]:
        """`runs` of `shape` against `service`, summarised."""
        return report.summarise(
            runs,
            system=service.name,
            mix=shape.mix,
            producers=shape.producers,
            window=shape.window,
            style=shape.style,
            **about,
        )

    def comparison(self, data: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """The systems side by side on the same load."""
        p, w, n = self.plan.producers, self.plan.window, self.plan.workers
        loaded, single = self.shape(p, w), self.shape(1, 1)
        one_producer = self.shape(1, report.ONE_PRODUCER_WINDOW)
        rows: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        with self.started(EchoService(self.work_dir / "echo", n)) as echo:
            rows += [self.measure(echo, s, workers=n) for s in (loaded, single, one_producer)]
        with self.started(Service(self.work_dir / "ours", data, n)) as ours:
            # The full mix writes hundreds of megabytes of answers, whose write-back
            # would still be busy during a run after it: latency is measured first.
            one_call = self.shape(1, 1, style="call")
            shapes = (loaded, one_call, one_producer, self.shape(p, w, "full"))
            rows += [self.measure(ours, s, workers=n) for s in shapes]
        if self.plan.skip_original:
            skipped.append({"system": "original", "reason": "--skip-original"})
        else:
            with self.started(OriginalService(self.work_dir / "original", data)) as original:
                shape = self.shape(p, min(w, ORIGINAL_MAX_WINDOW))
                rows.append(self.measure(original, shape, workers=os.cpu_count() or 1))
        self._celery(data, loaded, rows, skipped)
        return rows, skipped

    def _celery(
        self, data: Path, shape: Shape, rows: list[dict[str, Any]], skipped: list[dict[str, str]]
    ) -> None:
        from bench import celery_app

        reason = "--skip-celery" if self.plan.skip_celery else celery_app.missing()
        if reason:
            say(f"celery skipped: {reason}")
            skipped.append({"system": "celery", "reason": reason})
            return
        service = celery_app.CeleryService(self.work_dir / "celery", data, self.plan.workers)
        with self.started(service) as celery:
            rows.append(self.measure(celery, shape, workers=self.plan.workers))

    def sync_modes(self, data: Path) -> list[dict[str, Any]]:
        """The loaded small mix on ours per SQLite `synchronous` mode, beside echo."""
        p, w, n = self.plan.producers, self.plan.window, self.plan.workers
        with self.started(EchoService(self.work_dir / "echo", n)) as echo:
            rows = [self.measure(echo, self.shape(p, w), workers=n)]
        for mode in SYNC_MODES:
            ours = Service(self.work_dir / f"ours-{mode}", data, n)
            ours.env[config.SETTINGS["sqlite_synchronous"].variable] = mode
            with self.started(ours) as running:
                rows.append(self.measure(running, self.shape(p, w), workers=n, sync=mode))
        return rows

    def scaling(self, data: Path) -> list[dict[str, Any]]:
        """Our throughput over workers x producers (small mix), a fresh service per worker count."""
        cells = []
        for workers in self.plan.scaling_workers:
            state = self.work_dir / f"scaling-{workers}"
            with self.started(Service(state, data, workers)) as ours:
                for producers in self.plan.scaling_producers:
                    shape = self.shape(
                        producers, self.plan.window, duration_s=self.plan.scaling_duration_s
                    )
                    reps = self.plan.scaling_repetitions
                    cells.append(self.measure(ours, shape, reps, workers=workers))
        return cells

    def data_sizes(self) -> list[dict[str, Any]]:
        """Per size: one worker's load time and memory, and latency with one job in flight."""
        sizes = []
        for rows in self.plan.rows:
            data = dataset(rows, self.plan.data_dir)
            state = self.work_dir / f"rows-{rows}"
            with self.started(Service(state, data, 1, ready_timeout_s=900.0)) as ours:
                load = ours.loads[0]
                shape = self.shape(1, 1, "full", duration_s=self.plan.rows_duration_s)
                latency = self.measure(ours, shape, workers=1, rows=rows)
            sizes.append(
                {
                    "rows": rows,
                    "file_mb": data.stat().st_size / 1e6,
                    "load_s": load.load_s,
                    "ready_s": load.ready_s,
                    "vmrss_mb": load.memory_mb.get("VmRSS"),
                    "vmhwm_mb": load.memory_mb.get("VmHWM"),
                    "latency": latency,
                }
            )
        return sizes

    def profile(self, data: Path) -> dict[str, Any]:
        """One loaded small-mix run with the broker under cProfile; the top functions."""
        import pstats

        self.plan.out_dir.mkdir(parents=True, exist_ok=True)
        prof = self.plan.out_dir / "broker.prof"
        prof.unlink(missing_ok=True)
        prefix = ["-m", "cProfile", "-o", str(prof)]
        service = Service(self.work_dir / "profile", data, self.plan.workers, broker_prefix=prefix)
        with self.started(service) as ours:
            entry = self.measure(
                ours,
                self.shape(self.plan.producers, self.plan.window),
                1,
                workers=self.plan.workers,
                note="broker under cProfile",
            )
        text = Path(self.plan.out_dir / "broker-profile.txt")
        with text.open("w") as out:
            pstats.Stats(str(prof), stream=out).sort_stats("tottime").print_stats(30)
        return {"file": str(prof), "top": str(text), "run": entry}

    @contextlib.contextmanager
    def started(self, service: Processes) -> Iterator[Any]:
        say(f"starting {service.name} ({service.state_dir.name})")
        with service as running:
            yield running


def meta(plan: Plan) -> dict[str, Any]:
    """Where and how the run was made."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        text=True,
        capture_output=True,
        check=False,
    ).stdout.strip()
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "python": platform.python_version(),
        "commit": commit or "unknown",
        "mode": plan.mode,
        "shape": {"producers": plan.producers, "window": plan.window},
        "repetitions": plan.repetitions,
        "duration_s": plan.duration_s,
        "workers": plan.workers,
        "rows": BASE_ROWS,
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
    }


def execute(plan: Plan, work_dir: Path) -> dict[str, Any]:
    """Every measurement of `plan`, as the results dictionary the report reads."""
    bench = Bench(plan, work_dir)
    data = dataset(BASE_ROWS, plan.data_dir)
    results: dict[str, Any] = {"meta": meta(plan)}
    if plan.sync_modes:
        results["sync_modes"] = bench.sync_modes(data)
        return results
    if plan.postgres:
        results["postgres"] = brokers.measure_all(bench, data)
        return results
    results["comparison"], results["skipped"] = bench.comparison(data)
    results["scaling"] = [] if plan.skip_scaling else bench.scaling(data)
    results["rows"] = [] if plan.skip_rows else bench.data_sizes()
    if plan.profile:
        results["profile"] = bench.profile(data)
    say("the HTTP gateway: p50 per request against the direct Client, and 200 slow peers")
    results["gateway"] = gateway.measure(work_dir, data, 30 if plan.mode == "smoke" else 300)
    results["targets"] = report.targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    plan = plan_from(parse_args(argv))
    started = time.monotonic()
    (ROOT / "var").mkdir(exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-state-", dir=ROOT / "var"))
    try:
        results = execute(plan, work_dir)
    except BaseException:
        say(f"failed; the services' logs are kept in {work_dir}")
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    if plan.sync_modes or plan.postgres:
        section = results.get("sync_modes") or results["postgres"]
        print(report.sync_modes_markdown(section) if plan.sync_modes else brokers.markdown(section))
        say(f"done in {results['meta']['elapsed_s']:g} s")
        return 0
    json_path, md_path = report.save(results, plan.out_dir)
    print(report.markdown(results))
    print("HTTP gateway (ms):", json.dumps(results["gateway"]))
    if "profile" in results:
        print(Path(results["profile"]["top"]).read_text()[:6000])
    say(f"done in {results['meta']['elapsed_s']:g} s: wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
