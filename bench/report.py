"""Turning runs into the report: medians, ratios against the same run's baselines, tables.

`summarise` takes the runs of one configuration and keeps their medians; `targets`
checks issue 5's targets against the figures of this run only; `markdown` renders every
table; `save` writes bench/results/latest.json (everything, every repetition) and
bench/results/latest.md (the tables, ready for the README).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.driver import RunResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ONE_PRODUCER_WINDOW = 64
"""Jobs in flight of the one-producer rows: `Client.map(window=64)` against raw DEALERs."""
MEDIAN_KEYS = (
    "jobs_per_s",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "service_cpu_ms_per_job",
    "client_cpu_ms_per_job",
    "other_cpu_share",
    "jobs",
    "errors",
)


def summarise(runs: list[RunResult], **about: Any) -> dict[str, Any]:
    """One configuration: what it was (`about`), each run's figures, and their medians."""
    figures = [run.figures() for run in runs]
    median = {key: statistics.median(f[key] for f in figures) for key in MEDIAN_KEYS}
    roles = sorted({role for f in figures for role in f["cpu_ms_per_job_by_role"]})
    median["cpu_ms_per_job_by_role"] = {
        role: statistics.median(f["cpu_ms_per_job_by_role"].get(role, 0.0) for f in figures)
        for role in roles
    }
    return {**about, "repetitions": len(runs), "median": median, "runs": figures}


def find(entries: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The first entry whose fields equal `match`."""
    for entry in entries:
        if all(entry.get(key) == value for key, value in match.items()):
            return entry
    return None


def _ratio(top: dict[str, Any] | None, bottom: dict[str, Any] | None, key: str) -> float | None:
    if top is None or bottom is None or not bottom["median"][key]:
        return None
    return float(top["median"][key] / bottom["median"][key])


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's targets, each with this run's value (None when not measured) and a verdict."""
    rows = results["comparison"]
    shape = results["meta"]["shape"]
    loaded = {"mix": "small", "producers": shape["producers"], "window": shape["window"]}
    single = {"mix": "small", "producers": 1, "window": 1}
    one_producer = {"mix": "small", "producers": 1, "window": ONE_PRODUCER_WINDOW}
    ours = find(rows, system="ours", **loaded)
    checks = [
        (
            "throughput ours / echo (small mix)",
            _ratio(ours, find(rows, system="echo", **loaded), "jobs_per_s"),
            ">=",
            0.7,
        ),
        (
            "throughput ours / original (small mix)",
            _ratio(ours, find(rows, system="original", mix="small"), "jobs_per_s"),
            ">=",
            100.0,
        ),
        (
            "throughput ours / celery (small mix)",
            _ratio(ours, find(rows, system="celery", **loaded), "jobs_per_s"),
            ">=",
            30.0,
        ),
        (
            "p50 latency ours / echo (P=1, W=1)",
            _against_echo(rows, "p50_ms", style="call", **single),
            "<=",
            2.0,
        ),
        (
            f"throughput ours / echo (P=1, W={ONE_PRODUCER_WINDOW})",
            _against_echo(rows, "jobs_per_s", style="map", **one_producer),
            ">=",
            0.7,
        ),
        *_data_checks(results.get("rows", [])),
    ]
    return [_verdict(name, value, op, goal) for name, value, op, goal in checks]


def _against_echo(rows: list[dict[str, Any]], key: str, style: str, **shape: Any) -> float | None:
    """Ours (driven as `style`) over echo, on the same shape."""
    return _ratio(
        find(rows, system="ours", style=style, **shape), find(rows, system="echo", **shape), key
    )


def _data_checks(sizes: list[dict[str, Any]]) -> list[tuple[str, float | None, str, float]]:
    small = next((s for s in sizes if s["rows"] < 100_000), None)
    million = next((s for s in sizes if s["rows"] == 1_000_000), None)
    if million is None:
        return []
    growth = None
    if small is not None and small["latency"] and million["latency"]:
        growth = million["latency"]["median"]["p50_ms"] / small["latency"]["median"]["p50_ms"]
    return [
        ("1M rows: worker load time (s)", million.get("load_s"), "<", 15.0),
        ("1M rows: worker resident memory VmHWM (MB)", million.get("vmhwm_mb"), "<", 300.0),
        ("1M rows: p50 latency / 18k rows p50 (P=1, W=1)", growth, "<=", 1.10),
    ]


def _verdict(name: str, value: float | None, op: str, goal: float) -> dict[str, Any]:
    met = None
    if value is not None:
        met = {"<": value < goal, "<=": value <= goal, ">=": value >= goal}[op]
    return {"target": name, "value": value, "goal": f"{op} {goal:g}", "met": met}


# --- markdown -------------------------------------------------------------------------


def _num(value: float | None) -> str:
    """Three significant figures or so: 12,345 / 123 / 12.3 / 1.23 / 0.123."""
    if value is None:
        return "n/a"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 else f"{value:.3f}"


def _comparison_table(rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> list[str]:
    lines = [
        "| system | mix | producers x in flight | jobs/s | p50 ms | p99 ms | p99.9 ms "
        "| service CPU ms/job | client CPU ms/job | others' CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        m = row["median"]
        lines.append(
            f"| {row['system']} | {row['mix']} | {_shape(row)} "
            f"| {_num(m['jobs_per_s'])} | {_num(m['p50_ms'])} | {_num(m['p99_ms'])} "
            f"| {_num(m['p999_ms'])} | {_num(m['service_cpu_ms_per_job'])} "
            f"| {_num(m['client_cpu_ms_per_job'])} | {m['other_cpu_share']:.0%} |"
        )
    lines += [f"| {s['system']} | skipped: {s['reason']} |||||||||" for s in skipped]
    return lines


def _shape(row: dict[str, Any]) -> str:
    """ "P x W", and how our client was driven when it was not `Client.map`."""
    call = " (one call at a time)" if row.get("style") == "call" else ""
    return f"{row['producers']} x {row['window']}{call}"


def _targets_table(checks: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | this run | goal | met |", "|---|---:|---|---|"]
    for check in checks:
        verdict = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
        lines.append(
            f"| {check['target']} | {_num(check['value'])} | {check['goal']} | {verdict} |"
        )
    return lines


def _scaling_table(cells: list[dict[str, Any]]) -> list[str]:
    workers = sorted({c["workers"] for c in cells})
    producers = sorted({c["producers"] for c in cells})
    lines = [
        "| workers \\ producers | " + " | ".join(str(p) for p in producers) + " |",
        "|---|" + "---:|" * len(producers),
    ]
    for count in workers:
        values = []
        for p in producers:
            cell = find(cells, workers=count, producers=p)
            values.append(_num(cell["median"]["jobs_per_s"]) if cell else "")
        lines.append(f"| {count} | " + " | ".join(values) + " |")
    return lines


def _rows_table(sizes: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| rows | file MB | worker load s (logged) | spawn to ready s | VmRSS MB | VmHWM MB "
        "| p50 ms (P=1, W=1, full mix) | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        latency = size["latency"]["median"] if size["latency"] else {}
        lines.append(
            f"| {size['rows']:,} | {_num(size['file_mb'])} | {_num(size['load_s'])} "
            f"| {_num(size['ready_s'])} | {_num(size['vmrss_mb'])} | {_num(size['vmhwm_mb'])} "
            f"| {_num(latency.get('p50_ms'))} | {_num(latency.get('p99_ms'))} |"
        )
    return lines


def _cpu_split(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| system | mix | producers x in flight | service CPU ms/job by process |",
        "|---|---|---|---|",
    ]
    for row in rows:
        parts = row["median"]["cpu_ms_per_job_by_role"]
        split = ", ".join(f"{role} {_num(ms)}" for role, ms in parts.items())
        lines.append(f"| {row['system']} | {row['mix']} | {_shape(row)} | {split} |")
    return lines


def _load(meta: dict[str, Any]) -> str:
    averages = meta.get("load_average_before")
    return " / ".join(f"{x:.2f}" for x in averages) if averages else "n/a"


def markdown(results: dict[str, Any]) -> str:
    """Every table of `results` as markdown."""
    meta = results["meta"]
    out = [
        f"Measured {meta['when']} on {meta['cpus']} CPUs ({meta['mode']} run, commit "
        f"{meta['commit']}): medians of {meta['repetitions']} run(s) of {meta['duration_s']:g} s "
        f"each, workers: {meta['workers']}, data: {meta['rows']:,} generated rows; load "
        f"average before: {_load(meta)}. \"Others' CPU\" is the machine's CPU used by "
        "processes outside the run, as a share of all cores.",
        "",
        *_comparison_table(results["comparison"], results["skipped"]),
        "",
        *_targets_table(results["targets"]),
    ]
    if results.get("scaling"):
        window = results["scaling"][0]["window"]
        out += ["", f"Throughput (jobs/s), small mix, {window} in flight per producer:", ""]
        out += _scaling_table(results["scaling"])
    if results.get("rows"):
        out += ["", "Data size (one worker):", "", *_rows_table(results["rows"])]
    out += ["", "Where the service's CPU goes:", "", *_cpu_split(results["comparison"])]
    return "\n".join(out) + "\n"


def save(results: dict[str, Any], out_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write latest.json and latest.md under `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def sync_modes_markdown(rows: list[dict[str, Any]]) -> str:
    """The `--sync-modes` table: ours per SQLite synchronous mode, beside echo."""
    echo = find(rows, system="echo")
    normal = find(rows, system="ours", sync="NORMAL")
    lines = [
        "| system | synchronous | jobs/s | p50 ms | p99 ms | / NORMAL jobs/s | / echo jobs/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        m = row["median"]
        to_normal, to_echo = (_ratio(row, base, "jobs_per_s") for base in (normal, echo))
        lines.append(
            f"| {row['system']} | {row.get('sync', '')} | {_num(m['jobs_per_s'])} "
            f"| {_num(m['p50_ms'])} | {_num(m['p99_ms'])} | {_num(to_normal)} | {_num(to_echo)} |"
        )
    return "\n".join(lines)
