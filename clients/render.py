"""What the `lss` command line shows: answers as plain-text tables, and the ranking plot.

This module owns presentation only: it takes answers and `stats` replies that the CLI
fetched and turns them into text or a PNG; it never talks to the broker. Numbers are
shown with two decimals (answers are percentages compared with a 0.01 tolerance); use
`--json` on the command line for the exact values. Plotting imports matplotlib lazily
(the `plot` extra) and draws on the Agg backend, without pyplot's global state.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from protocol.logs import shown

Answer = Mapping[str, Any]

TITLE_WIDTH = 70
BEST_COLOUR, WORST_COLOUR, OTHER_COLOUR, NATIONAL_COLOUR = (
    "#1a9850",
    "#d73027",
    "#b0b0b0",
    "#4575b4",
)


def number(value: object) -> str:
    """A cell: floats with two decimals, everything else as text."""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], indent: str = "  ") -> str:
    """A plain-text table; columns holding only numbers are right-aligned."""
    raw = [list(row) for row in rows]
    cells = [[number(v) for v in row] for row in raw]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [
        bool(raw) and all(isinstance(row[i], int | float) for row in raw)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def section(title: str, body: str) -> str:
    return f"{title}\n{body}\n"


def split_key(key: str) -> tuple[str, ...]:
    """ "('Ohio', 'Age (years)', '18 - 24')" -> the tuple; any other text -> (text,)."""
    try:
        value = ast.literal_eval(key)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return (key,)
    if isinstance(value, tuple) and all(isinstance(part, str) for part in value):
        return value
    return (key,)


def wrap_title(text: str, width: int = TITLE_WIDTH) -> str:
    return textwrap.fill(text, width=width)


# --- report -----------------------------------------------------------------------


def report(question: str, answers: Mapping[str, Answer], state: str | None = None) -> str:
    """Every statistic of `answers` (keyed by statistic name) as titled tables.

    The short ones first (a summary, the ranking, best and worst five), then the
    per-category means, the longest table, last.
    """
    means, diffs = answers["states_mean"], answers["diff_from_mean"]
    ranked = [(i, s, v, diffs.get(s, "")) for i, (s, v) in enumerate(means.items(), 1)]
    parts = [
        wrap_title(question) + "\n",
        section("summary", table(["statistic", "value"], _summary(answers, state))),
        section(
            f"states_mean and diff_from_mean (global - state), {len(means)} locations",
            table(["#", "state", "mean", "global - state"], ranked),
        ),
        section("best5", _ranking(answers["best5"])),
        section("worst5", _ranking(answers["worst5"])),
    ]
    if state is not None:
        by_category = answers["state_mean_by_category"][state]
        parts.append(section(f"state_mean_by_category ({state})", _categories(by_category)))
    parts.append(section("mean_by_category", _categories(answers["mean_by_category"])))
    return "\n".join(parts)


def _summary(answers: Mapping[str, Answer], state: str | None) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("global_mean", answers["global_mean"]["global_mean"])]
    if state is not None:
        rows.append((f"state_mean ({state})", answers["state_mean"][state]))
        diff = answers["state_diff_from_mean"][state]
        rows.append((f"state_diff_from_mean ({state}, global - state)", diff))
    return rows


def _ranking(answer: Answer) -> str:
    return table(["#", "state", "mean"], [(i, s, v) for i, (s, v) in enumerate(answer.items(), 1)])


def _categories(answer: Answer) -> str:
    rows = [(*split_key(key), value) for key, value in answer.items()]
    headers = _CATEGORY_HEADERS.get(frozenset(len(row) for row in rows))
    if headers is None:  # keys not in the contract's shape: show them as they are
        return table(["group", "mean"], list(answer.items()))
    return table([*headers, "mean"], rows)


_CATEGORY_HEADERS = {
    frozenset({4}): ("state", "category", "stratum"),
    frozenset({3}): ("category", "stratum"),
}


# --- status -----------------------------------------------------------------------


def status(stats: Mapping[str, Any]) -> str:
    """The broker's `stats` reply: workers, queue, jobs by status, throughput."""
    workers = list(stats.get("workers", []))
    state = "shutting down" if stats.get("shutting_down") else "serving"
    jobs = stats.get("jobs", {})
    lines = [
        f"broker      {shown(stats.get('broker_id', '?'))} ({state})",
        f"data        sha256 {str(stats.get('fingerprint') or '?')[:12]}",
        f"queue       {stats.get('queue_depth', 0)} waiting, {stats.get('in_flight', 0)} running",
        "jobs        " + "   ".join(f"{name} {count}" for name, count in jobs.items()),
        f"last job    {stats.get('last_job') or '-'}",
        *_throughput(stats.get("rates_per_s", {})),
        f"workers     {len(workers)}",
    ]
    if workers:
        columns = ["id", "pid", "host", "credit", "in_flight"]
        rows = [[_safe(w.get(c, "")) for c in columns] for w in workers]
        lines.append(table(["worker", "pid", "host", "credit", "in flight"], rows))
    return "\n".join(lines)


def _safe(value: object) -> object:
    """A peer-supplied cell (a worker names its own id and host): text with control
    characters escaped and cut short, so it cannot drive the terminal; numbers as is."""
    return value if isinstance(value, int | float) else shown(value)


def _throughput(rates: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines: list[str] = []
    for window, events in rates.items():
        shown = ", ".join(f"{event} {rate:.1f}/s" for event, rate in sorted(events.items()))
        label = "throughput" if not lines else ""
        lines.append(f"{label:<12}last {window}: {shown or 'nothing'}")
    return lines or ["throughput  nothing yet"]


def jobs(listing: Mapping[str, str]) -> str:
    if not listing:
        return "no jobs yet"
    return table(["job", "status"], listing.items())


# --- plot -------------------------------------------------------------------------


def plot_states(question: str, answers: Mapping[str, Answer], out: Path, dpi: int = 120) -> None:
    """Write a PNG of `states_mean` ranked from best (top) to worst, `global_mean` as a
    dashed line, the best5 and worst5 locations highlighted, titled with the question.

    `answers` holds the states_mean, global_mean, best5 and worst5 answers by name.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ranked = _best_first(answers)
    figure = Figure(figsize=(9, 3 + 0.2 * len(ranked)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    _bars(axes, ranked, answers)
    national = float(answers["global_mean"]["global_mean"])
    line = axes.axvline(national, color="black", linestyle="--", linewidth=1, zorder=2.5)
    line.set_label(f"national mean (global_mean) {national:.2f}")
    lowest_best = len(ranked) > 1 and ranked[0][1] <= ranked[-1][1]
    direction = "lowest" if lowest_best else "highest"
    axes.set_xlabel(f"mean Data_Value (%), 2011-2022; best ({direction}) at the top")
    axes.set_title(wrap_title(question, 60), fontsize=10)
    _legend(figure, line, "National" in answers["states_mean"])
    figure.savefig(out, dpi=dpi, format="png")


def _bars(axes: Any, ranked: list[tuple[str, float]], answers: Mapping[str, Answer]) -> None:
    names = [name for name, _ in ranked]
    values = [value for _, value in ranked]
    positions = range(len(ranked))
    axes.barh(positions, values, color=[_colour(name, answers) for name in names])
    axes.set_yticks(positions, names, fontsize=7)
    axes.set_ylim(len(ranked) - 0.5, -0.5)  # the first (best) at the top
    axes.set_xlim(0, max(values, default=1.0) * 1.1)
    label_box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5}
    for y, value in zip(positions, values, strict=True):
        axes.text(value, y, f" {value:.1f}", va="center", fontsize=6, bbox=label_box, zorder=3)


def _legend(figure: Any, line: Any, with_national: bool) -> None:
    from matplotlib.patches import Patch

    legend = [(BEST_COLOUR, "best five"), (WORST_COLOUR, "worst five")]
    if with_national:
        legend.append((NATIONAL_COLOUR, "National (a location in the data)"))
    legend.append((OTHER_COLOUR, "other locations"))
    handles = [Patch(color=colour, label=label) for colour, label in legend]
    figure.legend(handles=[*handles, line], loc="outside lower center", ncols=3, fontsize=7)


def _best_first(answers: Mapping[str, Answer]) -> list[tuple[str, float]]:
    """`states_mean` (ascending) reversed when the best five are the highest means."""
    ranked = [(name, float(value)) for name, value in answers["states_mean"].items()]
    ranked.sort(key=lambda item: item[1])
    best = answers["best5"]
    if ranked and best and ranked[0][0] not in best:
        ranked.reverse()
    return ranked


def _colour(name: str, answers: Mapping[str, Answer]) -> str:
    if name in answers["best5"]:
        return BEST_COLOUR
    if name in answers["worst5"]:
        return WORST_COLOUR
    return NATIONAL_COLOUR if name == "National" else OTHER_COLOUR
