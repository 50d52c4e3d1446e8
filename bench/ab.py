"""`./run.sh bench ab REV [REV...]` (python -m bench.ab): is a revision slower, beyond noise?

    ./run.sh bench ab f0119a2 HEAD [--shape full:4x16 --shape small:1x1] [--rounds 8]
                      [--seconds 2] [--workers 2] [--out-dir DIR]

Each REV (a git revision; `.` is the working tree as it is, uncommitted changes and all)
is exported into a private temporary directory (`git archive REV | tar -x`), and a
service of its own runs that code: a broker and `--workers` workers whose cwd and
PYTHONPATH are that export, on the bench's stand-in data set, with this venv's Python
(the dependencies are the same). Every service is up at once. The first REV is the
baseline and gets a twin arm, the same code on a service of its own: an A/A control.

Each round runs every shape (`MIX:PxW[:STYLE]`, P producers with W jobs in flight each,
`bench.driver`) on every arm in turn; the arms' order is reversed every other round and
rotated every two, so that neither a drift of the machine's load nor a place in the
order favours one arm. An unrecorded warm-up round comes first (each service's first
runs pay for cold caches). A producer imports the client of
the arm it drives (`bench.driver.import_code_of`, in the producer's process only).

One JSON line per run goes to `--out-dir` (arm, shape, round, jobs/s, p50, CPU ms per
job by role). On stdout, per shape and arm: median jobs/s and p50, and per round the
ratio to the baseline's run in the same round; the median of those paired ratios with a
bootstrap 90 % interval. The A/A row's interval is the machine's noise: an arm whose
interval lies outside it differs beyond noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.data import DATA_DIR, dataset
from bench.driver import MIXES, Shape, run, wait_for_quiet
from bench.harness import Service
from bench.plan import BASE_ROWS
from bench.report import RESULTS_DIR
from bench.service import ROOT, Target

T = TypeVar("T")
WORKING_TREE = "."
STYLES = ("map", "call")
DEFAULT_SHAPES = ("full:4x16", "small:1x1")
LEVEL = 0.90
RESAMPLES = 2_000
SEED = 19


def say(text: str) -> None:
    print(f"[ab] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Arm:
    """One side of the comparison: a label, the revision asked for, its code's directory."""

    label: str
    rev: str
    root: Path


# --- the pure parts ----------------------------------------------------------------------


def parse_shape(spec: str, seconds: float, warmup_s: float) -> Shape:
    """`MIX:PxW[:STYLE]` (e.g. `full:4x16`, `small:1x1:call`) as a driver Shape."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or "x" not in parts[1]:
        raise ValueError(f"shape {spec!r}: expected MIX:PxW[:STYLE], e.g. full:4x16")
    mix, load, style = parts[0], parts[1], parts[2] if len(parts) == 3 else "map"
    if mix not in MIXES:
        raise ValueError(f"shape {spec!r}: mix {mix!r} is not one of {', '.join(MIXES)}")
    if style not in STYLES:
        raise ValueError(f"shape {spec!r}: style {style!r} is not one of {', '.join(STYLES)}")
    producers, _, window = load.partition("x")
    if not (producers.isdigit() and window.isdigit() and int(producers) and int(window)):
        raise ValueError(f"shape {spec!r}: PxW must be two positive integers, e.g. 4x16")
    return Shape(int(producers), int(window), seconds, mix, warmup_s, style=style)


def shape_label(shape: Shape) -> str:
    label = f"{shape.mix}:{shape.producers}x{shape.window}"
    return label if shape.style == "map" else f"{label}:{shape.style}"


def arm_labels(revs: Sequence[str]) -> list[str]:
    """The arms' labels: the baseline, its A/A twin, then the others (repeats numbered)."""
    labels = [revs[0], f"{revs[0]} A/A", *revs[1:]]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


def round_order(arms: Sequence[T], number: int) -> list[T]:
    """The arms in round `number`: each pair of rounds mirrors one order, and each pair
    rotates the order by one more, so that over 2 x len(arms) rounds every arm runs in
    every position equally often (a middle arm never moving would bias the A/A twin)."""
    shift = (number // 2) % len(arms) if arms else 0
    rotated = [*arms[shift:], *arms[:shift]]
    return rotated if number % 2 == 0 else rotated[::-1]


def paired_ratios(
    rows: Sequence[dict[str, Any]], arm: str, baseline: str, shape: str, key: str
) -> list[float]:
    """Per round with both: `arm`'s `key` over the baseline's, for runs of `shape`."""
    by_round: dict[int, dict[str, float]] = {}
    for row in rows:
        if row["shape"] == shape:
            by_round.setdefault(row["round"], {})[row["arm"]] = row[key]
    return [
        runs[arm] / runs[baseline]
        for _round, runs in sorted(by_round.items())
        if arm in runs and runs.get(baseline)
    ]


def bootstrap_interval(
    values: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """The `level` percentile interval of the median of `values`, by bootstrap."""
    if not values:
        raise ValueError("no values to bootstrap")
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    tail = (1 - level) / 2
    return medians[round(tail * (resamples - 1))], medians[round((1 - tail) * (resamples - 1))]


def summary(rows: Sequence[dict[str, Any]], arms: Sequence[str], shapes: Sequence[str]) -> str:
    """The table: per shape and arm, medians and the paired ratios to the baseline."""
    lines = [
        "| shape | arm | runs | jobs/s | p50 ms | jobs/s ratio [90 %] | p50 ratio [90 %] |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    baseline, twin = arms[0], arms[1]
    for shape in shapes:
        for arm in arms:
            mine = [r for r in rows if r["arm"] == arm and r["shape"] == shape]
            if not mine:
                continue
            name = {baseline: f"{arm} (baseline)", twin: f"{arm} (the noise)"}.get(arm, arm)
            jobs = statistics.median(r["jobs_per_s"] for r in mine)
            p50 = statistics.median(r["p50_ms"] for r in mine)
            ratios = [_ratio(rows, arm, baseline, shape, key) for key in ("jobs_per_s", "p50_ms")]
            lines.append(
                f"| {shape} | {name} | {len(mine)} | {jobs:,.0f} | {p50:.2f} | "
                f"{ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(lines)


def _ratio(rows: Sequence[dict[str, Any]], arm: str, baseline: str, shape: str, key: str) -> str:
    if arm == baseline:
        return "1"
    ratios = paired_ratios(rows, arm, baseline, shape, key)
    if not ratios:
        return "-"
    low, high = bootstrap_interval(ratios)
    return f"{statistics.median(ratios):.3f} [{low:.3f}, {high:.3f}]"


# --- the arms' code and services ---------------------------------------------------------


def materialize(rev: str, into: Path) -> Path:
    """The code of `rev` in a directory: `.` is the working tree itself, any other
    revision is exported into `into` (which must not exist yet)."""
    if rev == WORKING_TREE:
        return ROOT
    commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"bench ab: {rev!r} is not a revision of this repository")
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", commit], cwd=ROOT, stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=False)
    if archive.stdout is not None:
        archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise SystemExit(f"bench ab: could not export {rev!r} into {into}")
    return into


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


class ArmService(Service):
    """Our service running the code under `root`; its producers import that code's client."""

    def __init__(self, root: Path, state_dir: Path, data: Path, workers: int) -> None:
        super().__init__(state_dir, data, workers)
        self.root = root
        self.env["PYTHONPATH"] = str(root)

    def target(self) -> Target:
        return Target("ours", self.client_endpoint, {"code_root": str(self.root)})


@contextlib.contextmanager
def services(
    revs: Sequence[str], workers: int, data: Path
) -> Iterator[list[tuple[Arm, ArmService]]]:
    """Every arm's service, started; on leaving, all stopped and their exports removed."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lss-ab-")))
        roots = {
            rev: materialize(rev, work / f"code-{n}") for n, rev in enumerate(dict.fromkeys(revs))
        }
        started = []
        for n, (label, rev) in enumerate(zip(arm_labels(revs), [revs[0], *revs], strict=True)):
            say(f"starting {label} (code: {roots[rev]})")
            service = ArmService(roots[rev], work / f"state-{n}", data, workers)
            started.append((Arm(label, rev, roots[rev]), stack.enter_context(service)))
        yield started


def record(arm: Arm, shape: Shape, number: int, result: Any) -> dict[str, Any]:
    """One run as a JSON-ready row."""
    cpu = {role: round(ms, 4) for role, ms in result.cpu_ms_per_job_by_role.items()}
    cpu["clients"] = round(result.client_cpu_ms_per_job, 4)
    return {
        "arm": arm.label,
        "rev": arm.rev,
        "shape": shape_label(shape),
        "round": number,
        "jobs_per_s": round(result.jobs_per_s, 1),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "cpu_ms_per_job": cpu,
        "jobs": result.jobs,
        "errors": result.errors,
    }


def measure(
    arms: list[tuple[Arm, ArmService]], shapes: Sequence[Shape], rounds: int, out: Path
) -> list[dict[str, Any]]:
    """A warm-up, then every round, every arm (in `round_order`), every shape."""
    rows = []
    for arm, service in arms:
        for shape in shapes:
            say(f"warm-up: {arm.label} {shape_label(shape)}")
            service.settle()
            run(service, shape)
    with out.open("w") as lines:
        for number in range(rounds):
            for arm, service in round_order(arms, number):
                for shape in shapes:
                    service.settle()
                    wait_for_quiet()
                    row = record(arm, shape, number, run(service, shape))
                    lines.write(json.dumps(row) + "\n")
                    lines.flush()
                    say(f"round {number + 1}/{rounds} {arm.label} {row['shape']}: "
                        f"{row['jobs_per_s']:,.0f} jobs/s, p50 {row['p50_ms']:.2f} ms")  # fmt: skip
                    rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("revs", nargs="+", metavar="REV", help="the first is the baseline")
    parser.add_argument("--shape", action="append", metavar="MIX:PxW[:STYLE]",
                        help=f"repeatable; default {' '.join(DEFAULT_SHAPES)}")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="each run's measured time")
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=BASE_ROWS)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    try:
        shapes = [parse_shape(s, args.seconds, args.warmup_s) for s in args.shape or DEFAULT_SHAPES]
    except ValueError as exc:
        parser.error(str(exc))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"ab-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.jsonl"
    with services(args.revs, args.workers, dataset(args.rows, args.data_dir)) as arms:
        rows = measure(arms, shapes, args.rounds, out)
    labels = [arm.label for arm, _service in arms]
    print(summary(rows, labels, [shape_label(s) for s in shapes]))
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
