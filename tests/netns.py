"""Linux network namespaces for tests: a private switched LAN of "hosts", always removed.

`Lab` builds, for one test run, a "switch" namespace holding a bridge, and one namespace
per host joined to that bridge by a veth pair. Every link is created inside the lab's own
namespaces (never in the caller's), the hosts' addresses are in SUBNET (10.203.0.0/24),
and no namespace has a default route or any link out of the lab: no packet can leave it.
Names are PREFIX + pid + role, so parallel runs never clash; `clean_leftovers()` removes
the namespaces of earlier runs whose process is gone. `Lab.spawn` starts a process on a
host in its own process group (with its own hostname, when `unshare` exists);
`Lab.destroy()` kills those groups, then anything else still inside (`ip netns pids`),
then deletes the namespaces. It is idempotent, for finalizers and `finally` blocks alike;
`built(hosts)` wraps the lot in a `with` block.

The module also holds the producer agent, `python -m tests.netns agent ENDPOINT ...`: a
`Client` on a lab host that serves JSON-line requests on stdin (ping, stats, submit, get,
wait, map) so a test outside the lab can drive a producer inside it; `Agent` is the
test's end of that pipe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

PREFIX = "lsst"
SUBNET = "10.203.0"  # a /24 that exists only inside the lab's namespaces
PREFIX_LEN = 24
SWITCH = "switch"
BRIDGE = "br0"
IP_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; raise with its stderr if it fails and `check`."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the netns tests as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def lab_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of existing namespaces that belong to some lab."""
    listing = _ip("netns", "list", check=False).stdout.splitlines()
    names = [line.split()[0] for line in listing if line.strip()]
    return [name for name in names if re.fullmatch(rf"{prefix}\d+-[\w-]+", name)]


def clean_leftovers(prefix: str = PREFIX) -> list[str]:
    """Remove the namespaces of labs whose test process has exited; return their names."""
    removed = []
    for name in lab_namespaces(prefix):
        owner = int(re.findall(r"\d+", name[len(prefix) :])[0])
        if not _alive(owner):
            _purge(name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _purge(name: str) -> None:
    """Kill every process inside namespace `name`, then delete it."""
    for pid in _ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name, check=False)


class Lab:
    """Hosts (role -> last address byte) on one private bridge; see the module docstring."""

    def __init__(self, hosts: dict[str, int], prefix: str = PREFIX) -> None:
        self.hosts = hosts
        self.tag = f"{prefix}{os.getpid()}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.created: list[str] = []

    def ns(self, role: str) -> str:
        """The namespace name of a host (or of the switch)."""
        return f"{self.tag}-{role}"

    def address(self, role: str) -> str:
        return f"{SUBNET}.{self.hosts[role]}"

    def create(self) -> None:
        """Build the switch and the hosts; on any failure, remove what was built."""
        try:
            self._add_ns(SWITCH)
            sw = self.ns(SWITCH)
            _ip("-n", sw, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", sw, "link", "set", BRIDGE, "up")
            for role in self.hosts:
                self._add_host(role)
        except BaseException:
            self.destroy()
            raise

    def _add_ns(self, role: str) -> None:
        _ip("netns", "add", self.ns(role))
        self.created.append(self.ns(role))
        _ip("-n", self.ns(role), "link", "set", "lo", "up")

    def _add_host(self, role: str) -> None:
        self._add_ns(role)
        sw, host, port = self.ns(SWITCH), self.ns(role), f"v-{role}"
        _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host)
        _ip("-n", sw, "link", "set", port, "master", BRIDGE, "up")
        _ip("-n", host, "addr", "add", f"{self.address(role)}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", host, "link", "set", "eth0", "up")

    def set_link(self, role: str, up: bool) -> None:
        """Plug or unplug a host: its port on the switch goes up or down."""
        _ip("-n", self.ns(SWITCH), "link", "set", f"v-{role}", "up" if up else "down")

    def routes(self) -> dict[str, list[str]]:
        """Every namespace's routing table, for checking that nothing leads out of the lab."""
        return {name: _ip("-n", name, "route", "show").stdout.splitlines() for name in self.created}

    def spawn(
        self, role: str, argv: Sequence[str], log: Path, env: dict[str, str], **popen: Any
    ) -> subprocess.Popen[bytes]:
        """Run `argv` on host `role` (hostname = role), in a new process group."""
        command = ["ip", "netns", "exec", self.ns(role)]
        if shutil.which("unshare") and shutil.which("hostname"):
            command += ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', role]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*command, *argv], env=env, stderr=out, start_new_session=True,
                **{"stdout": out, **popen},
            )  # fmt: skip
        self.processes.append(proc)
        return proc

    def destroy(self) -> None:
        """Kill every process of the lab, then delete its namespaces (safe to repeat)."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_WAIT_S)
            if proc.stdin is not None:
                proc.stdin.close()  # stdout belongs to the Agent's reader, which closes it
        for name in reversed(self.created):
            _purge(name)
        self.created = [name for name in self.created if name in lab_namespaces()]
        if self.created:
            raise RuntimeError(f"namespaces left behind: {self.created}")


@contextlib.contextmanager
def built(hosts: dict[str, int]) -> Iterator[Lab]:
    """A lab of `hosts`, created (after removing earlier runs' leftovers) and destroyed
    when the block ends, also on failure."""
    clean_leftovers()
    lab = Lab(hosts)
    try:
        lab.create()
        yield lab
    finally:
        lab.destroy()


# --- the producer agent ------------------------------------------------------------


class AgentError(Exception):
    """A call the agent answered with an exception; `name` is its class name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class Agent:
    """The test's end of a producer agent started with `Lab.spawn(..., stdin/stdout=PIPE)`."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise ValueError("the agent needs stdin and stdout pipes")
        self.proc = proc
        self._stdin: IO[bytes] = proc.stdin
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stdout: IO[bytes]) -> None:
        try:
            for line in stdout:
                self._replies.put(json.loads(line))
        finally:
            stdout.close()  # EOF: the agent exited (or was killed by Lab.destroy)
            self._replies.put({"error": "EOF", "message": "the agent exited"})

    def send(self, op: str, **fields: Any) -> None:
        """Queue a request; the agent answers requests in order."""
        self._stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        self._stdin.flush()

    def receive(self, timeout_s: float = 30.0) -> Any:
        """The next reply's value; raises AgentError if it is an exception."""
        try:
            reply = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no reply from the agent within {timeout_s:g} s") from None
        if "error" in reply:
            raise AgentError(reply["error"], reply["message"])
        return reply["ok"]

    def call(self, op: str, timeout_s: float = 30.0, **fields: Any) -> Any:
        self.send(op, **fields)
        return self.receive(timeout_s)


def _operations() -> dict[str, Callable[[Any, dict[str, Any]], Any]]:
    return {
        "ping": lambda c, r: c.ping(),
        "stats": lambda c, r: c.stats(),
        "submit": lambda c, r: c.submit(r["statistic"], **r["params"]),
        "get": lambda c, r: c.get(r["job"]),
        "wait": lambda c, r: c.wait(r["job"], r.get("timeout")),
        "map": lambda c, r: list(c.map([(s, p) for s, p in r["jobs"]])),
    }


def agent_main(argv: list[str] | None = None) -> int:
    """Serve JSON-line requests with a `Client` until stdin closes."""
    from clients import Client, LssError, Security

    p = argparse.ArgumentParser(prog="python -m tests.netns agent")
    p.add_argument("endpoint")
    p.add_argument("--server-key")
    p.add_argument("--secret")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    security = Security(args.server_key, args.secret) if args.server_key else None
    operations = _operations()
    with Client(args.endpoint, timeout=args.timeout, security=security) as client:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                reply = {"ok": operations[request["op"]](client, request)}
            except (LssError, ConnectionError, KeyError) as exc:
                reply = {"error": type(exc).__name__, "message": str(exc)}
            print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["agent"]:
        sys.exit("usage: python -m tests.netns agent ENDPOINT [--server-key F --secret F]")
    sys.exit(agent_main(sys.argv[2:]))
