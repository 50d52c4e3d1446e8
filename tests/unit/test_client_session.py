"""The client's sans-I/O core (clients.session) on hand-made replies: no sockets, no clock.

Times are plain numbers passed in; replies are built with the protocol's own types.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from clients import AsyncClient, Client
from clients.api import StatisticMethods
from clients.session import HEARTBEAT_TAG, Request, Session, answer_of, final_answer, status_dict
from protocol import messages as m
from protocol.errors import (
    BrokerUnavailable,
    JobFailed,
    ProtocolError,
    RequestRefused,
    UnknownJob,
)
from protocol.questions import QUESTION_IDS, question_list

INTERVAL_S, LIVENESS = 1.0, 3
ANSWER = {"Ohio": 31.2}


def new_session() -> Session:
    session = Session(0.0, heartbeat_interval_s=INTERVAL_S, heartbeat_liveness=LIVENESS)
    session.connected(0.0)
    session.outgoing()  # the first ping
    return session


def sent(session: Session) -> list[m.Envelope]:
    """What the session hands its driver to send, decoded (BATCHes opened)."""
    envelopes: list[m.Envelope] = []
    for frames in session.outgoing():
        decoded, errors = m.decode_all(frames)
        assert not errors
        envelopes += decoded
    return envelopes


def done_reply(request: Request, job: str = "job_id_1") -> list[bytes]:
    return m.encode(m.JobState(job, "done"), request.tag, m.pack(ANSWER))


def pong(broker_id: str) -> list[bytes]:
    return m.encode(m.Pong(broker_id), HEARTBEAT_TAG)


def test_a_request_is_sent_once_and_its_reply_ends_it() -> None:
    session = new_session()
    request = session.request(m.Submit("r1", "state_mean", {"question": "Q"}, notify=True))
    (envelope,) = sent(session)
    assert envelope.tag == request.tag
    assert envelope.message == m.Submit("r1", "state_mean", {"question": "Q"}, notify=True)
    assert sent(session) == []  # sent once
    assert session.receive(done_reply(request), 0.1) == [request]
    assert final_answer(request.outcome()) == ANSWER
    assert session.pending == {}


def test_requests_queued_together_leave_as_one_batch_in_order() -> None:
    session = new_session()
    requests = [session.request(m.Get(f"job_id_{n}")) for n in range(1, 4)]
    (frames,) = session.outgoing()
    assert frames[0] == m.BATCH_HEADER
    assert [m.decode(item).tag for item in m.messages_in(frames)] == [r.tag for r in requests]


def test_replies_in_a_batch_each_end_their_request_and_duplicates_are_dropped() -> None:
    session = new_session()
    first, second = session.request(m.Wait("job_id_1")), session.request(m.Wait("job_id_2"))
    batch = m.batch([done_reply(second, "job_id_2"), done_reply(first)])
    assert session.receive(batch, 0.1) == [second, first]
    assert session.receive(done_reply(first), 0.2) == []  # a reply to a resent request


def test_a_malformed_reply_fails_its_request_and_is_counted() -> None:
    session = new_session()
    request = session.request(m.Get("job_id_1"))
    garbled = [m.PROTOCOL_ID + bytes([m.Command.JOB_STATE]) + request.tag, b"\xc1"]
    assert session.receive(garbled, 0.1) == [request]
    with pytest.raises(ProtocolError, match="malformed reply"):
        request.outcome()
    assert session.receive([b"HTTP/1.1 200 OK"], 0.2) == []  # no tag to blame
    assert session.malformed == 2


def test_a_forgotten_request_ignores_its_late_reply() -> None:
    session = new_session()
    request = session.request(m.Wait("job_id_1"))
    session.forget(request)
    assert session.receive(done_reply(request), 0.1) == []
    assert not request.done


def test_a_new_broker_id_resends_everything_pending() -> None:
    session = new_session()
    answered, waiting = session.request(m.Get("job_id_1")), session.request(m.Wait("job_id_2"))
    sent(session)
    session.receive(pong("broker-a"), 0.1)
    session.receive(done_reply(answered), 0.1)
    session.receive(pong("broker-a"), 0.2)
    assert sent(session) == []  # the same broker: nothing to resend
    session.receive(pong("broker-b"), 0.3)
    assert [e.message for e in sent(session)] == [m.Wait("job_id_2")]
    assert session.broker_id == "broker-b" and waiting.tag in session.pending


def test_liveness_pings_after_an_interval_then_asks_for_a_reconnect() -> None:
    session = new_session()
    assert not session.tick(100.0)  # nothing pending: silence is fine
    request = session.request(m.Wait("job_id_1"))
    sent(session)
    assert not session.tick(100.5)  # silence counts from the first tick with a question
    assert not session.tick(101.4)
    assert sent(session) == []
    assert not session.tick(101.5)
    assert [(e.tag, e.message) for e in sent(session)] == [(HEARTBEAT_TAG, m.Ping())]
    assert not session.tick(103.0)  # a ping an interval after the last one
    assert len(sent(session)) == 1
    assert session.tick(103.6)  # LIVENESS intervals without a word
    session.connected(103.6)
    assert [e.message for e in sent(session)] == [m.Ping(), m.Wait("job_id_1")]
    session.receive(done_reply(request), 103.7)
    assert request.done


def test_a_reply_counts_as_a_sign_of_life() -> None:
    session = new_session()
    session.request(m.Wait("job_id_1"))
    session.request(m.Wait("job_id_2"))
    sent(session)
    assert not session.tick(0.1)
    session.receive(pong("broker-a"), 2.5)
    assert not session.tick(5.4)  # 5.3 s since the first tick, 2.9 s since the pong


def test_closing_fails_every_pending_request_with_an_lss_error() -> None:
    session = new_session()
    requests = [session.request(m.Wait("job_id_1")), session.request(m.NumJobs())]
    assert session.fail_all(BrokerUnavailable("client closed")) == requests
    for request in requests:
        with pytest.raises(BrokerUnavailable):
            request.outcome()
    assert sent(session) == []


def _envelope(message: m.Message, payload: Any = None) -> m.Envelope:
    return m.Envelope(message, b"1", None if payload is None else m.pack(payload))


def test_replies_become_answers_or_typed_errors() -> None:
    assert final_answer(_envelope(m.JobState("job_id_1", "done"), ANSWER)) == ANSWER
    with pytest.raises(JobFailed, match="no data"):
        final_answer(_envelope(m.JobState("job_id_1", "error", reason="no data")))
    with pytest.raises(UnknownJob):
        final_answer(_envelope(m.ErrorReply("invalid_job_id", "Invalid job_id")))
    with pytest.raises(RequestRefused, match="queue full") as refused:
        final_answer(_envelope(m.ErrorReply("queue_full", "queue full")))
    assert refused.value.code == "queue_full"
    with pytest.raises(ProtocolError, match="expected JobState"):
        final_answer(_envelope(m.Pong("b")))
    with pytest.raises(ProtocolError, match="no answer frame"):
        answer_of(_envelope(m.JobState("job_id_1", "done")))


def test_job_states_have_the_original_services_shape() -> None:
    assert status_dict(_envelope(m.JobState("job_id_1", "running"))) == {"status": "running"}
    assert status_dict(_envelope(m.JobState("job_id_1", "done"), ANSWER)) == {
        "status": "done",
        "data": ANSWER,
    }
    failed = _envelope(m.JobState("job_id_1", "error", reason="boom"))
    assert status_dict(failed) == {"status": "error", "reason": "boom"}
    expired = _envelope(m.ErrorReply("expired", "expired"))
    assert status_dict(expired) == {"status": "error", "reason": "expired"}


def test_the_statistic_methods_are_the_protocols_catalogue() -> None:
    own = {
        name
        for name, value in vars(StatisticMethods).items()
        if inspect.isfunction(value) and not name.startswith("_") and name != "run"
    }
    assert own == set(m.STATISTICS)
    for name in m.STATISTICS:
        state = ["state"] if name in m.STATE_STATISTICS else []
        wanted = ["self", "question", *state, "years", "priority", "deadline"]
        method = getattr(StatisticMethods, name)
        assert list(inspect.signature(method).parameters) == wanted
        assert getattr(Client, name) is getattr(AsyncClient, name) is method


def test_request_ids_are_never_reused_within_or_across_sessions() -> None:
    first, second = new_session(), new_session()
    ids = [session.new_request_id() for session in (first, second) for _ in range(3)]
    assert len(set(ids)) == len(ids)


def test_silence_while_nothing_was_asked_is_no_sign_of_death() -> None:
    session = new_session()
    session.request(m.Get("job_id_1"))
    session.receive(done_reply(session.pending[b"1"]), 0.1)
    assert not session.tick(0.2)
    session.request(m.Wait("job_id_1"))  # after a long idle spell
    assert not session.tick(100.0)  # silence counts from here on
    assert not session.tick(102.5)
    assert session.tick(103.1)


class _Recorder(StatisticMethods[dict[str, Any]]):
    """The statistic methods over a `run` that returns the job instead of sending it."""

    scheduled: tuple[int, float | None] | None = None

    def run(
        self,
        statistic: str,
        /,
        timeout: float | None = None,
        *,
        priority: int = m.DEFAULT_PRIORITY,
        deadline: float | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        self.scheduled = (priority, deadline)
        return {"statistic": statistic, **params}


def test_years_travel_as_first_last_and_only_when_given() -> None:
    recorder = _Recorder()
    assert recorder.state_trend("obesity", "OH", years=(2015, 2020)) == {
        "statistic": "state_trend",
        "question": "obesity",
        "state": "OH",
        "years": [2015, 2020],
    }
    assert recorder.best5("obesity") == {"statistic": "best5", "question": "obesity"}


@pytest.mark.parametrize("name", m.STATISTICS)
def test_every_statistic_method_passes_priority_and_deadline_to_run(name: str) -> None:
    recorder = _Recorder()
    state = ("OH",) if name in m.STATE_STATISTICS else ()
    job = getattr(recorder, name)("obesity", *state, priority=1, deadline=2.5)
    assert recorder.scheduled == (1, 2.5)
    assert "priority" not in job and "deadline" not in job  # not the job's parameters
    by_default = _Recorder()
    getattr(by_default, name)("obesity", *state)
    assert by_default.scheduled == (m.DEFAULT_PRIORITY, None)


def test_the_questions_are_listed_without_a_broker() -> None:
    listed = Client.questions()
    assert listed == AsyncClient.questions() == question_list()
    assert {"id": "obesity", "question": QUESTION_IDS["obesity"]} in listed
