"""A real PostgreSQL server for tests and the bench, from the machine's installation,
always removed.

`PostgresServer` runs `initdb` into a fresh directory under /tmp and `pg_ctl start` on
a Unix socket in it (no TCP port), as the unprivileged `postgres` user when the tests
run as root (PostgreSQL refuses to run as root). `database()` creates an empty database
and returns its URL. `stop()` / `start()` let a test take the database away and bring
it back; `remove()` stops it for sure and deletes the directory. Given `listen` (an
address) and `clients_from` (a CIDR), it also listens on TCP there and trusts that
subnet, and given `netns` it runs inside that network namespace: the multi-host tests
(tests/integration/test_netns_brokers.py) put it on a host of their own that way.
Without the binaries,
`skip_reason()` says why: the test fixtures skip, the bench's section too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)
RUN_AS = "postgres"
START_TIMEOUT_S = 30


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in PG_BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    return None


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    for name in ("initdb", "pg_ctl"):
        if _binary(name) is None:
            return f"PostgreSQL's {name} is not installed (on PATH or in {PG_BIN_DIRS[0]})"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot be started"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


class PostgresServer:
    """One throwaway PostgreSQL cluster on a Unix socket."""

    def __init__(
        self, fsync: bool = False, *, listen: str = "", clients_from: str = "", netns: str = ""
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lss-pg-"))
        self.data = self.dir / "data"
        self.fsync = fsync
        self.listen = listen
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._names = itertools.count(1)
        self._as_root = os.geteuid() == 0
        if self._as_root:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.dir.chmod(0o700)
        self._run(_binary("initdb") or "initdb", "-D", str(self.data), "-A", "trust",
                  "-U", RUN_AS, "--no-sync", "-E", "UTF8")  # fmt: skip
        if clients_from:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all {RUN_AS} {clients_from} trust\n")

    def _run(self, *args: str) -> None:
        command = ["runuser", "-u", RUN_AS, "--", *args] if self._as_root else list(args)
        subprocess.run(
            [*self._prefix, *command], check=True, capture_output=True, timeout=START_TIMEOUT_S
        )

    def start(self) -> None:
        options = (
            f"-k {self.dir} -c listen_addresses='{self.listen}'"
            f" -c fsync={'on' if self.fsync else 'off'}"
        )
        self._run(_binary("pg_ctl") or "pg_ctl", "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), "-o", options, "-w", "-t",
                  str(START_TIMEOUT_S), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: as if it crashed)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_binary("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", mode, "-w",
                      "stop")  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgresql:///{database}?host={self.dir}&user={RUN_AS}"

    def tcp_url(self, database: str) -> str:
        """`database` over TCP, at the `listen` address."""
        return f"postgresql://{RUN_AS}@{self.listen}:5432/{database}"

    def create_database(self) -> str:
        """A new empty database; its name."""
        import psycopg

        name = f"lss_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def database(self) -> str:
        """A new empty database; its URL (on the Unix socket)."""
        return self.url(self.create_database())

    def pid(self) -> int:
        """The postmaster's pid (its children are the connections' server processes)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(fsync: bool = False) -> Iterator[PostgresServer]:
    """A started server, stopped and removed when the block ends, also on failure."""
    server = PostgresServer(fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        server.remove()
