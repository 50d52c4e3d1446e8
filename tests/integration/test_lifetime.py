"""Processes die with their parent (protocol.lifetime), whoever the parent is.

The run.sh side is in test_run_sh.py; here: a bare child of a killed Python parent, a
child whose parent was already gone when it started, and the worker supervisor's
workers when the supervisor is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.harness import Service
from bench.service import ROOT, STOP_TIMEOUT_S, stop_process, wait_until
from protocol import config
from protocol.lifetime import PARENT_PID_ENV, child_env

pytestmark = pytest.mark.integration

CHILD = """
import signal, sys, time
from protocol.lifetime import die_with_parent
die_with_parent(grace_s=5)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a drain that ends at once
print("armed", flush=True)
time.sleep(120)
"""
PARENT = f"""
import subprocess, sys
from protocol.lifetime import child_env
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], env=child_env(), stdout=sys.stdout)
print(child.pid, flush=True)
child.wait()
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, waiting for a reaper


def test_a_child_shuts_down_when_its_parent_is_sigkilled() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    child_pid = 0
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "armed"
        parent.kill()
        parent.wait(timeout=STOP_TIMEOUT_S)
        wait_until(lambda: gone(child_pid), 10, "the orphan to exit")
    finally:
        stop_process(parent, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()
        if child_pid and not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    env = child_env({**os.environ, "PYTHONPATH": str(ROOT)})
    env[PARENT_PID_ENV] = "1"  # not our parent: as if the real one had died meanwhile
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == config.EXIT_INTERRUPTED
    assert b"armed" not in done.stdout


def test_workers_do_not_outlive_a_sigkilled_supervisor(
    service_factory: Callable[..., Service],
) -> None:
    svc = service_factory()
    supervisor = svc.start_supervisor(2)
    workers = [w["pid"] for w in svc.wait_workers(2)]
    supervisor.kill()
    supervisor.wait(timeout=STOP_TIMEOUT_S)
    wait_until(lambda: all(gone(pid) for pid in workers), 30, "the workers to exit")
    svc.wait_workers(0)  # they left the broker properly
