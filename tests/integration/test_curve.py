"""CurveZMQ on loopback: allowed keys work; unknown keys and keyless peers get nothing;
each key does only what its role allows.

The broker runs with `--curve-dir`; this test process is a producer holding the
authorized `client` key (LSS_CURVE_* in its environment, which `Service` strips from the
processes it starts). Peers with a key pair that is not in `authorized/`, or with no
keys at all, must neither submit, read nor receive jobs, and the broker must log them.
Keys of the wrong role get no further: a client key on the worker endpoint is refused
like an unknown one; a client key sees only its own jobs and may not shut down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from bench.harness import Service
from bench.service import STOP_TIMEOUT_S, wait_until
from broker.security import RefusalLog, exposed, warn_if_plaintext
from clients import BrokerUnavailable, Client, RequestRefused, Security, UnknownJob
from protocol import messages as m
from protocol.curve import generate_keys, load_public_key, secure_client

pytestmark = pytest.mark.integration

OBESITY = "Percent of adults aged 18 years and older who have obesity"
REFUSAL_TIMEOUT_S = 1.5  # how long a refused producer waits before BrokerUnavailable


@pytest.fixture
def keys() -> Iterator[Path]:
    """An authorized key set: broker, worker, two clients (client, bob), admin.

    In a short directory, not tmp_path: the broker logs a key file's path cut to 100
    characters, and the file name at its end must fit whatever pytest's base directory
    (pytest-xdist adds popen-gwN/ to it)."""
    with tempfile.TemporaryDirectory(prefix="lss-keys-") as short:
        root = Path(short) / "keys"
        generate_keys(root, ["worker:worker", "client:client", "client:bob", "admin:admin"])
        yield root


@pytest.fixture
def rogue(tmp_path: Path) -> Path:
    """A key pair the broker has never seen (its own authorized/ is irrelevant)."""
    root = tmp_path / "rogue"
    generate_keys(root, ["worker:rogue"])
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
        assert client.stats()["jobs"] == {"running": 0, "done": 0, "error": 0, "cancelled": 0}


def test_workers_with_unknown_client_or_no_keys_get_no_jobs(
    secure_service: Service, keys: Path, rogue: Path
) -> None:
    rogue_key = load_public_key(rogue / "rogue.key").decode()
    outsiders = [
        secure_service.start_worker(**worker_keys(keys, rogue / "rogue.key_secret")),
        secure_service.start_worker(),  # no keys
        secure_service.start_worker(**worker_keys(keys, keys / "client.key_secret")),
        secure_service.start_worker(**worker_keys(keys, keys / "admin.key_secret")),
        secure_service.start_worker(fetch_data=True, data=Path("absent") / "data.csv",
                                    **worker_keys(keys, rogue / "rogue.key_secret")),
    ]  # fmt: skip
    wait_until(lambda: refusals(secure_service, rogue_key), 20, "the rogue worker's refusal")
    wait_until(lambda: refusals(secure_service, "does not speak CURVE"), 20, "keyless refusal")
    for role in ("client", "admin"):
        key = load_public_key(keys / f"{role}.key").decode()
        lines = wait_until(partial(refusals, secure_service, key), 20, f"{role} key refused")
        assert f"a {role} key may not use the worker endpoint" in lines[0]
    insider = secure_service.start_worker(**worker_keys(keys, keys / "worker.key_secret"))
    (registered,) = secure_service.wait_workers(1)
    assert registered["pid"] == insider.pid
    with secure_service.client() as client:
        answers = list(client.map([("global_mean", {"question": OBESITY})] * 6))
        workers = client.stats()["workers"]
    assert len(answers) == 6
    assert [w["pid"] for w in workers] == [insider.pid]
    assert all(p.poll() is None for p in outsiders[:4]), "refused workers keep retrying"
    # the allow-list is reread when it changes: authorizing the key admits the worker
    shutil.copy(rogue / "rogue.key", keys / "authorized" / "worker" / "rogue.key")
    admitted = secure_service.wait_workers(2)
    assert {w["pid"] for w in admitted} == {insider.pid, outsiders[0].pid}


def test_a_key_file_named_in_bytes_that_are_not_utf8_lets_no_stranger_in(
    secure_service: Service, keys: Path, rogue: Path, tmp_path: Path
) -> None:
    """Issue 17, hole 1: an authorized key file named caf\\xe9 killed the ZAP handler at
    its holder's first handshake; libzmq then admitted every key, and a stranger's key
    registered as a worker, took a job and forged its answer."""
    generate_keys(tmp_path / "cafe", ["client:cafe"])
    bad_name = os.fsdecode(b"caf\xe9.key")  # what `./run.sh keys` used to make of the name
    shutil.copy(tmp_path / "cafe" / "cafe.key", keys / "authorized" / "client" / bad_name)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        holder = _peer(context, keys, tmp_path / "cafe" / "cafe.key_secret")
        holder_handshake = _handshake_of(holder)
        holder.connect(secure_service.client_endpoint)
        with contextlib.suppress(zmq.Again):  # refused already: nowhere to queue
            holder.send_multipart(m.encode(m.Ping(), b"t"), zmq.NOBLOCK)
        holder_answered = holder_handshake.poll(10_000)  # the handler that died never did
        stranger = _peer(context, keys, rogue / "rogue.key_secret")
        stranger_handshake = _handshake_of(stranger)
        stranger.connect(secure_service.worker_endpoint)
        with contextlib.suppress(zmq.Again):  # refused already: nowhere to queue
            stranger.send_multipart(m.encode(m.Ready(1, "0" * 64, 4242, "stranger")), zmq.NOBLOCK)
        assert stranger_handshake.poll(10_000), "the stranger's handshake got no answer"
        event = recv_monitor_message(stranger_handshake)["event"]
        assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH, f"the stranger got in ({event!r})"
        assert holder_answered, "the badly named key's handshake got no answer"
        assert recv_monitor_message(holder_handshake)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        context.destroy(linger=0)
    insider = secure_service.start_worker(**worker_keys(keys, keys / "worker.key_secret"))
    (registered,) = secure_service.wait_workers(1)  # the handler still answers
    assert registered["pid"] == insider.pid
    with secure_service.client() as client:
        job = client.submit("state_mean", question=OBESITY, state="Ohio")
        assert client.wait(job) != {"Ohio": 99.9}
        assert [w["pid"] for w in client.stats()["workers"]] == [insider.pid]
    (ignored,) = [line for line in secure_service.logs().splitlines() if "ignoring" in line]
    assert "ERROR" in ignored and "caf\\xe9.key" in ignored and "printable UTF-8" in ignored


def _peer(context: zmq.Context[zmq.Socket[bytes]], keys: Path, secret: Path) -> zmq.Socket[bytes]:
    """A CURVE DEALER holding the key pair in `secret`, not yet connected."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    secure_client(sock, keys / "broker.key", secret)
    return sock


def _handshake_of(sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
    """A monitor of `sock` that reports its CURVE handshake's outcome (call before connect)."""
    return sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def keyed(service: Service, keys: Path, name: str) -> Client:
    """A client of `service` holding the key pair `name` from `keys`."""
    security = Security(str(keys / "broker.key"), str(keys / f"{name}.key_secret"))
    return Client(service.client_endpoint, 10, security=security)


def test_shutdown_is_for_admin_keys_only(secure_service: Service, keys: Path) -> None:
    with keyed(secure_service, keys, "client") as client:
        with pytest.raises(RequestRefused) as refused:
            client.shutdown()
        assert refused.value.code == "forbidden"
        assert "may not shut the service down" in refused.value.reason
        assert client.ping()["shutting_down"] is False
    assert secure_service.broker is not None and secure_service.broker.poll() is None
    lines = [line for line in secure_service.logs().splitlines() if "refused shut" in line]
    assert len(lines) == 1 and "client key client" in lines[0], lines
    with keyed(secure_service, keys, "admin") as admin:
        assert admin.shutdown() == 0
    assert secure_service.broker.wait(timeout=STOP_TIMEOUT_S) == 0


def test_client_keys_see_only_their_own_jobs_and_admins_see_all(
    secure_service: Service, keys: Path
) -> None:
    secure_service.start_workers(1, **worker_keys(keys, keys / "worker.key_secret"))
    alice, bob, admin = (keyed(secure_service, keys, n) for n in ("client", "bob", "admin"))
    with alice, bob, admin:
        mine = alice.submit("global_mean", question=OBESITY)
        theirs = bob.submit("state_mean", question=OBESITY, state="Ohio")
        alice.wait(mine)
        bob.wait(theirs)
        never_issued = alice.get("job_id_999999")
        assert never_issued == {"status": "error", "reason": "Invalid job_id"}
        assert alice.get(theirs) == never_issued and bob.get(mine) == never_issued
        with pytest.raises(UnknownJob, match="Invalid job_id"):
            alice.wait(theirs)
        assert alice.jobs() == {mine: "done"} and bob.jobs() == {theirs: "done"}
        assert admin.jobs() == {mine: "done", theirs: "done"}
        assert set(admin.get(theirs)["data"]) == {"Ohio"}
        assert alice.num_jobs() == bob.num_jobs() == admin.num_jobs() == 0


def test_a_client_key_cannot_take_another_keys_request_id(
    secure_service: Service, keys: Path
) -> None:
    """Resubmitting another key's request id is refused: it must not hand out that job."""
    secure_service.start_workers(1, **worker_keys(keys, keys / "worker.key_secret"))
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        replies = [
            _ask(context, secure_service, keys, name, m.Submit("shared-id", "best5",
                                                               {"question": OBESITY}))
            for name in ("bob", "client", "bob", "admin")
        ]  # fmt: skip
    finally:
        context.destroy(linger=0)
    first, stolen, again, by_admin = (reply.message for reply in replies)
    assert isinstance(first, m.Submitted)
    assert isinstance(stolen, m.ErrorReply) and stolen.code == "forbidden", stolen
    assert first.job_id not in stolen.reason
    assert again == first and by_admin == first


def _ask(
    context: zmq.Context[zmq.Socket[bytes]],
    service: Service,
    keys: Path,
    name: str,
    request: m.Message,
) -> m.Envelope:
    """One request over a fresh CURVE DEALER holding key `name`; its decoded reply."""
    sock = _peer(context, keys, keys / f"{name}.key_secret")
    sock.connect(service.client_endpoint)
    try:
        sock.send_multipart(m.encode(request, b"t"))
        assert sock.poll(10_000), f"no reply to {name}"
        return m.decode(sock.recv_multipart())
    finally:
        sock.close(linger=0)


@pytest.mark.parametrize(
    "name", [os.fsdecode(b"caf\xe9"), "tab\there", "new\nline", "right\u202eto-left", "../up"]
)
def test_key_names_must_be_plain_printable_utf8(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from protocol.curve import main

    with pytest.raises(SystemExit) as refused:  # what `./run.sh keys DIR client:NAME` runs
        main([str(tmp_path / "keys"), f"client:{name}"])
    assert refused.value.code == 2 and "bad key name" in capsys.readouterr().err
    assert not (tmp_path / "keys").exists()
    assert generate_keys(tmp_path / "keys", ["client:café ok"])  # printable UTF-8 is fine


def test_keys_in_the_old_layout_are_reported_and_not_admitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from protocol.curve import main, old_layout_note

    root = tmp_path / "keys"
    generate_keys(root, ["client:p"])
    shutil.copy(root / "p.key", root / "authorized" / "p.key")  # as the old ./run.sh keys did
    assert main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: p.key in" in out and "NOT admitted" in out
    assert old_layout_note(root) is not None and "authorized/client/" in str(old_layout_note(root))


def test_secret_keys_are_created_0600_and_the_layout_has_roles(tmp_path: Path) -> None:
    root = tmp_path / "keys"
    made = generate_keys(root, ["worker:w1", "client:c1", "admin:ops"])
    assert sorted(p.name for p in made) == ["broker.key", "c1.key", "ops.key", "w1.key"]
    for name in ("broker", "w1", "c1", "ops"):
        assert (root / f"{name}.key_secret").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (root / "authorized" / "admin").iterdir()] == ["ops.key"]
    assert [p.name for p in (root / "authorized" / "worker").iterdir()] == ["w1.key"]
    assert generate_keys(root, ["client:c1"]) == []  # kept, never rewritten
    with pytest.raises(ValueError, match="ROLE:NAME"):
        generate_keys(root, ["operator:x"])


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
        assert not log.refused("10.0.0.9", "KEY2", "Unknown key")  # a new key: the same peer
        now[0] += 10.0
        assert log.refused("10.0.0.9", "KEY", "Unknown key")
    assert log.total == 5
    assert [r.getMessage() for r in caplog.records] == [
        "refused 10.0.0.9 with key KEY: Unknown key",
        "refused 10.0.0.8 with key KEY: Unknown key",
        "refused 10.0.0.9 with key KEY: Unknown key (refused 2 more time(s) since the last report)",
    ]
