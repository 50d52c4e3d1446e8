"""No worker can load the data: the broker says why at once (broker.load_failure)."""

from __future__ import annotations

from pathlib import Path

import zmq

from broker.store import Store
from protocol import config
from protocol import messages as m
from tests.unit.broker_harness import FP, Harness
from workers.settings import WorkerSettings
from workers.worker import cannot_load

REASON = "bad.csv: missing required column(s) 'Question'"
NO_WORKER = m.ErrorReply("no_worker", f"no worker can load the data: {REASON}")


def test_a_wait_ends_with_the_reason_instead_of_timing_out(store: Store) -> None:
    h = Harness(store)
    (job,) = h.submit(1)
    h.client(m.Wait(job), tag=b"w")
    assert h.sent() == ([], [])  # nobody to run it: the wait waits
    h.worker(m.LoadFailed(REASON, pid=7, host="h"), b"w9")
    clients, _ = h.sent()
    assert [(e.tag, e.message) for e in clients] == [(b"w", NO_WORKER)]
    assert h.core.stats(h.now)["no_worker"] == NO_WORKER.reason
    h.client(m.Submit("r-late", "global_mean", {"question": "Q"}), tag=b"s")
    h.client(m.Wait(job), tag=b"w2")
    clients, _ = h.sent()
    assert [(e.tag, e.message) for e in clients] == [(b"s", NO_WORKER), (b"w2", NO_WORKER)]
    assert h.core.unfinished() == 1, "the job itself stays, to run when a worker comes"


def test_a_worker_that_registers_clears_the_reason(store: Store) -> None:
    h = Harness(store)
    h.worker(m.LoadFailed(REASON), b"w9")
    h.worker(m.Ready(1, FP), b"w1")
    assert h.core.stats(h.now)["no_worker"] is None
    assert len(h.submit(1)) == 1


def test_a_registered_worker_keeps_the_service_up_whatever_another_says(store: Store) -> None:
    h = Harness(store)
    h.worker(m.Ready(1, FP), b"w1")
    h.worker(m.LoadFailed(REASON), b"w9")  # another host with a bad copy
    assert h.core.stats(h.now)["no_worker"] is None
    assert len(h.submit(1)) == 1


def test_a_drain_does_not_wait_for_jobs_no_worker_can_run(store: Store) -> None:
    h = Harness(store)
    h.submit(2)
    h.client(m.Shutdown())
    assert not h.core.drained(), "a worker may still come"
    h.worker(m.LoadFailed(REASON), b"w9")
    assert h.core.drained()
    assert h.core.unfinished() == 2
    assert len(store.unfinished()) == 2, "left in the store for the next start"


def test_a_worker_s_long_reason_reaches_the_broker_cut(tmp_path: Path) -> None:
    """A reason past what a body may hold (a long path, a parser's message) would make
    the broker drop LOAD_FAILED unread: callers would time out instead of hearing why."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        settings = WorkerSettings(
            connect=f"tcp://127.0.0.1:{port}", data="d.csv", state_dir=str(tmp_path), credit=1,
            heartbeat_interval_ms=250, heartbeat_liveness=4, max_message_bytes=1 << 20,
            diagnostics=False, fetch_data=False, curve_server_key=None, curve_secret=None,
            log_level="INFO", name="worker", max_data_mb=1.0, expect_sha256=None,
        )  # fmt: skip
        reason = "/data/" + "é" * 5000 + ".csv: missing required column(s) 'Question'"
        assert cannot_load(settings, reason, None) == config.EXIT_DATA
        assert router.poll(5000), "the broker heard nothing"
        (frames,) = m.messages_in(router.recv_multipart(), routed=True)
        said = m.decode(frames, routed=True).message
    finally:
        router.close()
        context.term()
    assert isinstance(said, m.LoadFailed)
    assert said.reason.startswith("/data/éé") and len(said.reason) <= m.MAX_REASON_CHARS + 40
