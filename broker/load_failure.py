"""Why no worker can run jobs: the last reason a worker gave for not loading the data.

A worker that cannot load the data file sends LOAD_FAILED{reason} instead of READY, then
exits (docs/protocol.md, "Workers"). The broker keeps the latest reason until a worker
registers. While no worker is registered and a reason is kept, the service cannot
answer, and says why at once instead of letting callers time out: submits and waits are
refused with `no_worker`, `stats` shows it, and a graceful shutdown does not wait for
jobs no worker can run (they stay in the store for the next start).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import messages as m
from protocol.logs import shown

NO_WORKER = "no worker can load the data: "


@dataclass
class LoadFailure:
    """The last LOAD_FAILED heard since a worker last registered (None: none)."""

    reason: str | None = None

    def report(self, msg: m.LoadFailed) -> bool:
        """Keep `msg`'s reason (escaped, cut); True when it differs from the last one."""
        reason = shown(msg.reason, m.MAX_REASON_CHARS)
        new, self.reason = reason != self.reason, reason
        return new

    def clear(self) -> None:
        """A worker registered: it could load the data."""
        self.reason = None

    def refusal(self, workers: int) -> str | None:
        """Why nothing can run, with `workers` registered; None while something can."""
        if workers or self.reason is None:
            return None
        return NO_WORKER + self.reason
