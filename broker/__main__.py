"""`python -m broker` / `lss-broker`: parse flags (defaults from LSS_* variables) and run."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from broker.broker import Broker, BrokerSettings
from broker.core import CoreSettings
from broker.datafile import DataFileError
from broker.sockets import BindError
from broker.store import StorageError
from broker.store.pg_schema import SchemaTooNew
from protocol import config
from protocol.events import write_events
from protocol.lifetime import die_with_parent
from protocol.logs import setup_logging

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

log = logging.getLogger("lss.broker")

BROKER_SETTINGS = (
    "client_endpoint", "worker_endpoint", "state_dir", "data", "heartbeat_interval_ms",
    "heartbeat_liveness", "job_timeout_s", "max_attempts", "max_queue", "result_ttl_s",
    "max_message_bytes", "curve_dir", "sqlite_synchronous", "disk_reserve_mb", "store",
    "broker_lease_s", "key_quota_mb", "max_workers", "producer_reserve", "max_producers",
    "producer_weights", "client_slice_ms", "log_level",
)  # fmt: skip
"""The settings the broker takes, defined in protocol.config.SETTINGS."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lss-broker", description="Run the LSS job broker.")
    config.add_flags(p, BROKER_SETTINGS, data=None)  # without data: the first worker's
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> BrokerSettings:
    """Each settings class takes the flags of its fields' names (times in seconds)."""
    values = {**vars(args), "heartbeat_interval_s": args.heartbeat_interval_ms / 1000}
    return _fill(BrokerSettings, values, core=_fill(CoreSettings, values))


def _fill(cls: type[T], values: dict[str, Any], **extra: Any) -> T:
    given = {f.name: values[f.name] for f in fields(cls) if f.name in values}
    return cls(**given, **extra)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    args = parse_args(argv)
    setup_logging(args.state_dir, "broker", args.log_level)
    write_events(args.state_dir, "broker")
    try:
        broker = Broker(settings_from(args))
    except BindError as exc:
        log.error("%s", exc)
        return config.EXIT_FAILURE
    except DataFileError as exc:
        log.error("cannot read the data file %s (set LSS_DATA or --data)", exc)
        return config.EXIT_DATA
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
