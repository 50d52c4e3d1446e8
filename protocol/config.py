"""Shared configuration defaults, their environment variables, and their units.

Every process reads its settings from command-line flags whose defaults come from the
`LSS_*` environment variables named here, and from these constants otherwise. All
default endpoints are on loopback: binding anything else must be asked for.
"""

from __future__ import annotations

import os

CLIENT_ENDPOINT = "tcp://127.0.0.1:5555"
WORKER_ENDPOINT = "tcp://127.0.0.1:5556"
STATE_DIR = "var"
DATA_FILE = "data/nutrition_activity_obesity_usa_subset.csv"

HEARTBEAT_INTERVAL_MS = 500
HEARTBEAT_LIVENESS = 5  # intervals of silence before a peer counts as lost (2.5 s)
RECONNECT_MIN_MS = 100
RECONNECT_MAX_MS = 5_000
JOB_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 3  # worker deaths on one job before it ends as an error
MAX_QUEUE = 100_000
RESULT_TTL_S = 7 * 24 * 3600.0
MAX_MESSAGE_BYTES = 1 << 20
# Jobs a worker may hold at once. Eight lets the broker send a worker its jobs in one
# BATCH; a lost worker's jobs wait for the heartbeat, so more would cost at failover.
WORKER_CREDIT = 8
DATA_CHUNK_BYTES = 256 * 1024
# Clients batch requests up to this size: far below any sensible broker message limit.
CLIENT_BATCH_BYTES = 64 * 1024
CLIENT_TIMEOUT_S = 10.0
# Messages a client socket queues each way: far more than a client has in flight (a
# request past it would wait for a resend), yet finite.
CLIENT_HWM = 100_000
SHUTDOWN_GRACE_S = 30.0
# SQLite's `synchronous` for the results store; which failures each survives and what
# it costs: README, "Durability settings".
SQLITE_SYNCHRONOUS = "NORMAL"
# Free space in the state directory below which submits are refused (`storage`): room
# for the answers of accepted jobs, the WAL between checkpoints (16 MiB) and the logs.
DISK_RESERVE_MB = 64.0
# Where the broker keeps its jobs: "sqlite" (<state dir>/jobs.sqlite3), or a
# postgresql://... URL that several brokers may share (docs/deployment.md).
STORE = "sqlite"
# How long a broker on a shared store stays the owner of its jobs without renewing;
# past it, another broker adopts them (renewed every third of it).
BROKER_LEASE_S = 10.0

ENV = {
    "client_endpoint": "LSS_CLIENT_ENDPOINT",
    "worker_endpoint": "LSS_WORKER_ENDPOINT",
    "state_dir": "LSS_STATE_DIR",
    "data": "LSS_DATA",
    "workers": "LSS_WORKERS",
    "heartbeat_interval_ms": "LSS_HEARTBEAT_INTERVAL_MS",
    "heartbeat_liveness": "LSS_HEARTBEAT_LIVENESS",
    "job_timeout_s": "LSS_JOB_TIMEOUT_S",
    "max_queue": "LSS_MAX_QUEUE",
    "result_ttl_s": "LSS_RESULT_TTL_S",
    "max_message_bytes": "LSS_MAX_MESSAGE_BYTES",
    "credit": "LSS_WORKER_CREDIT",
    "log_level": "LSS_LOG_LEVEL",
    "curve_dir": "LSS_CURVE_DIR",
    "diagnostics": "LSS_DIAGNOSTICS",
    "http_addr": "LSS_HTTP_ADDR",
    "sqlite_synchronous": "LSS_SQLITE_SYNCHRONOUS",
    "disk_reserve_mb": "LSS_DISK_RESERVE_MB",
    "store": "LSS_STORE",
    "broker_lease_s": "LSS_BROKER_LEASE_S",
    "http_allowed_hosts": "LSS_HTTP_ALLOWED_HOSTS",
    "http_token": "LSS_HTTP_TOKEN",
}


def env_str(key: str, default: str) -> str:
    """The environment's value for setting `key` (see `ENV`), else `default`."""
    return os.environ.get(ENV[key], default)


def env_int(key: str, default: int) -> int:
    """Integer setting from the environment; a malformed value is an error, not a default."""
    raw = os.environ.get(ENV[key])
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{ENV[key]}={raw!r} is not an integer") from exc


def env_float(key: str, default: float) -> float:
    """Float setting from the environment; a malformed value is an error, not a default."""
    raw = os.environ.get(ENV[key])
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{ENV[key]}={raw!r} is not a number") from exc


def env_flag(key: str) -> bool:
    """True when the environment sets `key` to 1/true/yes/on."""
    return os.environ.get(ENV[key], "").strip().lower() in {"1", "true", "yes", "on"}


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
