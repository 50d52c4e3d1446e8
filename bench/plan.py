"""What a bench run measures and for how long: the `Plan`, its presets and its flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.data import DATA_DIR
from bench.report import RESULTS_DIR

BASE_ROWS = 18_000
ORIGINAL_MAX_WINDOW = 4  # its polling clients: more in flight only queues in its thread pool


@dataclass(frozen=True)
class Plan:
    """What to measure and how long; `--quick` and `--smoke` are presets of it."""

    mode: str = "full"
    producers: int = 4
    window: int = 16
    workers: int = 2
    duration_s: float = 4.0
    warmup_s: float = 0.5
    repetitions: int = 3
    scaling_workers: tuple[int, ...] = (1, 2, 4)
    scaling_producers: tuple[int, ...] = (1, 4, 16)
    scaling_duration_s: float = 2.0
    scaling_repetitions: int = 3
    rows: tuple[int, ...] = (BASE_ROWS, 1_000_000, 5_000_000)
    rows_duration_s: float = 2.0
    skip_original: bool = False
    skip_celery: bool = False
    skip_scaling: bool = False
    skip_rows: bool = False
    profile: bool = False
    sync_modes: bool = False
    postgres: bool = False
    data_dir: Path = DATA_DIR
    out_dir: Path = RESULTS_DIR


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {
        "duration_s": 1.5,
        "repetitions": 2,
        "scaling_workers": (1, 2),
        "scaling_producers": (1, 4),
        "scaling_duration_s": 1.0,
        "scaling_repetitions": 1,
        "rows": (BASE_ROWS, 1_000_000),
        "rows_duration_s": 1.0,
    },
    "smoke": {
        "producers": 2,
        "window": 4,
        "duration_s": 0.15,
        "warmup_s": 0.05,
        "repetitions": 1,
        "skip_scaling": True,
        "rows": (BASE_ROWS,),
        "rows_duration_s": 0.2,
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Our service against the echo ceiling, the original design and Celery.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="shorter runs, smaller grid (~2 min)")
    mode.add_argument("--smoke", action="store_true", help="a few seconds: proves the harness")
    p.add_argument("--duration", type=float, help="seconds per measured run")
    p.add_argument("--reps", type=int, help="repetitions per configuration (median reported)")
    p.add_argument("--producers", type=int, help="producer processes (default 4)")
    p.add_argument("--window", type=int, help="jobs in flight per producer (default 16)")
    p.add_argument("--workers", type=int, help="worker processes of each service (default 2)")
    p.add_argument(
        "--rows",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        help="data sizes for the data-size table, e.g. 18000,1000000",
    )
    for part in ("original", "celery", "scaling", "rows"):
        p.add_argument(f"--skip-{part}", action="store_true", help=f"do not measure {part}")
    p.add_argument("--profile", action="store_true", help="also run the broker under cProfile")
    p.add_argument(
        "--sync-modes",
        action="store_true",
        help="only ours per SQLite synchronous mode (and echo), loaded small mix",
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="only brokers on SQLite and on one PostgreSQL (1, 2, 3 brokers), loaded small mix",
    )
    p.add_argument("--data-dir", type=Path, help="where generated data sets are cached")
    p.add_argument("--out-dir", type=Path, help="where latest.json and latest.md go")
    return p.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    """The preset of the mode asked for, then every flag given on top of it."""
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    plan = replace(Plan(mode=mode), **PRESETS[mode])
    given: dict[str, Any] = {
        "duration_s": args.duration,
        "repetitions": args.reps,
        "producers": args.producers,
        "window": args.window,
        "workers": args.workers,
        "rows": args.rows,
        "data_dir": args.data_dir,
        "out_dir": args.out_dir,
    }
    for part in ("original", "celery", "scaling", "rows"):
        given[f"skip_{part}"] = True if getattr(args, f"skip_{part}") else None
    given["profile"] = args.profile or None
    given["sync_modes"] = args.sync_modes or None
    given["postgres"] = args.postgres or None
    return replace(plan, **{k: v for k, v in given.items() if v is not None})
