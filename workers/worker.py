"""One worker process: a DEALER to each broker it is given, and one compute thread.

The socket thread keeps a link (workers.link) to every broker endpoint (--connect takes
a comma-separated list): each registers (READY with credit and data fingerprint),
heartbeats and reconnects on its own, so losing one broker never holds up the others.
It hands every link's jobs to the one compute thread over an inproc pipe and sends the
results back on the link they came on (those of one loop turn as one BATCH), so a slow
job never silences a heartbeat. A job its broker cancels (CANCEL_JOB), or whose deadline
passed before the compute thread came to it, is answered RESULT `cancelled` without
being computed; one already started is answered as usual. Before a SUSPECT_JOB the
compute thread has its broker told STARTED and waits for the broker's STARTED back
(docs/protocol.md, "Leases and poison jobs"). DISCONNECT "shutdown" from every broker, or
SIGTERM/SIGINT, drains: finish held jobs, then exit 0.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import zmq

from protocol import config, events
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.lifetime import die_with_parent
from protocol.logs import setup_logging, shown
from protocol.wire import READS_PER_TURN, waiting
from workers import report
from workers.compute import JobRunner
from workers.held import FRONT, STOP, SUSPECT, HeldJobs
from workers.link import Link
from workers.settings import WorkerSettings, add_worker_flags, settings_from

log = logging.getLogger("lss.worker")

PIPE = "inproc://lss-worker-compute"
LEAVE_LINGER_MS = 1000  # time to deliver the last results and DISCONNECT
RECEIVED = struct.Struct("<d")  # when the socket thread got a job, on the pipe


class Worker:
    """The socket side of a worker process; `run()` returns an exit code."""

    def __init__(self, settings: WorkerSettings, runner: JobRunner, fingerprint: str) -> None:
        self.settings = settings
        self.runner = runner
        self.fingerprint = fingerprint
        self.context = zmq.Context()
        self.pipe: zmq.Socket[bytes] = self.context.socket(zmq.PAIR)
        self.pipe.bind(PIPE)
        self.compute_thread = threading.Thread(
            target=self._compute_loop, name="compute", daemon=True
        )
        # The identities of the links' current connections; read by the compute thread
        # (set operations are atomic under the GIL) to skip the jobs of a lost broker.
        self.live: set[bytes] = set()
        numbers = itertools.count(1)
        self.links = [
            Link(endpoint, settings, self.context, numbers, self.live)
            for endpoint in config.endpoints(settings.connect)
        ]
        self.held = 0  # jobs handed to the compute thread and not yet answered
        # (connection, tag) of those jobs, and of those among them a broker cancelled
        # (CANCEL_JOB): the compute thread skips these if it has not started them.
        self.holding: set[tuple[bytes, bytes]] = set()
        self.cancelled: set[tuple[bytes, bytes]] = set()
        # The suspect job the compute thread waits to start, as (connection, tag), and
        # the signal to start it: its broker said STARTED back, or its link is gone.
        # Both change together, under the lock (see `_announce`).
        self.awaiting = (b"", b"")
        self.go = threading.Event()
        self.go_lock = threading.Lock()
        self.draining = False
        self.signals = 0
        self._polled: tuple[zmq.Socket[bytes], ...] = ()
        self._poller = zmq.Poller()

    # --- compute thread ----------------------------------------------------------

    def _compute_loop(self) -> None:
        pipe: zmq.Socket[bytes] = self.context.socket(zmq.PAIR)
        pipe.connect(PIPE)
        held = HeldJobs(pipe)
        try:
            while True:
                tag, job_body, connection, mark, received = held.next()
                suspect = mark == SUSPECT
                if tag == STOP:
                    return
                if (connection, tag) in self.cancelled:  # not started: skipped
                    result = self.runner.cancelled(m.REASON_CANCELLED)
                    pipe.send_multipart([tag, result.body, b"", connection])
                    continue
                if suspect and connection in self.live:
                    self._announce(pipe, tag, connection)
                if connection not in self.live:  # its broker is lost: the result would be
                    pipe.send_multipart([tag, b"", b"", connection])  # dropped; skip the work
                    continue
                result = self.runner.run(job_body, RECEIVED.unpack(received)[0])
                pipe.send_multipart([tag, result.body, result.payload or b"", connection])
        finally:
            pipe.close(linger=0)

    def _announce(self, pipe: zmq.Socket[bytes], tag: bytes, connection: bytes) -> None:
        """Before a suspect job: have its broker told STARTED, and wait (an interval at
        most) until the broker has noted it, so that if this job kills the process the
        broker blames it, and only it."""
        with self.go_lock:  # else a late STARTED for the previous one could be taken
            self.awaiting = (connection, tag)
            self.go.clear()
        pipe.send_multipart([tag, connection])
        self.go.wait(self.settings.heartbeat_interval_s)
        with self.go_lock:
            self.awaiting = (b"", b"")

    def _release(self, connection: bytes, tag: bytes | None = None) -> None:
        """Let the compute thread start the suspect job it waits for, if it came on
        `connection` (and has this `tag`, unless None)."""
        with self.go_lock:
            waiting_on, waiting_for = self.awaiting
            if waiting_on == connection and tag in (None, waiting_for):
                self.go.set()

    # --- socket thread -----------------------------------------------------------

    def run(self) -> int:
        self.compute_thread.start()
        now = time.monotonic()
        for link in self.links:
            link.register(now, self.fingerprint)
        interval_ms = int(self.settings.heartbeat_interval_s * 1000)
        try:
            while self.signals < 2:
                ready = dict(self._sockets().poll(interval_ms // 2 or 1))
                self._turn(ready)
                if self.draining and self.held == 0:
                    return self._leave()
            return config.EXIT_INTERRUPTED
        finally:
            self._close()

    def _sockets(self) -> zmq.Poller:
        """The poller over the pipe and every link's current socket (they change when a
        link reconnects)."""
        sockets = tuple(link.sock for link in self.links)
        if sockets != self._polled:
            self._poller = zmq.Poller()
            self._poller.register(self.pipe, zmq.POLLIN)
            for sock in sockets:
                self._poller.register(sock, zmq.POLLIN)
            self._polled = sockets
        return self._poller

    def _turn(self, ready: dict[zmq.Socket[bytes], int]) -> None:
        for link in self.links:
            if link.sock in ready:
                self._read_broker(link)
        if self.pipe in ready:
            self._read_results()
        now = time.monotonic()
        for link in self.links:
            link.send_results(now)
            link.keep_alive(now, self.fingerprint, self.draining)
        waiting_on = self.awaiting[0]
        if waiting_on and waiting_on not in self.live:  # its broker is gone, STARTED too
            self._release(waiting_on)

    def _read_broker(self, link: Link) -> None:
        sock = link.sock
        for frames in waiting(sock, READS_PER_TURN):
            try:
                messages = m.messages_in(frames)
            except ProtocolError as exc:
                log.warning("malformed message from %s: %s", link.endpoint, exc)
                continue
            for message in messages:
                try:
                    self._on_frames(link, message)
                except ProtocolError as exc:
                    log.warning("malformed message from %s: %s", link.endpoint, exc)
                if link.sock is not sock:
                    return  # dropped and reconnected: the rest was for the old socket

    def _on_frames(self, link: Link, frames: list[bytes]) -> None:
        kind, tag = m.parse_header(frames[0])
        link.heard(time.monotonic(), disconnect=kind is m.Disconnect)
        if kind in (m.Job, m.SuspectJob, m.FrontJob) and len(frames) == 2:
            # The body is decoded only if not cached.
            self._on_job(link, tag, frames[1], kind)
        else:
            self._on_broker(link, m.decode(frames))

    def _on_job(self, link: Link, tag: bytes, job_body: bytes, kind: type[m.Message]) -> None:
        if self.draining:
            return  # the broker re-queues it when we leave
        log.debug("%s received from %s", tag.decode(errors="replace"), link.endpoint)
        result = self.runner.cached(job_body)
        if result is not None:
            link.outgoing.append(m.frames_of(m.Command.RESULT, tag, result.body, result.payload))
        else:
            received = RECEIVED.pack(time.monotonic())  # a deadline counts from here
            mark = SUSPECT if kind is m.SuspectJob else FRONT if kind is m.FrontJob else b""
            self.pipe.send_multipart([tag, job_body, link.identity, mark, received])
            self.holding.add((link.identity, tag))
            self.held += 1

    def _on_broker(self, link: Link, env: m.Envelope) -> None:
        msg = env.message
        if isinstance(msg, m.Started):
            self._release(link.identity, env.tag)
        elif isinstance(msg, m.CancelJob):
            if (link.identity, env.tag) in self.holding:  # else answered already
                self.cancelled.add((link.identity, env.tag))
        elif isinstance(msg, m.Disconnect):
            self._on_disconnect(link, msg.reason)
        elif isinstance(msg, m.ErrorReply):
            log.warning("broker says: %s (%s)", shown(msg.reason), shown(msg.code))

    def _on_disconnect(self, link: Link, reason: str) -> None:
        if reason != "shutdown":
            log.warning("%s dropped this worker (%s); registering again", link.endpoint, reason)
            link.reconnect(time.monotonic())
            return
        link.shut_down = True
        if all(other.shut_down for other in self.links):
            log.info("broker shutting down: finishing %d held job(s), then exiting", self.held)
            self.draining = True
        else:  # the others still need us; this one is heard from again if it comes back
            log.info("%s is shutting down; serving the other brokers", link.endpoint)

    def _read_results(self) -> None:
        links = {link.identity: link for link in self.links}
        for frames in waiting(self.pipe, READS_PER_TURN):
            if len(frames) == 2:  # the compute thread is about to start a suspect job
                self._say_started(links.get(frames[1]), frames[1], frames[0])
                continue
            tag, body, payload, connection = frames
            self.held -= 1
            self.holding.discard((connection, tag))
            self.cancelled.discard((connection, tag))
            link = links.get(connection)
            if link is None:
                # A job of a connection we have since left: the job number may now name
                # another job (the broker may have died before recording it), and
                # whoever holds the job now runs it again.
                log.debug("%s dropped: received on an earlier connection", tag.decode())
                events.emit("result_dropped", job=tag.decode(errors="replace"))
                continue
            link.outgoing.append(m.frames_of(m.Command.RESULT, tag, body, payload or None))

    def _say_started(self, link: Link | None, connection: bytes, tag: bytes) -> None:
        if link is None:
            self._release(connection)  # its connection is gone: the job is skipped
        else:
            link.deliver(m.encode(m.Started(), tag), time.monotonic())

    def _leave(self) -> int:
        now = time.monotonic()
        for link in self.links:
            link.send_results(now)
            link.send(m.Disconnect("worker exiting"), now=now)
        log.info("worker exits")
        return config.EXIT_OK

    def _close(self) -> None:
        self.live.clear()  # the compute thread skips what it has not started,
        self.go.set()  # a suspect it waits to start included
        self.pipe.send_multipart([STOP, b"", b"", b"", RECEIVED.pack(0.0)])
        self.compute_thread.join(timeout=1.0)
        for link in self.links:
            link.close(LEAVE_LINGER_MS)
        self.pipe.close(linger=0)
        if self.compute_thread.is_alive():  # a second signal in the middle of a long job:
            log.warning("leaving a job unfinished")  # its broker runs it again
            return  # (context.term() would wait for the compute thread's socket)
        self.context.term()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if not self.draining:
            log.info(
                "%s: finishing %d held job(s), then leaving", signal.Signals(signum).name, self.held
            )
            events.emit("worker_draining", held=self.held)
        self.draining = True


def build(settings: WorkerSettings) -> Worker:
    """Load the data (fetching it from the broker if asked) and make a worker; raises
    `DatasetError` when the data file is missing or cannot be loaded."""
    from protocol.fingerprint import file_sha256
    from workers.dataset import DatasetError
    from workers.fetch import ensure_data
    from workers.statistics import StatisticError, Statistics

    if not settings.fetch_data and not Path(settings.data).is_file():
        raise DatasetError(f"{settings.data}: no such file (set LSS_DATA or --data)")
    data = ensure_data(settings)
    started = time.monotonic()
    statistics = Statistics.from_csv(data)
    fingerprint = file_sha256(data)
    load_s = time.monotonic() - started
    log.info("loaded %s in %.2f s (sha256 %s)", data, load_s, fingerprint[:12])
    events.emit("data_loaded", path=str(data), load_s=load_s)
    runner = JobRunner(
        statistics.compute, StatisticError, fingerprint, settings.max_message_bytes - 1024,
        diagnostics=settings.diagnostics,
    )  # fmt: skip
    if settings.diagnostics:
        log.warning("diagnostic statistics (_sleep, _crash) are ON: for tests only")
    return Worker(settings, runner, fingerprint)


def cannot_load(settings: WorkerSettings, reason: str, report_fd: int | None) -> int:
    """The data cannot be loaded: say so in one line (to the supervisor, which tells
    the user, when there is one), tell every broker (LOAD_FAILED) instead of
    registering, and return `EXIT_DATA`."""
    log.log(logging.DEBUG if report_fd is not None else logging.ERROR,
            "cannot load the data: %s", reason)  # fmt: skip
    report.send(report_fd, report.UNLOADABLE, reason)
    context = zmq.Context()
    now = time.monotonic()
    numbers, live = itertools.count(1), set[bytes]()
    links = [Link(e, settings, context, numbers, live) for e in config.endpoints(settings.connect)]
    # Cut as a job's reason is: a longer one is more than a broker reads in a body.
    said = m.LoadFailed(shown(reason, m.MAX_REASON_CHARS), os.getpid(), socket.gethostname())
    for link in links:  # a broker not up yet misses it: it is not kept past the linger
        link.send(said, now=now)
        link.close(LEAVE_LINGER_MS)
    context.term()
    return config.EXIT_DATA


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="lss-worker", description="Run one LSS worker process.")
    add_worker_flags(parser)
    # Given by the supervisor (workers.report), not by users.
    parser.add_argument("--report-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = settings_from(args)
    setup_logging(settings.state_dir, settings.name, settings.log_level)
    events.write_events(settings.state_dir, settings.name)
    from workers.dataset import DatasetError  # with pandas: after the flags are read

    try:
        worker = build(settings)
    except DatasetError as exc:
        return cannot_load(settings, str(exc), args.report_fd)
    report.send(args.report_fd, report.LOADED)
    worker.install_signal_handlers()
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
