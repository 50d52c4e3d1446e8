"""The benchmark's data sets: generated stand-ins, cached by row count under var/bench-data/."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.service import ROOT
from workers.standin import DEFAULT_SEED, generate

DATA_DIR = ROOT / "var" / "bench-data"


def cached_path(rows: int, data_dir: Path = DATA_DIR) -> Path:
    """Where the stand-in with `rows` rows (default seed) is cached."""
    return data_dir / f"standin-{rows}-seed{DEFAULT_SEED}.csv"


def dataset(rows: int, data_dir: Path = DATA_DIR) -> Path:
    """The stand-in with `rows` rows (default seed), generated on first use and then reused."""
    path = cached_path(rows, data_dir)
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"[bench] generating {rows:,} rows into {path} (cached for next time)...",
            file=sys.stderr,
            flush=True,
        )
        started = time.monotonic()
        generate(path, rows=rows)  # written aside, then renamed: never half a file
        print(f"[bench] generated in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return path
