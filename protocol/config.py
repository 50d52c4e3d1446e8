"""Shared configuration: defaults with their units, and every setting's one definition.

Every process reads its settings from command-line flags whose defaults come from the
`LSS_*` environment variables, and from these constants otherwise; `SETTINGS` defines
each setting once (flag, variable, default, help) and `add_flags` / `from_env` /
`to_flags` derive the rest. To add a setting: one `Setting(...)` line in `SETTINGS`, its
name in the process's list of settings (e.g. `broker.__main__.BROKER_SETTINGS`), a field
of that name in the process's settings class, and a row in the README's table. All
default endpoints are on loopback: binding anything else must be asked for.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
# A producer (a CURVE key, else a connection) holding fewer unfinished jobs than this
# never gets "queue full" for the others' backlogs; the broker holds at most
# MAX_QUEUE + PRODUCER_RESERVE x MAX_PRODUCERS unfinished jobs (broker.producers).
PRODUCER_RESERVE = 1_000
MAX_PRODUCERS = 100
RESULT_TTL_S = 7 * 24 * 3600.0
MAX_MESSAGE_BYTES = 1 << 20
# Jobs a worker may hold at once. Eight lets the broker send a worker its jobs in one
# BATCH; a lost worker's jobs wait for the heartbeat, so more would cost at failover.
WORKER_CREDIT = 8
DATA_CHUNK_BYTES = 256 * 1024
MB = 1 << 20
# The largest data file `--fetch-data` writes: over 6x the full CDC data set (40 MB).
MAX_DATA_MB = 256.0
# Clients batch requests up to this size: far below any sensible broker message limit.
CLIENT_BATCH_BYTES = 64 * 1024
CLIENT_TIMEOUT_S = 10.0
# Messages a client socket queues each way: far more than a client has in flight (a
# request past it would wait for a resend), yet finite.
CLIENT_HWM = 100_000
HTTP_ADDR = "127.0.0.1:5000"
HTTP_MAX_CONNECTIONS = 1000  # connections the gateway holds open at once
HTTP_THREADS = 8  # the gateway's threads answering requests
# Seconds from a request's first byte to its last (head and body) at the gateway.
HTTP_REQUEST_TIMEOUT_S = 10.0
# HTTP connections one client address may hold open at the gateway (of 1000 in all).
HTTP_CONNECTIONS_PER_ADDRESS = 64
# Seconds an HTTP connection has to send a whole request head: from its accept (from its
# first byte for a later request on a kept-alive connection); dripped bytes do not renew it.
HTTP_HEADER_TIMEOUT_S = 5.0
# Seconds an HTTP connection's peer has to take what is queued for it, from the first
# byte queued since its output was last all sent; reading a byte now and then does not
# renew it.
HTTP_RESPONSE_TIMEOUT_S = 30.0
# Workers one broker registers; a READY past it gets DISCONNECT. STATS lists the first
# 1024 (protocol/messages.py) and counts the rest.
MAX_WORKERS = 1024
# How long the gateway keeps answering after its broker has shut down, then exits.
GATEWAY_LINGER_S = 3.0
# A process whose parent died drains for at most this long, then stops (protocol/lifetime.py).
SHUTDOWN_GRACE_S = 30.0
# SQLite's `synchronous` for the results store; which failures each survives and what
# it costs: README, "Durability settings".
SQLITE_SYNCHRONOUS = "NORMAL"
# Free space in the state directory below which submits are refused (`storage`): room
# for the answers of accepted jobs, the WAL between checkpoints (16 MiB) and the logs.
DISK_RESERVE_MB = 64.0
# How long one loop turn of the broker serves client requests before it reads workers,
# commits and answers: the rest wait for the next turn, so that a flood of requests
# holds heartbeats and other clients back this long at most (docs/protocol.md, "Limits").
CLIENT_SLICE_MS = 10.0
# Where the broker keeps its jobs: "sqlite" (<state dir>/jobs.sqlite3), or a
# postgresql://... URL that several brokers may share (docs/deployment.md).
STORE = "sqlite"
# Bytes a key's jobs (bodies, answers, reasons) may take in the store, counted until they
# expire; past it, its submits are refused (`over_limit`) and answers (reasons) not kept. Without
# CURVE every peer is one key, so this bounds the whole store. 0: no quota.
KEY_QUOTA_MB = 1024.0
# How long a broker on a shared store stays the owner of its jobs without renewing;
# past it, another broker adopts them (renewed every third of it).
BROKER_LEASE_S = 10.0


def sha256_hex(text: str) -> str:
    """A SHA-256 as 64 lowercase hex digits (what `sha256sum` prints); ValueError if not."""
    digest = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"not a SHA-256 (64 hex digits): {text[:80]!r}")
    return digest


def names(text: str) -> list[str]:
    """The names in a comma-separated list ("a, b" -> ["a", "b"]), empty ones dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def producer_weights(text: str) -> tuple[tuple[str, float], ...]:
    """`alice=2,bob=0.5` as ((name, weight), ...); ValueError for a malformed one (a
    weight must be from 0.01 to 100)."""
    weights: list[tuple[str, float]] = []
    for part in names(text):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name.strip() or not 0.01 <= weight <= 100:
            raise ValueError(f"producer weight {part!r}: expected NAME=WEIGHT, 0.01 to 100")
        weights.append((name.strip(), weight))
    return tuple(weights)


def endpoints(text: str | Sequence[str]) -> list[str]:
    """Broker endpoints from a comma-separated list ("tcp://a:5555,tcp://b:5555") or a
    sequence of them, in order, spaces trimmed; ValueError when none is left."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    found = [part.strip() for part in parts if part.strip()]
    if not found:
        raise ValueError(f"no broker endpoint in {text!r}")
    return found


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA = 3  # the data file cannot be loaded: restarting cannot help
EXIT_INTERRUPTED = 130


# --- settings: one definition each, from which flags, variables and help come ----------


@dataclass(frozen=True)
class Setting:
    """One setting of a process: flag `--name-with-dashes`, variable `env`, default, help.

    The default's type parses the flag unless `kind` does (e.g. `str.upper`); a bool
    default makes an on/off flag; a `repeat` one may be given several times, each a
    comma-separated list (its default a tuple). `env` is `LSS_<NAME>` unless given ("" for a setting
    no variable should set, like a worker's log name). A value from the environment is
    checked like one from the flag.
    """

    name: str
    default: str | int | float | bool | tuple[str, ...] | None
    help: str
    env: str | None = None
    kind: Callable[[str], Any] | None = None  # parses a value; default: the default's type
    choices: tuple[str, ...] | None = None
    short: str | None = None  # e.g. "-n"
    repeat: bool = False

    @property
    def variable(self) -> str:
        return f"LSS_{self.name.upper()}" if self.env is None else self.env

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> list[str]:
        return [self.short, self.flag] if self.short else [self.flag]

    @property
    def parse(self) -> Callable[[str], Any]:
        if self.kind is not None:
            return self.kind
        return str if self.default is None else type(self.default)


SETTINGS = {
    s.name: s
    for s in (
        Setting("client_endpoint", CLIENT_ENDPOINT, "where producers connect (a,b: several)"),
        Setting("worker_endpoint", WORKER_ENDPOINT, "where workers connect"),
        Setting(
            "connect",
            WORKER_ENDPOINT,
            "the broker's worker endpoint; several brokers' comma-separated: serve them all",
            "LSS_WORKER_ENDPOINT",
        ),
        Setting("state_dir", STATE_DIR, "results store, logs and events"),
        Setting("data", DATA_FILE, "the CSV data file; its SHA-256 pins the service's data"),
        Setting("workers", os.cpu_count() or 1, "worker processes (one per CPU)", short="-n"),
        Setting("credit", WORKER_CREDIT, "jobs a worker holds at once", "LSS_WORKER_CREDIT"),
        Setting("heartbeat_interval_ms", HEARTBEAT_INTERVAL_MS, "heartbeat period, both ways"),
        Setting("heartbeat_liveness", HEARTBEAT_LIVENESS, "silent intervals: peer lost"),
        Setting("job_timeout_s", JOB_TIMEOUT_S, "a job's lease on its worker"),
        Setting("max_attempts", MAX_ATTEMPTS, "worker deaths on one job before it fails"),
        Setting("max_queue", MAX_QUEUE, "unfinished jobs before submits get 'queue full'"),
        Setting(
            "producer_reserve",
            PRODUCER_RESERVE,
            "a producer holding fewer unfinished jobs never gets 'queue full' for others' backlogs",
        ),
        Setting(
            "max_producers",
            MAX_PRODUCERS,
            "producers the reserve is kept for: at most max_queue + reserve x this jobs",
        ),
        Setting(
            "producer_weights",
            (),
            "share of the workers per key name, NAME=WEIGHT,... (default 1 each)",
            kind=producer_weights,
        ),
        Setting("result_ttl_s", RESULT_TTL_S, "how long results stay readable"),
        Setting("max_message_bytes", MAX_MESSAGE_BYTES, "inbound message cap"),
        Setting("max_workers", MAX_WORKERS, "workers registered at once (more are refused)"),
        Setting(
            "sqlite_synchronous",
            SQLITE_SYNCHRONOUS,
            "SQLite's synchronous mode (README, 'Durability settings')",
            kind=str.upper,
            choices=("OFF", "NORMAL", "FULL", "EXTRA"),
        ),
        Setting("disk_reserve_mb", DISK_RESERVE_MB, "refuse submits below this free space"),
        Setting(
            "client_slice_ms",
            CLIENT_SLICE_MS,
            "ms a broker's loop turn serves client requests (the rest: next turn)",
        ),
        Setting(
            "key_quota_mb",
            KEY_QUOTA_MB,
            "MB a key's jobs and answers may take in the store until they expire (0: no quota)",
        ),
        Setting("store", STORE, "'sqlite' or a postgresql:// URL that brokers may share"),
        Setting(
            "broker_lease_s",
            BROKER_LEASE_S,
            "on a shared store: how long a silent broker keeps its jobs",
        ),
        Setting("curve_dir", None, "turn CurveZMQ on with the keys in this directory"),
        Setting("curve_server_key", None, "the broker's public key file: turns CURVE on"),
        Setting("curve_secret", None, "this process's secret key file"),
        Setting("diagnostics", False, "the _sleep/_crash test statistics; never in production"),
        Setting("fetch_data", False, "if --data is missing, fetch it from the broker"),
        Setting("max_data_mb", MAX_DATA_MB, "--fetch-data refuses a larger data file"),
        Setting(
            "expect_sha256",
            None,
            "the data's SHA-256: --fetch-data takes only it, a local --data must have it",
            kind=sha256_hex,
        ),
        Setting("name", "worker", "log file: STATE_DIR/logs/NAME.log", ""),
        Setting(
            "endpoint",
            CLIENT_ENDPOINT,
            "the broker, or several brokers comma-separated, tried in turn",
            "LSS_CLIENT_ENDPOINT",
        ),
        Setting(
            "timeout",
            CLIENT_TIMEOUT_S,
            "seconds to wait for the broker, and for each job",
            "LSS_CLIENT_TIMEOUT_S",
        ),
        Setting(
            "listen",
            HTTP_ADDR,
            "the HTTP gateway's HOST:PORT; port 0 picks a free one (off: no gateway)",
            "LSS_HTTP_ADDR",
        ),
        Setting(
            "allow_host",
            (),
            "more Host names (NAME[:PORT]) the gateway answers to: a,b or repeated",
            "LSS_HTTP_ALLOWED_HOSTS",
            kind=names,
            repeat=True,
        ),
        Setting("http_token", None, "the gateway's bearer token (needed off loopback)"),
        Setting(
            "linger_s",
            GATEWAY_LINGER_S,
            "after the broker has shut down, the gateway answers this long, then exits",
            "LSS_HTTP_LINGER_S",
        ),
        Setting(
            "max_connections",
            HTTP_MAX_CONNECTIONS,
            "HTTP connections the gateway holds open at once",
            "LSS_HTTP_MAX_CONNECTIONS",
        ),
        Setting("threads", HTTP_THREADS, "the gateway's request threads", "LSS_HTTP_THREADS"),
        Setting(
            "request_timeout_s",
            HTTP_REQUEST_TIMEOUT_S,
            "an HTTP request's head and body must arrive within this time of its first byte",
            "LSS_HTTP_REQUEST_TIMEOUT_S",
        ),
        Setting(
            "http_connections_per_address",
            HTTP_CONNECTIONS_PER_ADDRESS,
            "HTTP connections one client address may hold open (more are closed at once)",
        ),
        Setting(
            "http_header_timeout_s",
            HTTP_HEADER_TIMEOUT_S,
            "seconds an HTTP connection has to send a whole request head (then closed)",
        ),
        Setting(
            "http_response_timeout_s",
            HTTP_RESPONSE_TIMEOUT_S,
            "seconds an HTTP client has to take a reply queued for it (then closed)",
        ),
        Setting("log_level", "INFO", "DEBUG logs one line per job event"),
    )
}


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str], **defaults: Any) -> None:
    """A flag per named setting, defaulting to its variable, else `defaults`, else its own."""
    for name in names:
        setting = SETTINGS[name]
        default = from_env(name, defaults.get(name, setting.default))
        where = f"{setting.variable}; " if setting.variable else ""
        help_text = f"{setting.help} ({where}default: {_shown(default)})"
        if setting.parse is bool:
            parser.add_argument(
                *setting.flags, action="store_true", default=default, help=help_text
            )
        elif setting.repeat:
            parser.add_argument(
                *setting.flags, action="extend", type=setting.parse, default=list(default),
                help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(
                *setting.flags, type=setting.parse, default=default, choices=setting.choices,
                help=help_text,
            )  # fmt: skip


def _shown(default: Any) -> str:
    if default is None or default is False:
        return "off"
    if isinstance(default, tuple | list) and not default:
        return "none"
    return "on" if default is True else "%(default)s"


def from_env(name: str, default: Any = None) -> Any:
    """The value of setting `name` from its environment variable, else `default`.

    A malformed value is an error, not a default: SystemExit names the variable.
    """
    setting = SETTINGS[name]
    raw = os.environ.get(setting.variable) if setting.variable else None
    if raw is None or raw == "":
        return default
    if setting.parse is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    try:
        value = setting.parse(raw)
    except ValueError as exc:
        raise SystemExit(f"{setting.variable}={raw!r}: {exc}") from exc
    if setting.choices and value not in setting.choices:
        raise SystemExit(f"{setting.variable}={raw!r}: choose one of {setting.choices}")
    return value


def env_str(name: str, default: str) -> str:
    """A string setting from its environment variable, else `default` (for the clients)."""
    value: str = from_env(name, default)
    return value


def to_flags(values: object, names: Iterable[str]) -> list[str]:
    """The flags that give a process `values` (an object with the settings' attributes)."""
    flags = []
    for name in names:
        value, flag = getattr(values, name), SETTINGS[name].flag
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags.append(f"{flag}={value}")
    return flags
