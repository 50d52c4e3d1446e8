"""A worker's report to its supervisor, and the supervisor's count of alike failures."""

from __future__ import annotations

import os

from workers import report
from workers.supervisor import FailureStreak


def test_the_supervisor_reads_what_the_worker_reported() -> None:
    read_fd, write_fd = os.pipe()
    reader = report.ReportReader(read_fd)
    reader.poll()  # nothing yet: it does not block
    assert not reader.loaded and reader.unloadable is None
    report.send(write_fd, report.UNLOADABLE, "a.csv: missing\nrequired column(s) 'Question'")
    os.close(write_fd)
    reader.poll()
    assert reader.unloadable == "a.csv: missing required column(s) 'Question'"
    assert not reader.loaded
    reader.close()


def test_no_supervisor_no_report() -> None:
    report.send(None, report.LOADED)  # a worker started alone tells nobody


def test_a_streak_counts_alike_failures_in_a_row() -> None:
    streak = FailureStreak()
    assert streak.add("missing 'Question'") == 1
    assert streak.add("missing 'Question'") == 2
    assert streak.add("no such file") == 1, "another reason starts again"
    streak.reset()  # a worker loaded the data meanwhile
    assert streak.add("no such file") == 1
