"""Process lifetime: a service process never outlives the process that started it.

Every long-running process (broker, worker supervisor, worker, HTTP gateway) calls
`die_with_parent()` first thing. When its spawner asked for it by naming itself in
`LSS_PARENT_PID` (run.sh, the worker supervisor and the test/bench harness do, through
`child_env()`), it asks Linux to send SIGHUP when the parent dies
(`PR_SET_PDEATHSIG`), and treats that SIGHUP as the start of a two-stage shutdown:
SIGTERM to itself at once (the process's own handler drains), a second SIGTERM after
`config.SHUTDOWN_GRACE_S` (exit at once), SIGKILL `KILL_AFTER_S` later as a last resort.
So `kill -9` of `./run.sh`, of a test runner or of the worker supervisor leaves no
orphan behind, and a drain that cannot finish (its workers are gone) is still bounded.

SIGHUP is free for this: the processes run without a controlling terminal (run.sh starts
them with `setsid`), and a terminal's hang-up means the same thing anyway.

The death signal fires when the parent *thread* that forked the child exits, so spawn
service processes from a thread that lives as long as they should (the main thread).
A parent can die before the child reaches `die_with_parent()`: a child whose parent is
no longer the pid in `LSS_PARENT_PID` exits at once. Without prctl (not Linux) this
module does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from protocol import config

log = logging.getLogger("lss.lifetime")

PARENT_PID_ENV = "LSS_PARENT_PID"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
KILL_AFTER_S = 5.0  # after the second SIGTERM, if the process is still there


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's environment) naming this process as the parent."""
    return {**(os.environ if env is None else env), PARENT_PID_ENV: str(os.getpid())}


def die_with_parent(grace_s: float = config.SHUTDOWN_GRACE_S) -> None:
    """If the spawner asked (`LSS_PARENT_PID`), shut down when it dies: drain, then
    stop at once `grace_s` seconds later."""
    expected = os.environ.pop(PARENT_PID_ENV, "")  # not meant for our own children
    if not expected.isdigit() or not _set_death_signal(signal.SIGHUP):
        return
    signal.signal(signal.SIGHUP, _on_parent_death(grace_s))
    if os.getppid() != int(expected):
        sys.exit(config.EXIT_INTERRUPTED)  # the parent died before we could ask


def _set_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    return True


def _on_parent_death(grace_s: float) -> Callable[[int, FrameType | None], None]:
    started = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        if started.is_set():
            return  # one shutdown, whatever hangs up next
        started.set()
        log.warning("parent gone or hang-up: shutting down (at once after %g s)", grace_s)
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=_stop_later, args=(grace_s,), daemon=True).start()

    return handle


def _stop_later(grace_s: float) -> None:
    """The second stage of the shutdown, then the last resort."""
    threading.Event().wait(grace_s)
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Event().wait(KILL_AFTER_S)
    os.kill(os.getpid(), signal.SIGKILL)
