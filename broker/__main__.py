"""`python -m broker` / `lss-broker`: parse flags (defaults from LSS_* variables) and run."""

from __future__ import annotations

import argparse
import logging
import sys

from broker.broker import Broker, BrokerSettings
from broker.core import CoreSettings
from broker.pgschema import SchemaTooNew
from broker.store import SYNCHRONOUS_MODES, StorageError
from protocol import config
from protocol.logs import setup_logging

log = logging.getLogger("lss.broker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env_str, env_int, env_float = config.env_str, config.env_int, config.env_float
    p = argparse.ArgumentParser(prog="lss-broker", description="Run the LSS job broker.")
    p.add_argument(
        "--client-endpoint",
        default=env_str("client_endpoint", config.CLIENT_ENDPOINT),
        help="where producers connect (LSS_CLIENT_ENDPOINT)",
    )
    p.add_argument(
        "--worker-endpoint",
        default=env_str("worker_endpoint", config.WORKER_ENDPOINT),
        help="where workers connect (LSS_WORKER_ENDPOINT)",
    )
    p.add_argument(
        "--state-dir",
        default=env_str("state_dir", config.STATE_DIR),
        help="results store and logs (LSS_STATE_DIR)",
    )
    p.add_argument(
        "--data",
        default=env_str("data", "") or None,
        help="the service's data file: its SHA-256 pins the workers' data (LSS_DATA)",
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
        "--job-timeout-s", type=float, default=env_float("job_timeout_s", config.JOB_TIMEOUT_S)
    )
    p.add_argument("--max-attempts", type=int, default=config.MAX_ATTEMPTS)
    p.add_argument("--max-queue", type=int, default=env_int("max_queue", config.MAX_QUEUE))
    p.add_argument(
        "--result-ttl-s", type=float, default=env_float("result_ttl_s", config.RESULT_TTL_S)
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=env_int("max_message_bytes", config.MAX_MESSAGE_BYTES),
    )
    p.add_argument(
        "--curve-dir",
        default=env_str("curve_dir", "") or None,
        help="turn CurveZMQ on with the keys in this directory (LSS_CURVE_DIR)",
    )
    p.add_argument(
        "--sqlite-synchronous",
        type=str.upper,
        default=env_str("sqlite_synchronous", config.SQLITE_SYNCHRONOUS),
        choices=SYNCHRONOUS_MODES,
        help="SQLite's synchronous mode; what each costs: README (LSS_SQLITE_SYNCHRONOUS)",
    )
    p.add_argument(
        "--disk-reserve-mb",
        type=float,
        default=env_float("disk_reserve_mb", config.DISK_RESERVE_MB),
        help="refuse submits while the state dir has less free space (LSS_DISK_RESERVE_MB)",
    )
    p.add_argument(
        "--store",
        default=env_str("store", config.STORE),
        help="'sqlite' (in the state dir) or a postgresql:// URL brokers may share (LSS_STORE)",
    )
    p.add_argument(
        "--broker-lease-s",
        type=float,
        default=env_float("broker_lease_s", config.BROKER_LEASE_S),
        help="on a shared store: how long this broker's jobs stay its own unrenewed"
        " (LSS_BROKER_LEASE_S)",
    )
    p.add_argument("--log-level", default=env_str("log_level", "INFO"))
    return p.parse_args(argv)  # fmt: skip


def settings_from(args: argparse.Namespace) -> BrokerSettings:
    core = CoreSettings(
        heartbeat_interval_s=args.heartbeat_interval_ms / 1000,
        heartbeat_liveness=args.heartbeat_liveness,
        job_timeout_s=args.job_timeout_s,
        max_attempts=args.max_attempts,
        max_queue=args.max_queue,
        result_ttl_s=args.result_ttl_s,
        max_message_bytes=args.max_message_bytes,
    )
    return BrokerSettings(
        client_endpoint=args.client_endpoint,
        worker_endpoint=args.worker_endpoint,
        state_dir=args.state_dir,
        data=args.data,
        core=core,
        curve_dir=args.curve_dir,
        sqlite_synchronous=args.sqlite_synchronous,
        disk_reserve_mb=args.disk_reserve_mb,
        store=args.store,
        broker_lease_s=args.broker_lease_s,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.state_dir, "broker", args.log_level)
    try:
        broker = Broker(settings_from(args))
    except (StorageError, SchemaTooNew) as exc:
        log.error("cannot open the store: %s", exc)
        return config.EXIT_FAILURE
    except ValueError as exc:
        log.error("%s", exc)
        return config.EXIT_USAGE
    broker.install_signal_handlers()
    return broker.run()


if __name__ == "__main__":
    sys.exit(main())
