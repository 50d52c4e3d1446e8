"""Run a module whose wall clock steps back an hour at each SIGUSR1.

`python -m tests.clockstep -m broker ARGS...` runs `python -m broker ARGS...` with
`time.time()` made to lag the real clock by STEP_S more at every SIGUSR1: what an NTP
correction or an operator's `date -s` does to a running process. Monotonic time is
left alone, as the kernel leaves it.
"""

from __future__ import annotations

import runpy
import signal
import sys
import time
from types import FrameType

STEP_S = 3600.0

_real_time = time.time
_behind_s = [0.0]  # how far time.time() lags the real clock


def _stepped_time() -> float:
    return _real_time() - _behind_s[0]


def _step_back(_signum: int, _frame: FrameType | None) -> None:
    _behind_s[0] += STEP_S


def main() -> None:
    args = sys.argv[1:]
    module, rest = (args[1], args[2:]) if args[:1] == ["-m"] else (args[0], args[1:])
    signal.signal(signal.SIGUSR1, _step_back)
    time.time = _stepped_time
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
