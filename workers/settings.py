"""Worker settings and their flags (defaults from LSS_* variables), shared by the
supervisor (`python -m workers`) and each worker process (`python -m workers.worker`)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from protocol import config


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker process is told."""

    connect: str
    data: str
    state_dir: str
    credit: int
    heartbeat_interval_s: float
    heartbeat_liveness: int
    max_message_bytes: int
    diagnostics: bool
    fetch_data: bool
    curve_server_key: str | None
    curve_secret: str | None
    log_level: str
    name: str = "worker"


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """The flags every worker process takes."""
    env_str, env_int = config.env_str, config.env_int
    p.add_argument(
        "--connect",
        default=env_str("worker_endpoint", config.WORKER_ENDPOINT),
        help="the broker's worker endpoint, or several brokers' comma-separated: the "
        "worker serves them all (LSS_WORKER_ENDPOINT)",
    )
    p.add_argument(
        "--data", default=env_str("data", config.DATA_FILE), help="the CSV data file (LSS_DATA)"
    )
    p.add_argument(
        "--state-dir",
        default=env_str("state_dir", config.STATE_DIR),
        help="logs, and fetched data (LSS_STATE_DIR)",
    )
    p.add_argument(
        "--credit",
        type=int,
        default=env_int("credit", config.WORKER_CREDIT),
        help="jobs held at once (LSS_WORKER_CREDIT)",
    )
    p.add_argument(
        "--heartbeat-interval-ms",
        type=int,
        default=env_int("heartbeat_interval_ms", config.HEARTBEAT_INTERVAL_MS),
    )
    p.add_argument(
        "--heartbeat-liveness",
        type=int,
        default=env_int("heartbeat_liveness", config.HEARTBEAT_LIVENESS),
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=env_int("max_message_bytes", config.MAX_MESSAGE_BYTES),
    )
    p.add_argument(
        "--diagnostics",
        action="store_true",
        default=config.env_flag("diagnostics"),
        help="enable the _sleep/_crash test statistics (LSS_DIAGNOSTICS); never in production",
    )
    p.add_argument(
        "--fetch-data",
        action="store_true",
        help="if --data is missing, download it from the broker",
    )
    p.add_argument(
        "--curve-server-key",
        default=os.environ.get("LSS_CURVE_SERVER_KEY"),
        help="the broker's public key file: turns CURVE on (LSS_CURVE_SERVER_KEY)",
    )
    p.add_argument(
        "--curve-secret",
        default=os.environ.get("LSS_CURVE_SECRET"),
        help="this worker's secret key file (LSS_CURVE_SECRET)",
    )
    p.add_argument("--log-level", default=env_str("log_level", "INFO"))
    p.add_argument("--name", default="worker", help="log file: STATE_DIR/logs/NAME.log")


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(
        connect=args.connect,
        data=args.data,
        state_dir=args.state_dir,
        credit=args.credit,
        heartbeat_interval_s=args.heartbeat_interval_ms / 1000,
        heartbeat_liveness=args.heartbeat_liveness,
        max_message_bytes=args.max_message_bytes,
        diagnostics=args.diagnostics,
        fetch_data=args.fetch_data,
        curve_server_key=args.curve_server_key,
        curve_secret=args.curve_secret,
        log_level=args.log_level,
        name=args.name,
    )


def to_flags(s: WorkerSettings) -> list[str]:
    """The command-line flags that reproduce `s` (for the supervisor's children)."""
    flags = [
        f"--connect={s.connect}",
        f"--data={s.data}",
        f"--state-dir={s.state_dir}",
        f"--credit={s.credit}",
        f"--heartbeat-interval-ms={round(s.heartbeat_interval_s * 1000)}",
        f"--heartbeat-liveness={s.heartbeat_liveness}",
        f"--max-message-bytes={s.max_message_bytes}",
        f"--log-level={s.log_level}",
        f"--name={s.name}",
    ]
    flags += ["--diagnostics"] if s.diagnostics else []
    flags += ["--fetch-data"] if s.fetch_data else []
    flags += [f"--curve-server-key={s.curve_server_key}"] if s.curve_server_key else []
    flags += [f"--curve-secret={s.curve_secret}"] if s.curve_secret else []
    return flags
