"""One definition per setting (protocol.config.SETTINGS): flags, variables, help, README."""

from __future__ import annotations

import argparse
import re

import pytest

from bench.service import ROOT
from broker.__main__ import parse_args, settings_from
from clients.cli import build_parser
from clients.gateway import build_parser as build_gateway_parser
from clients.gateway import parse_args as gateway_parse_args
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


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    """The parser's own options (not its commands'), but --help."""
    found = {flag for action in parser._actions for flag in action.option_strings}
    return found - {"-h", "--help"}


def test_the_gateway_and_the_cli_take_their_settings_from_the_table() -> None:
    flags = {flag for setting in config.SETTINGS.values() for flag in setting.flags}
    assert options_of(build_gateway_parser()) <= flags
    assert options_of(build_parser()) <= flags


def test_variables_set_the_gateway_s_and_the_cli_s_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LSS_HTTP_THREADS", "3")
    monkeypatch.setenv("LSS_HTTP_ALLOWED_HOSTS", "a.example, b.example")
    monkeypatch.setenv("LSS_CLIENT_TIMEOUT_S", "2.5")
    monkeypatch.setenv("LSS_CLIENT_ENDPOINT", "tcp://10.0.0.1:5555")
    args = gateway_parse_args(["--allow-host", "c.example,d.example", "--allow-host=e"])
    assert (args.threads, args.timeout, args.endpoint) == (3, 2.5, "tcp://10.0.0.1:5555")
    assert args.allow_host == ["a.example", "b.example", "c.example", "d.example", "e"]
    assert gateway_parse_args(["--threads=5"]).threads == 5
    cli = build_parser().parse_args(["num-jobs"])
    assert (cli.timeout, cli.endpoint) == (2.5, "tcp://10.0.0.1:5555")
