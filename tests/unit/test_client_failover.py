"""The client session's moves between brokers (clients.session), on hand-made events.

No sockets and no clock: times are plain numbers, replies are built with the protocol's
own types. What moves a session is silence while it waits for a reply (see
docs/protocol.md, "Several brokers").
"""

from __future__ import annotations

import pytest

from clients import AsyncClient, Client
from clients.session import HEARTBEAT_TAG, Request, Session
from protocol import config
from protocol import messages as m

INTERVAL_S, LIVENESS = 1.0, 3
WINDOW_S = INTERVAL_S * LIVENESS
A, B, C = "tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555", "tcp://10.0.0.3:5555"


def new_session(endpoints: str | list[str] = f"{A},{B},{C}") -> Session:
    session = Session(
        0.0, endpoints=endpoints, heartbeat_interval_s=INTERVAL_S, heartbeat_liveness=LIVENESS
    )
    session.connected(0.0)
    session.outgoing()  # the first ping
    return session


def sent(session: Session) -> list[list[bytes]]:
    """The messages the session hands its driver, BATCHes opened, still encoded."""
    return [message for frames in session.outgoing() for message in m.messages_in(frames)]


def messages(session: Session) -> list[m.Message]:
    return [m.decode(frames).message for frames in sent(session)]


def pong(broker_id: str) -> list[bytes]:
    return m.encode(m.Pong(broker_id), HEARTBEAT_TAG)


def silent_until_move(session: Session, start: float) -> float:
    """Tick every half interval from `start` until the session asks to reconnect; when."""
    now = start
    while not session.tick(now):
        now += INTERVAL_S / 2
        assert now < start + 10 * WINDOW_S, "the session never gave up on its broker"
    return now


def test_endpoint_lists_are_read_from_text_or_a_list() -> None:
    assert config.endpoints(f" {A}, {B},,") == [A, B]
    assert config.endpoints([A, f" {B} "]) == [A, B]
    assert config.endpoints(A) == [A]
    empties: list[str | list[str]] = ["", " , ", []]
    for empty in empties:
        with pytest.raises(ValueError, match="no broker endpoint"):
            config.endpoints(empty)


def test_a_silent_broker_is_left_for_the_next_endpoint_in_turn() -> None:
    session = new_session()
    assert session.endpoint == A
    session.request(m.Wait("job_id_1"))
    sent(session)
    seen = [session.endpoint]
    now = 0.0
    for _ in range(3):
        now = silent_until_move(session, now)
        session.connected(now)
        sent(session)
        seen.append(session.endpoint)
    assert seen == [A, B, C, A]


def test_the_move_comes_after_the_heartbeat_window_and_not_before() -> None:
    session = new_session()
    session.request(m.Wait("job_id_1"))
    sent(session)
    session.tick(0.0)  # the first tick with a question: silence counts from here
    assert not session.tick(WINDOW_S)
    assert session.endpoint == A
    assert session.tick(WINDOW_S + 0.01)
    assert session.endpoint == B


def test_a_single_endpoint_reconnects_to_itself() -> None:
    session = new_session(A)
    session.request(m.Wait("job_id_1"))
    sent(session)
    silent_until_move(session, 0.0)
    assert session.endpoint == A and session.endpoints == [A]


def test_everything_pending_is_resent_to_the_next_broker_byte_for_byte() -> None:
    session = new_session()
    submit = session.request(m.Submit("client-1", "state_mean", {"question": "Q"}, notify=True))
    wait = session.request(m.Wait("job_id_7"))
    first = sent(session)
    session.receive(pong("broker-a"), 0.1)
    now = silent_until_move(session, 0.1)
    session.connected(now)
    again = sent(session)
    assert m.decode(again[0]).message == m.Ping()  # to learn the new broker's id
    assert again[1:] == first  # the same tags, the same request id: a store dedups them
    assert m.decode(again[1]).message.request_id == "client-1"  # type: ignore[attr-defined]
    assert {submit.tag, wait.tag} == set(session.pending)


def test_a_call_in_progress_is_answered_by_the_next_broker() -> None:
    session = new_session()
    waiting = session.request(m.Submit("client-1", "global_mean", {"question": "Q"}, True))
    sent(session)
    now = silent_until_move(session, 0.0)
    session.connected(now)
    sent(session)
    answered = session.receive(_done(waiting), now + 0.1)
    assert answered == [waiting] and waiting.done and not session.pending


def test_the_next_brokers_id_is_news_not_a_restart_so_nothing_is_sent_twice() -> None:
    session = new_session()
    session.request(m.Wait("job_id_1"))
    sent(session)
    session.receive(pong("broker-a"), 0.1)
    now = silent_until_move(session, 0.1)
    session.connected(now)
    assert len(sent(session)) == 2  # the ping and the wait
    session.receive(pong("broker-b"), now + 0.1)
    assert sent(session) == []
    assert session.broker_id == "broker-b"


def test_silence_without_a_question_moves_nothing() -> None:
    session = new_session()
    assert not session.tick(100 * WINDOW_S)
    session.request(m.Wait("job_id_1"))
    sent(session)
    assert not session.tick(101 * WINDOW_S)  # silence counts from the question
    assert session.endpoint == A


def test_callers_with_short_deadlines_still_leave_a_dead_broker() -> None:
    """Each call gives up after less than the window, yet their silence adds up."""
    session = new_session()
    now, calls = 0.0, 0
    while session.endpoint == A:
        calls += 1
        assert calls < 10, "short calls never left the silent broker"
        request = session.request(m.Ping())
        for _ in range(3):  # a one-second deadline, ticked every half interval
            if session.tick(now):
                break
            now += INTERVAL_S / 2
        session.forget(request)
        now += 60.0  # the caller sleeps between calls: that silence is no one's question
    assert session.endpoint == B and calls > 1


def test_an_answered_question_clears_the_doubt() -> None:
    session = new_session()
    request = session.request(m.Ping())
    session.tick(0.0)
    session.tick(2.0)  # two seconds of silence, then the caller gives up
    session.forget(request)
    session.receive(pong("broker-a"), 2.5)
    later = session.request(m.Wait("job_id_1"))
    session.tick(100.0)
    assert not session.tick(100.0 + WINDOW_S)  # a full window again, not one second
    assert later.tag in session.pending and session.endpoint == A


def test_another_session_of_the_client_starts_where_a_broker_answered() -> None:
    session = new_session()
    session.request(m.Wait("job_id_1"))
    sent(session)
    session.connected(silent_until_move(session, 0.0))
    assert session.endpoints_from_here() == [B, C, A]
    assert Session(0.0, endpoints=session.endpoints_from_here()).endpoint == B


def _done(request: Request) -> list[bytes]:
    return m.encode(m.JobState("job_id_1", "done"), request.tag, m.pack({"global_mean": 1.0}))


def test_the_clients_take_a_comma_separated_list_or_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local_a, local_b = "tcp://127.0.0.1:9", "tcp://127.0.0.1:19"  # nothing is sent to them
    with Client(f" {local_a} , {local_b}") as text, Client([local_a, local_b]) as listed:
        assert text.endpoints == listed.endpoints == [local_a, local_b]
        assert text.endpoint == f"{local_a},{local_b}"  # hands the list on as it is
    monkeypatch.setenv("LSS_CLIENT_ENDPOINT", f"{local_b},{local_a}")
    assert AsyncClient().endpoints == [local_b, local_a]
    with pytest.raises(ValueError, match="no broker endpoint"):
        Client(" , ")


# --- refusals that say the request may be sent again (ErrorReply.retry_after_ms) -------


def refusal(request: Request, code: m.ErrorCode, retry_after_ms: int) -> list[bytes]:
    return m.encode(m.ErrorReply(code.value, "no", retry_after_ms), request.tag)


def test_shutting_down_with_a_retry_moves_to_the_next_broker_and_resends() -> None:
    session = new_session()
    submit = session.request(m.Submit("r-1", "global_mean", {"question": "q"}))
    sent(session)
    assert session.receive(refusal(submit, m.ErrorCode.SHUTTING_DOWN, 1000), 1.0) == []
    assert session.tick(1.0) and session.endpoint == B  # at once, no silence needed
    session.connected(1.0)
    assert m.Submit("r-1", "global_mean", {"question": "q"}) in messages(session)
    assert not submit.done


def test_shutting_down_everywhere_ends_the_request_after_each_broker_refused() -> None:
    session = new_session()
    submit = session.request(m.Submit("r-1", "global_mean", {"question": "q"}))
    for now in (1.0, 2.0):
        session.receive(refusal(submit, m.ErrorCode.SHUTTING_DOWN, 1000), now)
        assert session.tick(now)
        session.connected(now)
    answered = session.receive(refusal(submit, m.ErrorCode.SHUTTING_DOWN, 1000), 3.0)
    assert answered == [submit] and submit.reply is not None
    assert not session.tick(3.0)


def test_a_refusal_without_retry_or_with_one_endpoint_is_the_answer() -> None:
    for endpoints, code, retry_ms in ((A, m.ErrorCode.SHUTTING_DOWN, 1000),
                                      (f"{A},{B}", m.ErrorCode.SHUTTING_DOWN, 0),
                                      (f"{A},{B}", m.ErrorCode.STORAGE, 0)):  # fmt: skip
        session = new_session(endpoints)
        submit = session.request(m.Submit("r-1", "global_mean", {"question": "q"}))
        assert session.receive(refusal(submit, code, retry_ms), 1.0) == [submit]
        assert not session.tick(1.0) and session.endpoint == A


def test_a_storage_refusal_with_a_retry_is_sent_again_here_after_the_delay() -> None:
    session = new_session()
    submit = session.request(m.Submit("r-1", "global_mean", {"question": "q"}))
    sent(session)
    assert session.receive(refusal(submit, m.ErrorCode.STORAGE, 1500), 1.0) == []
    assert submit.refusal is not None and submit.refusal.code == "storage"
    assert not session.tick(2.0) and messages(session) == []  # not yet
    assert not session.tick(2.5) and session.endpoint == A
    assert messages(session) == [m.Submit("r-1", "global_mean", {"question": "q"})]
    session.forget(submit)  # its caller gave up: nothing more is sent
    session.receive(refusal(submit, m.ErrorCode.STORAGE, 100), 3.0)
    assert not session.tick(4.0) and messages(session) == []
