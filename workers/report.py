"""What a worker process tells its supervisor: that it loaded the data, or why it cannot.

The supervisor gives each worker the write end of a pipe (`--report-fd`); the worker
writes one line on it: `loaded`, or `unloadable <reason>` before it exits with
`EXIT_DATA`. The supervisor reads it without blocking (`ReportReader`), so it can tell
a worker that failed to load the data (the same file will fail again) from one that
crashed later (worth a restart), and say why when it stops (workers.supervisor).
"""

from __future__ import annotations

import contextlib
import os

LOADED = "loaded"
UNLOADABLE = "unloadable"
MAX_REPORT_BYTES = 4096  # a reason longer than this is cut; the rest is not read


def send(fd: int | None, word: str, reason: str = "") -> None:
    """Write one report line on `fd` (nothing when there is no supervisor to tell)."""
    if fd is None:
        return
    line = f"{word} {reason}".strip().replace("\n", " ")
    with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
        os.write(fd, line.encode(errors="replace")[: MAX_REPORT_BYTES - 1] + b"\n")


class ReportReader:
    """The supervisor's end of one worker's report pipe."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd: int | None = fd
        self._buffer = b""
        self.loaded = False
        self.unloadable: str | None = None  # the reason, once reported

    def poll(self) -> None:
        """Take in what the worker wrote so far."""
        while self._fd is not None and len(self._buffer) < MAX_REPORT_BYTES:
            try:
                chunk = os.read(self._fd, MAX_REPORT_BYTES)
            except BlockingIOError:
                break
            if not chunk:
                self.close()
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._take(line.decode(errors="replace"))

    def _take(self, line: str) -> None:
        word, _, reason = line.partition(" ")
        if word == LOADED:
            self.loaded = True
        elif word == UNLOADABLE:
            self.unloadable = reason or "no reason given"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
