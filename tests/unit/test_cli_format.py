"""The command line's parsing and presentation, on hand-written answers (no service)."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

import pytest

from clients import cli, render, tidy
from protocol.errors import JobCancelled, JobFailed, LssError
from protocol.messages import DEFAULT_PRIORITY

QUESTION = "Percent of adults aged 18 years and older who have obesity"
ANSWERS: dict[str, dict[str, Any]] = {
    "states_mean": {"Colorado": 20.0, "Ohio": 30.0, "Texas": 40.0},
    "global_mean": {"global_mean": 31.0},
    "best5": {"Colorado": 20.0, "Ohio": 30.0, "Texas": 40.0},
    "worst5": {"Texas": 40.0, "Ohio": 30.0, "Colorado": 20.0},
    "diff_from_mean": {"Colorado": 11.0, "Ohio": 1.0, "Texas": -9.0},
    "mean_by_category": {
        "('Ohio', 'Gender', 'Female')": 26.5,
        "('Ohio', 'Gender', 'Male')": 22.25,
    },
    "state_mean": {"Ohio": 30.0},
    "state_diff_from_mean": {"Ohio": 1.0},
    "state_mean_by_category": {"Ohio": {"('Gender', 'Female')": 26.5}},
}


def test_table_aligns_numbers_right_and_text_left() -> None:
    text = render.table(["state", "mean"], [("Ohio", 30.0), ("New York", 5.125)], indent="")
    assert text.splitlines() == [
        "state      mean",
        "--------  -----",
        "Ohio      30.00",
        "New York   5.12",
    ]


def test_an_empty_table_has_its_header() -> None:
    assert render.table(["job", "status"], [], indent="").splitlines()[0] == "job  status"


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("('Ohio', 'Age (years)', '18 - 24')", ("Ohio", "Age (years)", "18 - 24")),
        ("('Gender', 'Male')", ("Gender", "Male")),
        ("not a tuple", ("not a tuple",)),
        ("(1, 2)", ("(1, 2)",)),
        ("__import__('os')", ("__import__('os')",)),
    ],
)
def test_split_key_reads_only_tuples_of_strings(key: str, parts: tuple[str, ...]) -> None:
    assert tidy.split_key(key) == parts


def test_report_has_every_statistic_and_the_state_only_when_asked() -> None:
    with_state = render.report(QUESTION, ANSWERS, "Ohio")
    for text in ("summary", "31.00", "best5", "worst5", "mean_by_category", "Female", "22.25"):
        assert text in with_state
    assert "state_mean (Ohio)" in with_state and "state_mean_by_category (Ohio)" in with_state
    without = render.report(QUESTION, ANSWERS)
    assert "state_mean (Ohio)" not in without and "state_mean_by_category" not in without
    ranking = [line.split()[1] for line in without.splitlines() if line.strip()[:2] in ("1 ", "3 ")]
    assert ranking[:2] == ["Colorado", "Texas"]  # states_mean keeps the answer's order


def test_status_shows_workers_queue_jobs_and_throughput() -> None:
    stats = {
        "broker_id": "b1",
        "workers": [{"id": "w1", "pid": 7, "host": "h", "credit": 4, "in_flight": 2}],
        "queue_depth": 3,
        "in_flight": 2,
        "jobs": {"running": 5, "done": 10, "error": 1},
        "rates_per_s": {"10s": {"done": 2.5}, "60s": {}},
        "shutting_down": True,
        "key": {"quota_bytes": 1024 << 20, "stored_bytes": 3 << 19},
    }
    text = render.status(stats)
    assert "this key    1.5 MB of jobs and answers stored of a 1024 MB quota" in text
    assert "b1 (shutting down)" in text and "3 waiting, 2 running" in text
    assert "running 5   done 10   error 1" in text
    assert "last 10s: done 2.5/s" in text and "last 60s: nothing" in text
    assert "w1" in text.splitlines()[-1]
    assert "workers     1\n" in text
    cut = render.status({**stats, "workers_registered": 1500})  # a broker lists 1024 at most
    assert "workers     1500 (1499 not listed)" in cut


def test_long_titles_are_wrapped() -> None:
    title = render.wrap_title("word " * 40, width=30)
    assert all(len(line) <= 30 for line in title.splitlines()) and title.count("\n") >= 5


def test_plot_writes_a_png_without_a_display(tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    render.plot_states(QUESTION * 3, ANSWERS, out, dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_writes_svg_for_svg_and_png_for_png(tmp_path: Path) -> None:
    svg, png = tmp_path / "plot.svg", tmp_path / "plot.PNG"
    render.plot_states(QUESTION, ANSWERS, svg, dpi=50, standin=True)
    render.plot_states(QUESTION, ANSWERS, png, dpi=50)
    text = svg.read_text()
    assert text.startswith("<?xml") and "<svg" in text and render.STANDIN_NOTE in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_labels_its_years_and_the_mean_over_all_rows_apart_from_national(
    tmp_path: Path,
) -> None:
    """The dashed line is global_mean, which the contract says is not National's number:
    it was labelled "national mean" beside a bar named National. The axis said 2011-2022
    whatever --years asked."""
    with_national = {**ANSWERS, "states_mean": {**ANSWERS["states_mean"], "National": 33.0}}
    svg = tmp_path / "plot.svg"
    render.plot_states(QUESTION, with_national, svg, dpi=50, years=(2015, 2016))
    text = svg.read_text()
    assert "mean over all rows, National included (global_mean) 31.00" in text
    assert "national mean" not in text.lower()
    assert "mean Data_Value (%), 2015-2016;" in text and "2011-2022" not in text
    render.plot_states(QUESTION, ANSWERS, svg, dpi=50)
    assert "mean Data_Value (%), 2011-2022;" in svg.read_text()


@pytest.mark.parametrize("name", ["plot.jpg", "plot", "plot.svg.gz", "plot.pdf"])
def test_plot_refuses_other_suffixes_before_asking_anyone(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = "tcp://127.0.0.1:9"  # never asked: the suffix is refused first
    argv = ["--endpoint", nowhere, "plot", "--question", QUESTION, "--out", str(tmp_path / name)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lss: error: cannot tell the image format")
    assert "name it .png or .svg" in err and not (tmp_path / name).exists()


def test_bulk_csv_writes_a_row_per_number_and_one_per_failed_job() -> None:
    out = io.StringIO()
    write = cli._bulk_writer("csv", out)
    job = {"line": 1, "statistic": "mean_by_category", "params": {"question": "Q"}, "id": 7}
    write(job, {"status": "done", "data": ANSWERS["mean_by_category"]})
    failed = {"line": 2, "statistic": "state_mean", "params": {"question": "Q", "state": "X"}}
    write(failed, {"status": "error", "reason": "no data for state 'X'"})
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(cli.BULK_COLUMNS)
    assert [(r["line"], r["id"], r["stratum"], r["value"]) for r in rows] == [
        ("1", "7", "Female", "26.5"),
        ("1", "7", "Male", "22.25"),
        ("2", "", "", ""),
    ]
    assert rows[0]["params"] == '{"question": "Q"}' and rows[0]["state"] == "Ohio"
    assert rows[2]["status"] == "error" and rows[2]["reason"] == "no data for state 'X'"


def test_format_flags() -> None:
    parse = cli.build_parser().parse_args
    assert parse(["get", "job_id_1"]).format == "json"
    assert parse(["get", "job_id_1", "--format", "csv"]).format == "csv"
    assert parse(["report", "--question", "Q"]).format is None  # tables
    assert parse(["report", "--question", "Q", "--json"]).format == "json"
    assert parse(["bulk", "-", "--format", "csv"]).format == "csv"
    with pytest.raises(SystemExit):
        parse(["get", "job_id_1", "--format", "xml"])


def test_submit_wait_takes_format_and_csv_needs_wait(capsys: pytest.CaptureFixture[str]) -> None:
    parse = cli.build_parser().parse_args
    assert parse(["submit", "best5", "--question", "Q", "--wait"]).format == "json"
    assert (
        parse(["submit", "best5", "--question", "Q", "--wait", "--format", "csv"]).format == "csv"
    )
    nowhere = "tcp://127.0.0.1:9"  # never asked: refused first
    assert (
        cli.main(["--endpoint", nowhere, "submit", "best5", "--question", "Q", "--format", "csv"])
        == 2
    )
    assert capsys.readouterr().err == "lss: error: --format csv needs --wait: a job id has no CSV\n"


def test_a_failed_or_unfinished_job_has_no_csv_answer() -> None:
    with pytest.raises(JobFailed, match="no data"):
        cli._done_answer("job_id_1", {"status": "error", "reason": "no data"})
    with pytest.raises(LssError, match="job_id_1 is still running: no answer yet"):
        cli._done_answer("job_id_1", {"status": "running"})
    assert cli._done_answer("job_id_1", {"status": "done", "data": {"a": 1}}) == {"a": 1}


def test_a_cancelled_job_has_no_csv_answer_and_says_why() -> None:
    with pytest.raises(JobCancelled, match="job_id_1 was cancelled: deadline passed"):
        cli._done_answer("job_id_1", {"status": "cancelled", "reason": "deadline passed"})


def test_priority_and_deadline_on_submit_and_bulk() -> None:
    parse = cli.build_parser().parse_args
    for command in (["submit", "best5", "--question", "Q"], ["bulk", "-"]):
        given = parse([*command, "--priority", "0", "--deadline", "2.5"])
        assert (given.priority, given.deadline) == (0, 2.5)
        assert (parse(command).priority, parse(command).deadline) == (DEFAULT_PRIORITY, None)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--priority", "10"], "priority must be from 0 (first) to 9 (last), got 10"),
        (["--priority", "high"], "want a whole number, got 'high'"),
        (["--priority", "2.5"], "want a whole number, got '2.5'"),
        (["--deadline", "0"], "deadline must be above 0"),
        (["--deadline", "nan"], "deadline must be above 0"),
        (["--deadline", "soon"], "want a number, got 'soon'"),
    ],
)
def test_bad_priorities_and_deadlines_are_usage_errors(
    capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    for command in (["submit", "best5", "--question", "Q"], ["bulk", "-"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["--endpoint", "tcp://127.0.0.1:9", *command, *flags])
        assert exited.value.code == 2
        assert says in capsys.readouterr().err


def test_cancel_takes_one_or_more_ids_and_jobs_lists_the_cancelled() -> None:
    parse = cli.build_parser().parse_args
    assert parse(["cancel", "job_id_1", "job_id_2"]).job_ids == ["job_id_1", "job_id_2"]
    with pytest.raises(SystemExit):
        parse(["cancel"])
    assert parse(["jobs", "--status", "cancelled"]).status == "cancelled"


def test_jobs_refuses_a_limit_below_one_before_asking_anyone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--endpoint", "tcp://127.0.0.1:9", "jobs", "--limit", "0"]) == 2
    assert capsys.readouterr().err == "lss: error: --limit must be positive\n"


def test_jobs_after_takes_a_job_id_or_its_number() -> None:
    assert cli._after(None) == 0 and cli._after("job_id_12") == 12 and cli._after("12") == 12
    with pytest.raises(cli.UsageError, match="--after wants a job id"):
        cli._after("twelve")


def test_best_first_follows_the_direction_of_best5() -> None:
    assert [s for s, _ in render._best_first(ANSWERS)] == ["Colorado", "Ohio", "Texas"]
    highest_best = {**ANSWERS, "best5": {"Texas": 40.0}}
    assert [s for s, _ in render._best_first(highest_best)] == ["Texas", "Ohio", "Colorado"]


def test_bulk_lines_flat_or_with_params() -> None:
    flat = cli._bulk_job(1, '{"statistic": "state_mean", "question": "Q", "state": "S"}')
    assert flat == {"line": 1, "statistic": "state_mean", "params": {"question": "Q", "state": "S"}}
    nested = cli._bulk_job(2, '{"id": 9, "statistic": "best5", "params": {"question": "Q"}}')
    assert nested == {"line": 2, "statistic": "best5", "params": {"question": "Q"}, "id": 9}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{oops", "line 4: not JSON"),
        ("[1]", "line 4: want an object"),
        ('{"statistic": 3}', "line 4: want an object"),
        ('{"statistic": "best5", "params": [1]}', 'line 4: "params" must be an object'),
        # Python's json reads these; echoed back, they made answers.jsonl invalid JSON.
        ('{"statistic": "best5", "years": [NaN, 2016]}', "line 4: not JSON .NaN is not JSON"),
        ('{"statistic": "best5", "x": -Infinity}', "line 4: not JSON .-Infinity is not JSON"),
    ],
)
def test_bad_bulk_lines_name_their_line(line: str, reason: str) -> None:
    with pytest.raises(cli.UsageError, match=reason):
        cli._bulk_job(4, line)


def test_submit_parameters() -> None:
    assert cli._params("best5", "Q", None, ["x=1"]) == {"question": "Q", "x": "1"}
    with pytest.raises(cli.UsageError, match="needs --state"):
        cli._params("state_mean", "Q", None, [])
    with pytest.raises(cli.UsageError, match="KEY=VALUE"):
        cli._params("best5", "Q", None, ["novalue"])


def test_usage_errors_exit_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--timeout", "0", "num-jobs"]) == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["no-such-command"])
    assert exited.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_every_command_has_a_handler() -> None:
    parser = cli.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    names = set(actions[0].choices)
    assert names == {
        "questions",
        "submit",
        "get",
        "wait",
        "cancel",
        "jobs",
        "num-jobs",
        "shutdown",
        "status",
        "report",
        "plot",
        "bulk",
    }
    for sub in actions[0].choices.values():
        assert callable(sub.get_default("handler"))


def test_status_escapes_what_workers_say_about_themselves() -> None:
    stats = {
        "workers": [{"id": "w\n1", "pid": 7, "host": "h\x1b[2J\nforged", "credit": 8,
                     "in_flight": 0}],
        "jobs": {},
    }  # fmt: skip
    text = render.status(stats)
    assert "\x1b" not in text and "h\\x1b[2J\\nforged" in text and "w\\n1" in text
