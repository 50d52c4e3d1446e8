"""`./run.sh` (serve): the broker, workers and gateway never outlive it, however it ends.

Each test starts the real `./run.sh` on free loopback ports with its own state directory,
waits until the whole service is up (a ping, the workers registered, the gateway's
address file), ends run.sh one way, and waits until no process of that service is left.
The service's processes are found in /proc by the state directory in their environment
(every child of run.sh inherits LSS_STATE_DIR), so none can hide; teardown kills any
leftover, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness import Service
from bench.service import ROOT, STOP_TIMEOUT_S, wait_until
from clients import Client
from protocol import config

pytestmark = pytest.mark.integration

WORKERS = 2
MODULES = {"broker", "workers", "workers.worker", "clients.gateway"}
STARTED = {"broker": 1, "workers": 1, "workers.worker": WORKERS, "clients.gateway": 1}
GONE_TIMEOUT_S = 60.0  # the drain is quick with no jobs; the bound is the grace period


@dataclass
class RunSh:
    """One `./run.sh` (maybe in a pipeline) and what identifies its service."""

    proc: subprocess.Popen[bytes]
    state_dir: Path
    client_endpoint: str

    def service_pids(self) -> dict[int, str]:
        """pid -> module of every live service process started for this state dir."""
        marker = f"LSS_STATE_DIR={self.state_dir}".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                module = _service_module(entry, marker)
                if module is not None:
                    found[int(entry.name)] = module
        return found


def _service_module(proc_dir: Path, marker: bytes) -> str | None:
    """The `-m MODULE` of a live service process whose environment holds `marker`."""
    try:
        environ = (proc_dir / "environ").read_bytes().split(b"\0")
        argv = (proc_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
        state = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone meanwhile, or not ours
        return None
    if marker not in environ or state == "Z" or "-m" not in argv:
        return None
    module = argv[argv.index("-m") + 1] if argv.index("-m") + 1 < len(argv) else ""
    return module if module in MODULES else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def start_run_sh(tmp_path: Path, standin_csv: Path) -> Iterator[Callable[..., RunSh]]:
    """Start `./run.sh` (through `| tee` if asked), wait until all of it serves."""
    started: list[RunSh] = []

    def start(through_tee: bool = False) -> RunSh:
        state = tmp_path / f"state{len(started)}"
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "LSS_CLIENT_ENDPOINT": endpoint,
            "LSS_WORKER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
            "LSS_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "LSS_STATE_DIR": str(state),
            "LSS_DATA": str(standin_csv),
            "LSS_WORKERS": str(WORKERS),
            "LSS_DIAGNOSTICS": "1",  # for a job that keeps the drain busy
            "LSS_HTTP_LINGER_S": "0.5",  # the gateway still follows the broker out, sooner
        }
        for secret in ("LSS_CURVE_DIR", "LSS_CURVE_SERVER_KEY", "LSS_CURVE_SECRET"):
            env.pop(secret, None)
        log = tmp_path / f"run{len(started)}.log"
        argv = ["bash", "-c", f"./run.sh 2>&1 | tee {log}"] if through_tee else ["./run.sh"]
        # The signals a terminal sends, not ignored even if the test run ignores them (a
        # `nohup` or `&` job does): bash cannot trap a signal ignored when it started.
        argv = ["env", "--default-signal=INT,HUP,QUIT,TERM", *argv]
        with open(log if not through_tee else os.devnull, "ab") as out:
            # A session of its own, like a terminal's foreground job: one killpg reaches
            # the whole pipeline (bash, run.sh, tee) and nothing else.
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
            )
        run = RunSh(proc, state, endpoint)
        started.append(run)
        wait_serving(run)
        return run

    yield start
    for run in started:
        _kill_everything(run)


def wait_serving(run: RunSh) -> None:
    """A ping answered, every worker registered, the gateway's address file written."""
    with Client(run.client_endpoint, timeout=60) as client:
        client.ping()
        wait_until(lambda: len(client.stats()["workers"]) == WORKERS, 60, "the workers")
    wait_until((run.state_dir / "gateway.address").exists, 60, "the gateway")

    def all_started() -> bool:
        modules = list(run.service_pids().values())
        return all(modules.count(name) == count for name, count in STARTED.items())

    wait_until(all_started, 30, f"the service's processes {STARTED}")


def wait_gone(run: RunSh) -> None:
    left: dict[int, str] = {}

    def gone() -> bool:
        left.clear()
        left.update(run.service_pids())
        return not left

    try:
        wait_until(gone, GONE_TIMEOUT_S, "every service process to exit")
    except TimeoutError as exc:
        raise AssertionError(f"still running after run.sh ended: {left}") from exc


def _kill_everything(run: RunSh) -> None:
    for pid in run.service_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        run.proc.wait(timeout=STOP_TIMEOUT_S)


def test_ctrl_c_through_a_pipe_whose_reader_dies(start_run_sh: Callable[..., RunSh]) -> None:
    """`./run.sh 2>&1 | tee log`, Ctrl-C: tee dies too, run.sh's stderr is a broken pipe."""
    run = start_run_sh(through_tee=True)
    os.killpg(run.proc.pid, signal.SIGINT)
    wait_gone(run)
    run.proc.wait(timeout=GONE_TIMEOUT_S)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_run_sh_stops_the_service_gracefully(
    start_run_sh: Callable[..., RunSh], signum: int
) -> None:
    run = start_run_sh()
    run.proc.send_signal(signum)
    assert run.proc.wait(timeout=GONE_TIMEOUT_S) == 0, "a drained shutdown exits 0"
    assert not run.service_pids(), "run.sh returned before its service had stopped"


def test_sigkill_of_run_sh_takes_the_service_down(start_run_sh: Callable[..., RunSh]) -> None:
    run = start_run_sh()
    run.proc.kill()
    run.proc.wait(timeout=STOP_TIMEOUT_S)
    wait_gone(run)


def test_a_second_ctrl_c_stops_everything_at_once(start_run_sh: Callable[..., RunSh]) -> None:
    """The first Ctrl-C drains, and a job still has minutes to run; the second ends it."""
    run = start_run_sh()
    with Client(run.client_endpoint, timeout=10) as client:
        client.submit("_sleep", seconds=600.0)
        wait_until(lambda: client.stats()["in_flight"] == 1, 30, "the job to start")
        run.proc.send_signal(signal.SIGINT)
        wait_until(lambda: client.stats()["shutting_down"], 30, "the drain to begin")
    run.proc.send_signal(signal.SIGINT)
    run.proc.wait(timeout=GONE_TIMEOUT_S)
    wait_gone(run)


def run_sh_to_its_end(tmp_path: Path, **env: str) -> tuple[int, str]:
    """`./run.sh` that is expected to stop by itself: its exit code and its output."""
    settings = {
        "LSS_CLIENT_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
        "LSS_WORKER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
        "LSS_HTTP_ADDR": "off",
        "LSS_STATE_DIR": str(tmp_path / "state"),
        "LSS_WORKERS": str(WORKERS),
        **env,
    }
    done = subprocess.run(
        ["./run.sh"], cwd=ROOT, env={**os.environ, **settings}, capture_output=True,
        text=True, timeout=GONE_TIMEOUT_S, check=False, start_new_session=True,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_run_sh_on_another_brokers_ports_stops_without_serving_it(
    service_factory: Callable[..., Service], tmp_path: Path, standin_csv: Path
) -> None:
    other = service_factory()
    code, out = run_sh_to_its_end(
        tmp_path, LSS_CLIENT_ENDPOINT=other.client_endpoint, LSS_DATA=str(standin_csv)
    )
    assert code == 1, out
    assert "service up" not in out and "Traceback" not in out, out
    assert f"cannot listen on {other.client_endpoint}: address already in use" in out
    with other.client() as client:
        assert client.stats()["workers"] == [], "run.sh's workers must not serve another broker"


def test_run_sh_on_data_no_worker_can_load_says_why(tmp_path: Path, standin_csv: Path) -> None:
    bad = tmp_path / "bad.csv"
    with open(standin_csv) as good:
        bad.write_text(good.readline().replace(",Question,", ",question,"))
    code, out = run_sh_to_its_end(tmp_path, LSS_DATA=str(bad))
    assert code == config.EXIT_DATA, out
    assert "service up" not in out and "Traceback" not in out, out
    why = f"no worker can load the data: {bad}: missing required column(s) 'Question'"
    assert f"[run.sh] {why}" in out
