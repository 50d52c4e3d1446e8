"""The README's examples run as written: its Python example and its `lss` lines, against
a real service (`shared_service`: a broker and two workers on free ports)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import Service
from bench.service import ROOT

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()
RUN_TIMEOUT_S = 120.0


def python_example() -> str:
    """The fenced Python block of "Using it from Python"."""
    section = README.split("## Using it from Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "the README has no Python example"
    return found.group(1)


def lss_lines() -> str:
    """The indented block after the **Command line** paragraph."""
    section = README.split("**Command line**", 1)[1]
    found = re.search(r"\n\n((?:    .*\n)+)", section)
    assert found, "the README has no lss example"
    return "\n".join(line[4:] for line in found.group(1).splitlines())


def test_the_python_example_runs(shared_service: Service, tmp_path: Path) -> None:
    env = {**shared_service.env, "LSS_CLIENT_ENDPOINT": shared_service.client_endpoint}
    done = subprocess.run(
        [sys.executable, "-c", python_example()], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_lss_lines_run(shared_service: Service, tmp_path: Path) -> None:
    """In a directory of their own, where `.venv` is the one the tests run in (the one
    ./run.sh made), so that `source .venv/bin/activate` works as written."""
    (tmp_path / ".venv").symlink_to(sys.prefix)
    env = {**shared_service.env, "LSS_CLIENT_ENDPOINT": shared_service.client_endpoint}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.defpath  # `lss` comes from the activation, not from the test's PATH
    done = subprocess.run(
        ["bash", "-e", "-c", lss_lines()], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "obesity.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "obesity.csv").read_text().startswith("statistic,")
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 1
