"""CurveZMQ on loopback: allowed keys work; unknown keys and keyless peers get nothing.

The broker runs with `--curve-dir`; this test process is a producer holding the
authorized `client` key (LSS_CURVE_* in its environment, which `Service` strips from the
processes it starts). Peers with a key pair that is not in `authorized/`, or with no
keys at all, must neither submit, read nor receive jobs, and the broker must log them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.harness import Service
from bench.service import wait_until
from broker.security import RefusalLog, exposed, warn_if_plaintext
from clients import BrokerUnavailable, Client, Security
from protocol.curve import generate_keys, load_public_key

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
REFUSAL_TIMEOUT_S = 1.5  # how long a refused producer waits before BrokerUnavailable


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """An authorized key set: broker, worker, client."""
    root = tmp_path / "keys"
    generate_keys(root, ["worker", "client"])
    return root


@pytest.fixture
def rogue(tmp_path: Path) -> Path:
    """A key pair the broker has never seen (its own authorized/ is irrelevant)."""
    root = tmp_path / "rogue"
    generate_keys(root, ["rogue"])
    return root


@pytest.fixture
def secure_service(
    service_factory: Callable[..., Service], keys: Path, monkeypatch: pytest.MonkeyPatch
) -> Service:
    """A CURVE broker; this process talks to it with the authorized client key."""
    monkeypatch.setenv("LSS_CURVE_SERVER_KEY", str(keys / "broker.key"))
    monkeypatch.setenv("LSS_CURVE_SECRET", str(keys / "client.key_secret"))
    return service_factory(curve_dir=keys)


def worker_keys(keys: Path, secret: Path) -> dict[str, object]:
    return {"curve_server_key": keys / "broker.key", "curve_secret": secret}


def refusals(service: Service, text: str) -> list[str]:
    """The broker's WARNING lines about refused peers that mention `text`."""
    return [
        line
        for line in service.logs().splitlines()
        if "WARNING" in line and "lss.broker.auth" in line and "refused" in line and text in line
    ]


def assert_refused(client: Client) -> None:
    """`client` can neither ping, submit nor read; closes it."""
    with client:
        for call in (
            client.ping,
            lambda: client.submit("global_mean", question=OBESITY),
            lambda: client.get("job_id_1"),
        ):
            with pytest.raises(BrokerUnavailable):
                call()


def test_allowed_keys_work_end_to_end(secure_service: Service, keys: Path) -> None:
    secure_service.start_workers(2, **worker_keys(keys, keys / "worker.key_secret"))
    with secure_service.client() as client:
        answers = list(client.map([("global_mean", {"question": OBESITY})] * 8))
        assert client.stats()["jobs"]["done"] == 8
    assert all(set(a) == {"global_mean"} and 10 < a["global_mean"] < 60 for a in answers)
    assert not refusals(secure_service, "")


def test_unknown_and_missing_keys_get_nothing(
    secure_service: Service, keys: Path, rogue: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, timeout = secure_service.client_endpoint, REFUSAL_TIMEOUT_S
    outsiders = [
        Client(endpoint, timeout, security=Security(str(keys / "broker.key"),
                                                    str(rogue / "rogue.key_secret"))),
        # the right client key, but a wrong idea of the broker's key: no handshake either
        Client(endpoint, timeout, security=Security(str(rogue / "broker.key"),
                                                    str(keys / "client.key_secret"))),
    ]  # fmt: skip
    with monkeypatch.context() as env:
        env.delenv("LSS_CURVE_SERVER_KEY")
        env.delenv("LSS_CURVE_SECRET")
        outsiders.append(Client(endpoint, timeout))  # keyless
    with ThreadPoolExecutor(len(outsiders)) as pool:
        list(pool.map(assert_refused, outsiders))
    rogue_key = load_public_key(rogue / "rogue.key").decode()
    wait_until(lambda: refusals(secure_service, rogue_key), 10, "the unknown key's refusal")
    wait_until(lambda: refusals(secure_service, "does not speak CURVE"), 10, "keyless refusal")
    with secure_service.client() as client:
        assert client.stats()["jobs"] == {"running": 0, "done": 0, "error": 0}


def test_workers_with_unknown_or_no_keys_get_no_jobs(
    secure_service: Service, keys: Path, rogue: Path
) -> None:
    rogue_key = load_public_key(rogue / "rogue.key").decode()
    outsiders = [
        secure_service.start_worker(**worker_keys(keys, rogue / "rogue.key_secret")),
        secure_service.start_worker(),  # no keys
        secure_service.start_worker(fetch_data=True, data=Path("absent") / "data.csv",
                                    **worker_keys(keys, rogue / "rogue.key_secret")),
    ]  # fmt: skip
    wait_until(lambda: refusals(secure_service, rogue_key), 20, "the rogue worker's refusal")
    wait_until(lambda: refusals(secure_service, "does not speak CURVE"), 20, "keyless refusal")
    insider = secure_service.start_worker(**worker_keys(keys, keys / "worker.key_secret"))
    (registered,) = secure_service.wait_workers(1)
    assert registered["pid"] == insider.pid
    with secure_service.client() as client:
        answers = list(client.map([("global_mean", {"question": OBESITY})] * 6))
        workers = client.stats()["workers"]
    assert len(answers) == 6
    assert [w["pid"] for w in workers] == [insider.pid]
    assert all(p.poll() is None for p in outsiders[:2]), "refused workers keep retrying"
    # the allow-list is reread when it changes: authorizing the key admits the worker
    shutil.copy(rogue / "rogue.key", keys / "authorized" / "rogue.key")
    admitted = secure_service.wait_workers(2)
    assert {w["pid"] for w in admitted} == {insider.pid, outsiders[0].pid}


@pytest.mark.parametrize(
    ("endpoint", "reachable"),
    [
        ("tcp://127.0.0.1:5555", False),
        ("tcp://127.9.9.9:*", False),
        ("tcp://[::1]:5555", False),
        ("tcp://localhost:5555", False),
        ("ipc:///tmp/lss.sock", False),
        ("tcp://10.203.0.1:5555", True),
        ("tcp://*:5555", True),
        ("tcp://eth0:5555", True),
    ],
)
def test_which_endpoints_other_hosts_can_reach(endpoint: str, reachable: bool) -> None:
    assert exposed(endpoint) is reachable
    assert warn_if_plaintext([endpoint], curve_on=True) == []
    assert warn_if_plaintext([endpoint], curve_on=False) == ([endpoint] if reachable else [])


def test_refusals_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = RefusalLog(every_s=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="lss.broker.auth"):
        assert log.refused("10.0.0.9", "KEY", "Unknown key")
        assert not log.refused("10.0.0.9", "KEY", "Unknown key")
        assert log.refused("10.0.0.8", "KEY", "Unknown key")  # another peer: its own line
        now[0] += 10.0
        assert log.refused("10.0.0.9", "KEY", "Unknown key")
    assert log.total == 4
    assert [r.getMessage() for r in caplog.records] == [
        "refused 10.0.0.9 with key KEY: Unknown key",
        "refused 10.0.0.8 with key KEY: Unknown key",
        "refused 10.0.0.9 with key KEY: Unknown key (refused 1 more time(s) since the last report)",
    ]
