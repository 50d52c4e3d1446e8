"""Logging shared by every LSS process: setup (UTC timestamps, stderr plus a rotating
file), `shown()` for anything a peer sent, and a `Throttle` for warnings peers cause."""

from __future__ import annotations

import logging
import logging.handlers
import time
from collections import OrderedDict
from collections.abc import Hashable
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


SHOWN_CHARS = 100
"""How much of a peer's value a log line or an error reply repeats."""
# Control characters (C0, DEL and C1) as Python writes them; backslashes stay as they are.
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` fit for a log line or an error reply: control characters escaped, and
    cut to about `limit` characters (with the original length), so that nothing a peer
    sent can forge a log line, drive a terminal or be amplified."""
    if isinstance(value, bytes):
        text = value[: limit * 4].decode("utf-8", "backslashreplace")
        size = len(value)
    else:
        text = value if isinstance(value, str) else str(value)
        size = len(text)
        text = text[: limit * 4]
    text = escaped(text)
    if len(text) > limit or size > limit * 4:
        return f"{text[:limit]}... ({size} {'bytes' if isinstance(value, bytes) else 'chars'})"
    return text


def escaped(text: str) -> str:
    """`text` with its control characters (C0, DEL and C1) written as Python escapes:
    fit to store (PostgreSQL refuses NUL in text) or to show, whoever sent it."""
    return text.translate(_ESCAPES)


THROTTLE_KEYS = 4096  # (cause, peer) pairs remembered; the oldest is forgotten first


class Throttle:
    """WARNING lines per (cause, peer): at most `burst` per `window_s`, then one line
    counting the rest. Each key has its own budget, so a flooding peer cannot hide
    another peer's first report; the table of keys is bounded."""

    def __init__(self, logger: logging.Logger, burst: int = 5, window_s: float = 10.0) -> None:
        self._log = logger
        self._burst = burst
        self._window_s = window_s
        self._keys: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        """Log `message % args` unless `key` used up its burst; True if it was logged."""
        now = time.monotonic()
        started, count = self._keys.pop(key, (now, 0))
        if now - started >= self._window_s:
            if count > self._burst:
                self._log.warning("... and %d more like it (%s)", count - self._burst, shown(key))
            started, count = now, 0
        self._keys[key] = (started, count + 1)
        if len(self._keys) > THROTTLE_KEYS:
            self._keys.popitem(last=False)
        if count < self._burst:
            self._log.warning(message, *args)
            return True
        return False
