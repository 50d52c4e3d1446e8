"""When the broker refuses submits for its storage's sake, and when it accepts them again.

Submits are refused (`storage`) for `RETRY_AFTER_FAILURE_S` after a store transaction
failed, and while the free space in the state directory is under the reserve
(`LSS_DISK_RESERVE_MB`). Reads and the jobs already accepted carry on meanwhile: their
answers still need writing, and the reserve is the room they have for it. Submits are
accepted again by themselves once space is back and the retry time has passed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("lss.broker")

RETRY_AFTER_FAILURE_S = 1.0
FREE_SPACE_EVERY_S = 0.1  # statvfs is cheap, but not worth doing every loop turn
MB = 1 << 20


class StorageGuard:
    """Watches the state directory's free space and the store's last failure."""

    def __init__(self, state_dir: str | Path, reserve_bytes: int) -> None:
        self._state_dir = str(state_dir)
        self._reserve_bytes = reserve_bytes
        self._free_bytes = reserve_bytes
        self._next_check_s = 0.0
        self._failed_until_s = 0.0
        self._failure = ""
        self._refusal: str | None = None

    def failed(self, exc: Exception, now_s: float) -> None:
        """A store transaction failed at `now_s` and was rolled back."""
        self._failure = str(exc)
        self._failed_until_s = now_s + RETRY_AFTER_FAILURE_S
        self._next_check_s = now_s  # look at the space at once

    def refusal(self, now_s: float) -> str | None:
        """Why submits are refused now, or None; logs each change."""
        if now_s >= self._next_check_s:
            self._free_bytes = self._measure_free()
            self._next_check_s = now_s + FREE_SPACE_EVERY_S
        refusal = self._why(now_s)
        if refusal != self._refusal:
            if refusal:
                log.warning("refusing submits: %s", refusal)
            else:
                log.info("storage is back: accepting submits again")
            self._refusal = refusal
        return refusal

    def _why(self, now_s: float) -> str | None:
        if self._free_bytes < self._reserve_bytes:
            return (
                f"storage: {self._free_bytes / MB:.1f} MB free in the state directory, under"
                f" the reserve of {self._reserve_bytes / MB:g} MB"
            )
        if now_s < self._failed_until_s:
            return f"storage failed: {self._failure}"
        return None

    def _measure_free(self) -> int:
        try:
            stats = os.statvfs(self._state_dir)
        except OSError as exc:
            log.warning("cannot measure free space in %s: %s", self._state_dir, exc)
            return self._reserve_bytes
        return stats.f_bavail * stats.f_frsize
