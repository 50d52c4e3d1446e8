"""Shared fixtures: a generated data set, and real services that always get stopped.

Also how `./run.sh test` spreads the suite over processes (pytest-xdist, `--dist
loadgroup`): each module's tests run together on one worker, so a module-scoped service
starts once; a test marked `@pytest.mark.xdist_group("NAME")` joins group NAME instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness import Service
from tests.postgres import PostgresServer, postgres_or_skip
from workers.standin import generate

STANDIN_ROWS = 18_000


@pytest.fixture(scope="session")
def standin_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deterministic 18,000-row stand-in, generated once per test session."""
    path = tmp_path_factory.mktemp("data") / "standin.csv"
    generate(path, rows=STANDIN_ROWS)
    return path


@pytest.fixture
def service_factory(
    tmp_path: Path, standin_csv: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Service]]:
    """Make services (broker started, no workers yet); all are stopped at teardown."""
    made: list[Service] = []

    def make(data: Path | None = None, **broker_flags: Any) -> Service:
        state = tmp_path / f"state{len(made)}"
        service = Service(state, data or standin_csv, workers=0, **broker_flags)
        made.append(service)
        service.start_broker()
        return service

    yield make
    failed = getattr(request.node, "rep_call", None)
    for service in made:
        service.stop()
        if failed is not None and failed.failed:
            print(f"--- logs of {service.state_dir} ---\n{service.logs(20_000)}")


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Service:
    """A broker with two real worker processes, registered and ready: the test's own, or
    its module's `shared_service` for a test marked `shares_service`."""
    if request.node.get_closest_marker("shares_service"):
        shared: Service = request.getfixturevalue("shared_service")
        return shared
    svc: Service = request.getfixturevalue("service_factory")()
    svc.start_workers(2)
    return svc


@pytest.fixture(scope="module")
def shared_service(
    tmp_path_factory: pytest.TempPathFactory, standin_csv: Path
) -> Iterator[Service]:
    """Like `service`, but one per test module: for tests that only read and submit."""
    with Service(tmp_path_factory.mktemp("shared") / "state", standin_csv, workers=2) as svc:
        yield svc


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test with no `xdist_group` of its own is in its module's group; the netns tests
    are one group (each builds a lab of a dozen processes: one lab at a time)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "netns" if item.get_closest_marker("netns") else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (tests.postgres); skipped without one."""
    with postgres_or_skip() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """An empty database on the session's PostgreSQL server."""
    return postgres.database()
