"""Worker settings and their flags (defaults from LSS_* variables), shared by the
supervisor (`python -m workers`) and each worker process (`python -m workers.worker`).

The settings are defined in protocol.config.SETTINGS; `WORKER_SETTINGS` names the ones a
worker takes, and `WorkerSettings` has a field of each name.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from protocol import config

WORKER_SETTINGS = (
    "connect", "data", "state_dir", "credit", "heartbeat_interval_ms", "heartbeat_liveness",
    "max_message_bytes", "diagnostics", "fetch_data", "curve_server_key", "curve_secret",
    "log_level", "name", "max_data_mb", "expect_sha256",
)  # fmt: skip


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker process is told."""

    connect: str
    data: str
    state_dir: str
    credit: int
    heartbeat_interval_ms: int
    heartbeat_liveness: int
    max_message_bytes: int
    diagnostics: bool
    fetch_data: bool
    curve_server_key: str | None
    curve_secret: str | None
    log_level: str
    name: str = "worker"
    max_data_mb: float = config.MAX_DATA_MB  # what --fetch-data trusts (workers.fetch)
    expect_sha256: str | None = None

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_interval_ms / 1000


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """The flags every worker process takes."""
    config.add_flags(p, WORKER_SETTINGS)


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(**{name: getattr(args, name) for name in WORKER_SETTINGS})


def to_flags(settings: WorkerSettings) -> list[str]:
    """The command-line flags that reproduce `settings` (for the supervisor's children)."""
    return config.to_flags(settings, WORKER_SETTINGS)
