"""The architecture's boundaries: the broker never loads pandas; the three packages
(broker, workers, clients) import only the protocol package, never each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["broker", "workers", "clients"]


def test_broker_does_not_import_pandas() -> None:
    code = "import sys, broker.broker, broker.__main__; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True)
    assert out.stdout.strip() == b"False"


def test_a_broker_on_sqlite_needs_no_psycopg(tmp_path: Path) -> None:
    """psycopg is the `postgres` extra: without it, a SQLite broker still starts."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if it were not installed
        "from broker.broker import Broker, BrokerSettings\n"
        f"broker = Broker(BrokerSettings(state_dir={str(tmp_path)!r},"
        " client_endpoint='tcp://127.0.0.1:*', worker_endpoint='tcp://127.0.0.1:*'))\n"
        "broker.close(); print(type(broker.store).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == b"SqliteStore"


def imported_top_levels(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_stand_side_by_side(package: str) -> None:
    others = set(PACKAGES) - {package}
    assert imported_top_levels(package) & others == set()


def test_protocol_imports_none_of_them() -> None:
    assert imported_top_levels("protocol") & set(PACKAGES) == set()
