"""Logging setup shared by every LSS process: UTC timestamps, stderr plus a rotating file."""

from __future__ import annotations

import logging
import logging.handlers
import time
from pathlib import Path

from protocol.files import private_state_dir

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s[%(process)d] %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5


def setup_logging(state_dir: str | Path, name: str, level: str = "INFO") -> None:
    """Make the process's files private (`protocol.files`), then send logs to stderr and
    to `<state_dir>/logs/<name>.log`, rotated at 10 MiB."""
    former_mode = private_state_dir(state_dir)
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime
    log_dir = Path(state_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        log_dir / f"{name}.log", maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS
    )
    stderr_handler = logging.StreamHandler()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in (file_handler, stderr_handler):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level.upper())
    if former_mode is not None:
        logging.getLogger("lss").info(
            "state directory %s was mode %o; tightened to owner only", state_dir, former_mode
        )


class Throttle:
    """Logs at most `burst` warnings per `window_s`, then one line counting the rest.

    For input nobody controls (malformed messages): a flood must not flood the logs.
    """

    def __init__(self, logger: logging.Logger, burst: int = 20, window_s: float = 10.0) -> None:
        self._log = logger
        self._burst = burst
        self._window_s = window_s
        self._window_start = 0.0
        self._count = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= self._window_s:
            if self._count > self._burst:
                self._log.warning("... and %d more like it", self._count - self._burst)
            self._window_start, self._count = now, 0
        self._count += 1
        if self._count <= self._burst:
            self._log.warning(message, *args)
