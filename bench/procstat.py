"""What the benchmark reads about processes from /proc: CPU time, memory, descendants.

Linux only, standard library only (no psutil). CPU time is user + system time of every
thread of a process; `tree_cpu_s` adds the live descendants (Celery's pool children).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the live process `pid` (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, found by scanning parent ids."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found.extend(below)
        todo.extend(below)
    return found


def tree_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds of `pids` and all their live descendants, each counted once."""
    everyone = set(pids)
    for pid in list(everyone):
        everyone.update(descendants(pid))
    return sum(cpu_s(pid) for pid in everyone)


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM), in MB, from /proc/<pid>/status."""
    out: dict[str, float] = {}
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024  # the kernel reports kB
    return out
