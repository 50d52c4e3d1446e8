"""`lss` as users run it: a subprocess against the real service, checked against `Client`."""

from __future__ import annotations

import csv
import io
import json
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.harness import Service
from bench.reference import close_enough
from bench.service import ROOT

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
VEGETABLES = "Percent of adults who report consuming vegetables less than one time daily"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lss(
    service: Service, *args: str, stdin: str | None = None, endpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m clients.cli` against `service` (or `endpoint`)."""
    command = [
        sys.executable,
        "-m",
        "clients.cli",
        "--endpoint",
        endpoint or service.client_endpoint,
        *args,
    ]
    return subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env=service.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The failure contract: non-zero exit, one `lss: error:` line, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lss: error: "), result.stderr
    return lines[0]


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_submit_get_wait_jobs_and_num_jobs(service: Service) -> None:
    with service.client() as client:
        want = client.state_mean(OBESITY, "Ohio")
    job_id = ok(lss(service, "submit", "state_mean", "--question", OBESITY, "--state", "Ohio"))
    job_id = job_id.strip()
    assert job_id.startswith("job_id_")
    assert close_enough(json.loads(ok(lss(service, "wait", job_id))), want)
    got = json.loads(ok(lss(service, "get", job_id)))
    assert got["status"] == "done" and close_enough(got["data"], want)
    waited = lss(service, "submit", "best5", "--question", OBESITY, "--wait")
    assert len(json.loads(ok(waited))) == 5
    listing = json.loads(ok(lss(service, "jobs", "--json")))
    assert listing[job_id] == "done" and len(listing) == 3
    table = ok(lss(service, "jobs"))
    assert job_id in table and "done" in table
    assert ok(lss(service, "num-jobs")).strip() == "0"


@pytest.mark.shares_service
def test_status_as_text_json_and_prometheus(service: Service) -> None:
    text = ok(lss(service, "status"))
    assert "workers     2" in text and "queue" in text and "throughput" in text
    stats = json.loads(ok(lss(service, "status", "--json")))
    assert len(stats["workers"]) == 2 and stats["queue_depth"] == 0
    exposition = ok(lss(service, "status", "--prometheus"))
    assert "lss_up 1.0" in exposition and "lss_workers 2.0" in exposition


@pytest.mark.shares_service
def test_report_shows_every_statistic(service: Service) -> None:
    with service.client() as client:
        means = client.states_mean(VEGETABLES)
        state = next(iter(means))
        global_mean = client.global_mean(VEGETABLES)["global_mean"]
        by_state = client.state_mean_by_category(VEGETABLES, state)
    text = ok(lss(service, "report", "--question", VEGETABLES, "--state", state))
    for title in (
        "summary",
        "states_mean",
        "best5",
        "worst5",
        "mean_by_category",
        f"state_mean_by_category ({state})",
    ):
        assert title in text
    assert f"{global_mean:.2f}" in text
    assert all(name in text for name in means)
    as_json = json.loads(
        ok(lss(service, "report", "--question", VEGETABLES, "--state", state, "--json"))
    )
    assert len(as_json) == 10
    assert close_enough(as_json["state_mean_by_category"], by_state)
    without_state = json.loads(ok(lss(service, "report", "--question", VEGETABLES, "--json")))
    assert "state_mean" not in without_state and len(without_state) == 6


@pytest.mark.shares_service
def test_questions_by_id_states_by_code_and_years(service: Service) -> None:
    listed = json.loads(ok(lss(service, "questions", "--json")))
    assert {"id": "obesity", "question": OBESITY} in listed and len(listed) == 9
    assert "obesity" in ok(lss(service, "questions")) and "questions" in ok(lss(service, "--help"))
    with service.client() as client:
        trend = client.state_trend(OBESITY, "Ohio", years=(2015, 2018))
        mean = client.state_mean(OBESITY, "Ohio", years=(2015, 2018))
    assert list(trend["Ohio"]) == ["2015", "2016", "2017", "2018"]
    args = ("report", "--question", "OBESITY", "--state", "oh", "--years", "2015-2018")
    as_json = json.loads(ok(lss(service, *args, "--json")))
    assert close_enough(as_json["state_trend"], trend) and close_enough(as_json["state_mean"], mean)
    text = ok(lss(service, *args))
    assert "state_trend (Ohio)" in text and "have obesity (2015-2018)" in text
    line = one_line_error(lss(service, "submit", "best5", "--question", "obesty", "--wait"))
    assert "question not in the data set: 'obesty'; closest: 'obesity'" in line


@pytest.mark.shares_service
def test_plot_writes_a_png(service: Service, tmp_path: Path) -> None:
    out = tmp_path / "obesity.png"
    result = lss(service, "plot", "--question", OBESITY, "--out", str(out))
    ok(result)
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    assert width >= 800 and height >= 1000, (width, height)
    assert len(data) > 30_000


@pytest.mark.shares_service
def test_answers_as_csv_and_plots_as_svg(service: Service, tmp_path: Path) -> None:
    with service.client() as client:
        by_category = client.mean_by_category(OBESITY)
        job_id = client.submit("state_mean_by_category", question=OBESITY, state="Ohio")
        ohio = client.wait(job_id)["Ohio"]
    rows = list(csv.DictReader(io.StringIO(ok(lss(service, "get", job_id, "--format", "csv")))))
    assert [list(row) for row in rows[:1]] == [["state", "category", "stratum", "value"]]
    assert len(rows) == len(ohio) and all(row["state"] == "Ohio" for row in rows)
    waited = ok(lss(service, "wait", job_id, "--format", "csv"))
    assert waited == ok(lss(service, "get", job_id, "--format", "csv"))
    report = ok(lss(service, "report", "--question", OBESITY, "--format", "csv"))
    table = list(csv.DictReader(io.StringIO(report)))
    assert list(table[0]) == ["statistic", "state", "category", "stratum", "year", "value"]
    categories = [row for row in table if row["statistic"] == "mean_by_category"]
    assert len(categories) == len(by_category)
    first = categories[0]
    key = str((first["state"], first["category"], first["stratum"]))
    assert float(first["value"]) == by_category[key]  # every digit kept
    assert [row["value"] for row in table if row["statistic"] == "global_mean"] != [""]
    jobs = (
        json.dumps({"statistic": "global_mean", "question": OBESITY}) + '\n{"statistic": "best5"}\n'
    )
    bulk = lss(service, "bulk", "-", "--format", "csv", stdin=jobs)
    assert bulk.returncode == 1 and "1 of 2 job(s) failed" in bulk.stderr
    outcomes = list(csv.DictReader(io.StringIO(bulk.stdout)))
    assert [(row["line"], row["status"]) for row in outcomes] == [("1", "done"), ("2", "error")]
    for name, start in [("ranked.svg", b"<?xml"), ("ranked.png", PNG_SIGNATURE)]:
        ok(lss(service, "plot", "--question", OBESITY, "--out", str(tmp_path / name)))
        assert (tmp_path / name).read_bytes().startswith(start), name
    refused = lss(service, "plot", "--question", OBESITY, "--out", str(tmp_path / "ranked.jpg"))
    assert "name it .png or .svg" in one_line_error(refused) and refused.returncode == 2


@pytest.mark.shares_service
def test_bulk_in_and_out_as_json_lines(service: Service, tmp_path: Path) -> None:
    jobs = [
        {"statistic": "global_mean", "question": OBESITY},
        {"id": "mine", "statistic": "state_mean", "params": {"question": OBESITY, "state": "Ohio"}},
        {"statistic": "state_mean", "question": OBESITY, "state": "Atlantis"},
    ] * 20
    source = tmp_path / "jobs.jsonl"
    source.write_text("".join(json.dumps(job) + "\n" for job in jobs) + "\n")
    out = tmp_path / "answers.jsonl"
    result = lss(service, "bulk", str(source), "--out", str(out), "--window", "7", "--progress")
    assert result.returncode == 1 and "20 of 60 job(s) failed" in result.stderr
    assert "60/60" in result.stderr  # the progress bar reached the end
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["line"] for a in answers] == list(range(1, 61))
    with service.client() as client:
        want = client.state_mean(OBESITY, "Ohio")
    mine = answers[1]
    assert mine["id"] == "mine" and mine["status"] == "done" and close_enough(mine["data"], want)
    assert answers[2]["status"] == "error" and "no data for state" in answers[2]["reason"]
    good = "".join(json.dumps(job) + "\n" for job in jobs[:2])
    piped = ok(lss(service, "bulk", "-", stdin=good))
    assert [json.loads(line)["status"] for line in piped.splitlines()] == ["done", "done"]


@pytest.mark.shares_service
def test_errors_are_one_line_and_a_non_zero_exit(service: Service, tmp_path: Path) -> None:
    nowhere = f"tcp://127.0.0.1:{free_loopback_port()}"
    line = one_line_error(lss(service, "--timeout", "0.3", "num-jobs", endpoint=nowhere))
    assert "no reply" in line
    line = one_line_error(
        lss(
            service,
            "--timeout",
            "0.3",
            "plot",
            "--question",
            OBESITY,
            "--out",
            str(tmp_path / "x.png"),
            endpoint=nowhere,
        )
    )
    assert "no reply" in line
    line = one_line_error(lss(service, "report", "--question", OBESITY, "--state", "Atlantis"))
    assert "no data for state 'Atlantis'" in line
    line = one_line_error(
        lss(service, "submit", "state_mean", "--question", OBESITY, "--state", "Atlantis", "--wait")
    )
    assert "no data for state" in line
    assert "question not in the data set" in one_line_error(
        lss(service, "report", "--question", "Is it sunny?")
    )
    assert "Invalid job_id" in one_line_error(lss(service, "wait", "job_id_424242"))
    assert "needs --state" in one_line_error(
        lss(service, "submit", "state_mean", "--question", "Q")
    )
    assert "line 2" in one_line_error(lss(service, "bulk", "-", stdin='{"statistic": "best5"}\n[]'))
    assert "cannot use the endpoint" in one_line_error(lss(service, "jobs", endpoint="nonsense"))
    failed_get = lss(service, "get", "job_id_424242")
    assert failed_get.returncode == 1 and json.loads(failed_get.stdout)["status"] == "error"


def test_shutdown_then_submissions_are_refused(service_factory: Callable[..., Service]) -> None:
    service = service_factory()  # no workers: the queued job keeps the broker draining
    ok(lss(service, "submit", "best5", "--question", OBESITY))
    assert ok(lss(service, "shutdown")).startswith("shutting down")
    line = one_line_error(lss(service, "submit", "best5", "--question", OBESITY))
    assert "shutting down" in line
