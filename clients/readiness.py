"""`python -m clients.readiness`: is the service that run.sh started up? (run.sh's helper)

`broker PID`: wait until the broker process PID answers a PING on the client endpoint:
its own PONG (the PONG names the broker's pid), not another broker's that holds the
port. `workers BROKER_PID WORKERS_PID`: then wait until a worker has loaded the data
and registered. `gateway PID`: until the gateway PID has bound its address.

Exits 0 once so; 1, saying nothing, when one of the processes has exited (it said why
itself); otherwise one line on stderr, and `EXIT_DATA` when no worker can load the
data, 1 when the deadline passes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from clients.client import Client
from protocol import config
from protocol.errors import BrokerUnavailable

POLL_S = 0.05
PING_TIMEOUT_S = 0.5
BROKER_DEADLINE_S = 30.0
WORKERS_DEADLINE_S = 300.0  # a worker loads a 5,000,000-row file in about 13 s


class NotUp(Exception):
    """Why the service is not up: the line to print (empty: a process said it) and the
    exit code."""

    def __init__(self, line: str, code: int = config.EXIT_FAILURE) -> None:
        super().__init__(line)
        self.code = code


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, which its parent has yet to reap, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_for_broker(client: Client, pid: int, endpoint: str) -> None:
    """Until the broker `pid` answers on `endpoint`; `NotUp` if it exits, another
    process answers there, or the deadline passes."""
    deadline = time.monotonic() + BROKER_DEADLINE_S
    other = None  # ours, failing to bind, exits soon and says why: give it the deadline
    while alive(pid):
        try:
            answered = client.ping()["pid"]
        except BrokerUnavailable:
            answered = None
        if answered == pid:
            return
        other = answered or other
        if time.monotonic() > deadline:
            who = f"another broker (pid {other})" if other else "nothing"
            raise NotUp(f"{who} answers on {endpoint} after {BROKER_DEADLINE_S:g} s, not ours")
        time.sleep(POLL_S)
    raise NotUp("")


def wait_for_a_worker(client: Client, broker_pid: int, workers_pid: int) -> None:
    """Until a worker has registered; `NotUp` if none can load the data, a process
    exits, or the deadline passes."""
    deadline = time.monotonic() + WORKERS_DEADLINE_S
    while alive(broker_pid) and alive(workers_pid):
        stats = client.stats()
        if stats["workers"]:
            return
        if stats.get("no_worker"):
            raise NotUp(str(stats["no_worker"]), config.EXIT_DATA)
        if time.monotonic() > deadline:
            raise NotUp(f"no worker registered in {WORKERS_DEADLINE_S:g} s")
        time.sleep(POLL_S)
    raise NotUp("")


def wait_for_gateway(pid: int, state_dir: Path) -> None:
    """Until the gateway `pid` has written its address file; `NotUp` if it exits (it
    says why: an address in use, a missing token) or the deadline passes."""
    from clients.gateway import ADDRESS_FILE  # with Flask: only when there is a gateway

    deadline = time.monotonic() + BROKER_DEADLINE_S
    address = state_dir / ADDRESS_FILE
    while alive(pid):
        with contextlib.suppress(OSError):  # not written yet
            if address.stat().st_mtime >= started_at(pid):  # not a former gateway's
                return
        if time.monotonic() > deadline:
            raise NotUp(f"the gateway did not start in {BROKER_DEADLINE_S:g} s")
        time.sleep(POLL_S)
    raise NotUp("")


def started_at(pid: int) -> float:
    """When process `pid` started (Unix seconds, to the clock tick), from /proc."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(line for line in Path("/proc/stat").read_text().splitlines() if "btime" in line)
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK") - 1.0  # btime is whole s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.readiness", description=__doc__)
    parser.add_argument("what", choices=["broker", "workers", "gateway"])
    parser.add_argument("broker_pid", type=int)
    parser.add_argument("workers_pid", type=int, nargs="?")
    args = parser.parse_args(argv)
    endpoint = config.env_str("client_endpoint", config.CLIENT_ENDPOINT)
    try:
        if args.what == "gateway":
            state_dir = Path(config.env_str("state_dir", config.STATE_DIR))
            wait_for_gateway(args.broker_pid, state_dir)
            return config.EXIT_OK
        with Client(endpoint, timeout=PING_TIMEOUT_S) as client:
            if args.what == "broker":
                wait_for_broker(client, args.broker_pid, endpoint)
            else:
                wait_for_a_worker(client, args.broker_pid, args.workers_pid or 0)
    except NotUp as exc:
        if str(exc):
            print(exc, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # run.sh handles the Ctrl-C
        return config.EXIT_INTERRUPTED
    return config.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
