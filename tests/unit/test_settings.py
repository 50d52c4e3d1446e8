"""One definition per setting (protocol.config.SETTINGS): flags, variables, help, README."""

from __future__ import annotations

import argparse
import re

import pytest

from bench.service import ROOT
from broker.__main__ import parse_args, settings_from
from protocol import config
from workers.settings import WORKER_SETTINGS, WorkerSettings, add_worker_flags, to_flags
from workers.settings import settings_from as worker_settings_from


def test_every_variable_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    first_cells = [line.split("|")[1] for line in readme if line.startswith("| `LSS_")]
    documented = {name for cell in first_cells for name in re.findall(r"LSS_\w+", cell)}
    variables = {s.variable for s in config.SETTINGS.values() if s.variable}
    assert variables - documented == set()


def test_a_variable_sets_the_default_and_a_flag_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LSS_MAX_QUEUE", "7")
    monkeypatch.setenv("LSS_HEARTBEAT_INTERVAL_MS", "250")
    settings = settings_from(parse_args([]))
    assert settings.core is not None
    assert (settings.core.max_queue, settings.core.heartbeat_interval_s) == (7, 0.25)
    overridden = settings_from(parse_args(["--max-queue=9"])).core
    assert overridden is not None and overridden.max_queue == 9


@pytest.mark.parametrize(
    ("variable", "value"), [("LSS_MAX_QUEUE", "many"), ("LSS_SQLITE_SYNCHRONOUS", "SOMETIMES")]
)
def test_a_malformed_variable_stops_the_process_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=variable):
        parse_args([])


def test_a_worker_is_given_exactly_its_supervisor_s_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for setting in WORKER_SETTINGS:
        monkeypatch.delenv(config.SETTINGS[setting].variable or "unset", raising=False)
    settings = WorkerSettings(
        connect="tcp://10.0.0.1:1", data="d.csv", state_dir="s", credit=3,
        heartbeat_interval_ms=250, heartbeat_liveness=4, max_message_bytes=1000,
        diagnostics=True, fetch_data=False, curve_server_key="k", curve_secret=None,
        log_level="DEBUG", name="worker-3", max_data_mb=12.5, expect_sha256="ab" * 32,
    )  # fmt: skip
    parser = argparse.ArgumentParser()
    add_worker_flags(parser)
    assert worker_settings_from(parser.parse_args(to_flags(settings))) == settings


def test_an_expected_sha256_is_64_hex_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.sha256_hex(" " + "AB" * 32 + "\n") == "ab" * 32  # as sha256sum prints it
    parser = argparse.ArgumentParser()
    add_worker_flags(parser)
    for bad in ("ab" * 31, "zz" * 32, "ab" * 32 + "0"):
        with pytest.raises(SystemExit):
            parser.parse_args([f"--expect-sha256={bad}"])
    monkeypatch.setenv("LSS_EXPECT_SHA256", "not-a-digest")
    with pytest.raises(SystemExit, match="LSS_EXPECT_SHA256"):
        add_worker_flags(argparse.ArgumentParser())
