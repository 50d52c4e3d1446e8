"""One peer's bad data or appetite costs that peer only, on real processes (issue 17,
holes 2 and 5; issue 21).

A submit with a NUL in its request id, or a NaN in its parameters, gets a clear
`bad_request`, and the other submits of the same BATCH (so of the same loop turn) are
accepted, on SQLite and on PostgreSQL, where a NUL used to roll back the turn. With
CURVE, a client key over its quota of stored bytes is refused and another key goes on.
The figures of each attack before and after: `python -m bench.attacks` (README).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from bench.harness import Service
from clients import Client, JobFailed, RequestRefused, Security
from protocol import messages as m
from protocol.curve import generate_keys

pytestmark = pytest.mark.integration

QUESTION = "Percent of adults aged 18 years and older who have obesity"


def batch_of_submits(endpoint: str, submits: list[m.Submit]) -> dict[bytes, m.Message]:
    """Send `submits` as one BATCH over a bare DEALER; each reply by its tag (the index)."""
    frames = m.batch([m.encode(submit, str(n).encode()) for n, submit in enumerate(submits)])
    got: dict[bytes, m.Message] = {}
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(frames)
        while len(got) < len(submits):
            assert sock.poll(10_000), f"replies so far: {got}"
            envelopes, errors = m.decode_all(sock.recv_multipart())
            assert not errors
            got.update((env.tag, env.message) for env in envelopes)
    return got


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_nul_or_a_nan_is_refused_and_costs_no_one_else_their_submit(
    service_factory: Callable[..., Service], request: pytest.FixtureRequest, store: str
) -> None:
    url = request.getfixturevalue("pg_url") if store == "postgresql" else "sqlite"
    service = service_factory(store=url)
    params = {"question": QUESTION}
    got = batch_of_submits(
        service.client_endpoint,
        [
            m.Submit("good-1", "global_mean", params),
            m.Submit("nul\x00", "global_mean", params),
            m.Submit("nan", "global_mean", {**params, "years": [2011, float("nan")]}),
            m.Submit("good-2", "global_mean", params),
        ],
    )
    assert isinstance(got[b"0"], m.Submitted) and isinstance(got[b"3"], m.Submitted), got
    for tag, said in ((b"1", "request_id holds a control character"), (b"2", "is nan")):
        refusal = got[tag]
        assert isinstance(refusal, m.ErrorReply) and refusal.code == "bad_request", refusal
        assert said in refusal.reason
    service.start_workers(1)  # the accepted jobs run (and the broker's drain is quick)
    with service.client() as client:
        assert client.stats()["storage_failures"] == {}
        accepted = [got[tag].job_id for tag in (b"0", b"3")]  # type: ignore[attr-defined]
        states = client.wait_all(accepted, timeout=20)
    assert [state["status"] for state in states.values()] == ["done", "done"], states


def test_a_key_over_its_quota_is_refused_and_another_key_goes_on(
    service_factory: Callable[..., Service], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, ["worker:worker", "client:alice", "client:bob", "admin:admin"])
    monkeypatch.setenv("LSS_CURVE_SERVER_KEY", str(keys / "broker.key"))
    monkeypatch.setenv("LSS_CURVE_SECRET", str(keys / "admin.key_secret"))
    service = service_factory(curve_dir=keys, key_quota_mb=0.25)  # about 3 answers of 72 KB
    service.start_workers(1, curve_server_key=keys / "broker.key",
                          curve_secret=keys / "worker.key_secret")  # fmt: skip
    alice, bob = (
        Client(service.client_endpoint, 30, security=Security(str(keys / "broker.key"),
                                                              str(keys / f"{name}.key_secret")))
        for name in ("alice", "bob")
    )  # fmt: skip
    with alice, bob:
        outcomes = []
        with pytest.raises(RequestRefused) as refused:
            for _ in range(20):  # each waited for: the quota counts what is stored
                job = alice.submit("mean_by_category", question=QUESTION)
                outcomes.append(_outcome(alice, job))
        assert refused.value.code == "over_limit" and "quota" in refused.value.reason
        assert 1 <= outcomes.count("done") <= 4 and outcomes[0] == "done", outcomes
        assert outcomes.count("quota") <= 1, outcomes  # an answer past the quota: not kept
        assert "global_mean" in bob.wait(bob.submit("global_mean", question=QUESTION), 30)
        key = alice.stats()["key"]
        assert key["quota_bytes"] == 0.25 * 2**20 and key["stored_bytes"] <= key["quota_bytes"]


def _outcome(client: Client, job: str) -> str:
    """'done', or 'quota' for a job whose answer was not kept for the quota."""
    try:
        client.wait(job, 30)
    except JobFailed as exc:
        assert str(exc).startswith("quota: answer of"), exc
        return "quota"
    return "done"
