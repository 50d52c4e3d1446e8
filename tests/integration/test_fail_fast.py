"""Processes that cannot serve stop at once with one line saying why (issue 21).

A broker whose port is taken or whose data file is missing, and a worker supervisor
whose workers cannot load the data: each exits non-zero within seconds, with one log
line naming the cause and the setting to change, and no traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import Service
from bench.service import ROOT
from protocol import config
from protocol.lifetime import child_env

pytestmark = pytest.mark.integration

EXIT_TIMEOUT_S = 30.0  # under load; each takes 1-3 s on an idle machine


def run(module: str, *args: str, state: Path) -> tuple[int, list[str]]:
    """Run `python -m module args` to its end: its exit code and its stderr lines."""
    done = subprocess.run(
        [sys.executable, "-m", module, f"--state-dir={state}", *args],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=EXIT_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    return done.returncode, done.stderr.splitlines()


def errors(lines: list[str]) -> list[str]:
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    return [line for line in lines if " ERROR " in line]


def test_a_broker_on_a_taken_port_names_it_and_its_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        code, lines = run("broker", f"--client-endpoint={endpoint}", state=tmp_path)
    assert code == config.EXIT_FAILURE
    (line,) = errors(lines)
    assert f"cannot listen on {endpoint}: address already in use" in line
    assert "LSS_CLIENT_ENDPOINT or --client-endpoint" in line
    assert not (tmp_path / "jobs.sqlite3").exists(), "it must not touch the store in use"


def test_a_broker_without_its_data_file_says_so(tmp_path: Path) -> None:
    code, lines = run("broker", f"--data={tmp_path / 'nope.csv'}", state=tmp_path)
    assert code == config.EXIT_DATA
    (line,) = errors(lines)
    assert "nope.csv: No such file or directory (set LSS_DATA or --data)" in line


def test_workers_that_cannot_load_the_data_stop_and_tell_the_broker(
    service: Service, tmp_path: Path, standin_csv: Path
) -> None:
    bad = tmp_path / "bad.csv"
    with open(standin_csv) as good:
        bad.write_text(good.readline().replace(",Question,", ",question,"))
    code, lines = run(
        "workers", "-n", "2", f"--data={bad}", f"--connect={service.worker_endpoint}",
        state=tmp_path / "workers",
    )  # fmt: skip
    assert code == config.EXIT_DATA
    (line,) = errors(lines)
    why = f"{bad}: missing required column(s) 'Question' (found 'question'"
    assert f"no worker can load the data: {why}" in line
    with service.client() as client:  # its own workers are registered: it serves
        assert client.stats()["no_worker"] is None
