"""One worker process: a DEALER to the broker, and a compute thread.

The socket thread registers (READY with credit and data fingerprint), heartbeats, hands
jobs to the compute thread over an inproc pipe and sends results back (those of one
loop turn as one BATCH), so a slow job never silences the heartbeat. A broker silent
for LIVENESS x INTERVAL is presumed lost: the worker reconnects with exponential
backoff and registers again. DISCONNECT "shutdown" from the broker, or SIGTERM/SIGINT,
drains: finish held jobs, then exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType

import zmq

from protocol import config, events
from protocol import messages as m
from protocol.curve import secure_client
from protocol.errors import ProtocolError
from protocol.lifetime import die_with_parent
from protocol.logs import setup_logging, shown
from protocol.wire import send_frames, waiting
from workers.compute import JobRunner
from workers.settings import WorkerSettings, add_worker_flags, settings_from

log = logging.getLogger("lss.worker")

PIPE = "inproc://lss-worker-compute"
READS_PER_TURN = 1000
STOP = b""  # empty tag: tells the compute thread to end
LEAVE_LINGER_MS = 1000  # time to deliver the last results and DISCONNECT
# Messages queued each way; finite so that a broker that stops reading cannot grow a
# worker without bound (a worker holds at most MAX_WORKER_CREDIT jobs at once anyway).
SOCKET_HWM = 1000


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
        self.connections = 0
        self.sock = self._open_socket()
        self.held = 0  # jobs handed to the compute thread and not yet answered
        self.outgoing: list[list[bytes]] = []  # results of this turn, sent at its end
        self.draining = False
        self.signals = 0
        self.backoff_s = config.RECONNECT_MIN_MS / 1000
        self.last_heard = self.last_sent = time.monotonic()

    # --- compute thread ----------------------------------------------------------

    def _compute_loop(self) -> None:
        pipe: zmq.Socket[bytes] = self.context.socket(zmq.PAIR)
        pipe.connect(PIPE)
        try:
            while True:
                tag, job_body, connection = pipe.recv_multipart()
                if tag == STOP:
                    return
                result = self.runner.run(job_body)
                pipe.send_multipart([tag, result.body, result.payload or b"", connection])
        finally:
            pipe.close(linger=0)

    # --- socket thread -----------------------------------------------------------

    def _open_socket(self) -> zmq.Socket[bytes]:
        """A new DEALER with a new identity (host:pid:n), connected to the broker."""
        self.connections += 1
        sock: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        # Unique per connection: it also marks which connection a job came on.
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{self.connections}".encode()
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_bytes)
        sock.setsockopt(zmq.SNDTIMEO, 0)  # see _deliver
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        if self.settings.curve_server_key and self.settings.curve_secret:
            secure_client(sock, self.settings.curve_server_key, self.settings.curve_secret)
        sock.connect(self.settings.connect)
        return sock

    def _register(self) -> None:
        ready = m.Ready(self.settings.credit, self.fingerprint, os.getpid(), socket.gethostname())
        self._send(ready)
        self.last_heard = time.monotonic()
        log.info("registering with %s (credit %d)", self.settings.connect, self.settings.credit)

    def _reconnect(self) -> None:
        time.sleep(self.backoff_s)
        self.backoff_s = min(self.backoff_s * 2, config.RECONNECT_MAX_MS / 1000)
        self.sock.close(linger=0)
        self.outgoing.clear()  # results for the broker we leave (see _read_results)
        self.sock = self._open_socket()
        self._register()

    def _send(self, message: m.Message, tag: bytes = b"", payload: bytes | None = None) -> None:
        self._deliver(m.encode(message, tag, payload))

    def _deliver(self, frames: list[bytes]) -> None:
        try:
            send_frames(self.sock, frames)
        except zmq.Again:  # no connection (libzmq gives up after a refused CURVE handshake)
            log.debug("no connection to the broker; message dropped, liveness will redial")
        self.last_sent = time.monotonic()

    def run(self) -> int:
        self.compute_thread.start()
        self._register()
        poller = zmq.Poller()
        poller.register(self.pipe, zmq.POLLIN)
        interval_ms = int(self.settings.heartbeat_interval_s * 1000)
        polled = self.sock
        poller.register(polled, zmq.POLLIN)
        try:
            while self.signals < 2:
                if polled is not self.sock:  # _turn replaced it when it reconnected
                    poller.unregister(polled)
                    polled = self.sock
                    poller.register(polled, zmq.POLLIN)
                ready = dict(poller.poll(interval_ms // 2 or 1))
                self._turn(ready)
                if self.draining and self.held == 0:
                    return self._leave()
            return config.EXIT_INTERRUPTED
        finally:
            self._close()

    def _turn(self, ready: dict[zmq.Socket[bytes], int]) -> None:
        if self.sock in ready:
            self._read_broker()
        if self.pipe in ready:
            self._read_results()
        self._send_results()
        now = time.monotonic()
        if now - self.last_sent >= self.settings.heartbeat_interval_s:
            self._send(m.Heartbeat())
        silence = self.settings.heartbeat_interval_s * self.settings.heartbeat_liveness
        if now - self.last_heard > silence and not self.draining:
            log.warning("broker silent for %.1f s; reconnecting in %.1f s", silence, self.backoff_s)
            events.emit("broker_silent", silence_s=silence, reconnect_in_s=self.backoff_s)
            self._reconnect()

    def _read_broker(self) -> None:
        sock = self.sock
        for frames in waiting(sock, READS_PER_TURN):
            self.last_heard = time.monotonic()
            try:
                messages = m.messages_in(frames)
            except ProtocolError as exc:
                log.warning("malformed message from the broker: %s", exc)
                continue
            for message in messages:
                try:
                    self._on_frames(message)
                except ProtocolError as exc:
                    log.warning("malformed message from the broker: %s", exc)
                if self.sock is not sock:
                    return  # dropped and reconnected: the rest was for the old socket

    def _on_frames(self, frames: list[bytes]) -> None:
        kind, tag = m.parse_header(frames[0])
        if kind is not m.Disconnect:  # being dropped is no reason to retry sooner
            self.backoff_s = config.RECONNECT_MIN_MS / 1000
        if kind is m.Job and len(frames) == 2:
            self._on_job(tag, frames[1])  # the body is decoded only if not cached
        else:
            self._on_broker(m.decode(frames).message)

    def _on_job(self, tag: bytes, job_body: bytes) -> None:
        if self.draining:
            return  # the broker re-queues it when we leave
        log.debug("%s received", tag.decode(errors="replace"))
        result = self.runner.cached(job_body)
        if result is not None:
            self._send_result(tag, result.body, result.payload)
        else:
            self.pipe.send_multipart([tag, job_body, self.identity])
            self.held += 1

    def _on_broker(self, msg: m.Message) -> None:
        if isinstance(msg, m.Disconnect):
            self._on_disconnect(msg.reason)
        elif isinstance(msg, m.ErrorReply):
            log.warning("broker says: %s (%s)", shown(msg.reason), shown(msg.code))

    def _on_disconnect(self, reason: str) -> None:
        if reason == "shutdown":
            log.info("broker shutting down: finishing %d held job(s), then exiting", self.held)
            self.draining = True
        else:
            log.warning("broker dropped this worker (%s); registering again", reason)
            self._reconnect()

    def _read_results(self) -> None:
        for frames in waiting(self.pipe, READS_PER_TURN):
            tag, body, payload, connection = frames
            self.held -= 1
            if connection != self.identity:
                # A job of a broker we have since left: the job number may now name
                # another job (the broker may have died before recording it), and
                # whoever holds the job now runs it again.
                log.debug("%s dropped: received on an earlier connection", tag.decode())
                events.emit("result_dropped", job=tag.decode(errors="replace"))
                continue
            self._send_result(tag, body, payload or None)

    def _send_result(self, tag: bytes, body: bytes, payload: bytes | None) -> None:
        self.outgoing.append(m.frames_of(m.Command.RESULT, tag, body, payload))

    def _send_results(self) -> None:
        """Send this turn's results, several as one BATCH."""
        if self.outgoing:
            outgoing, self.outgoing = self.outgoing, []
            for frames in m.batches(outgoing, self.settings.max_message_bytes):
                self._deliver(frames)

    def _leave(self) -> int:
        self._send_results()
        self._send(m.Disconnect("worker exiting"))
        log.info("worker exits")
        return config.EXIT_OK

    def _close(self) -> None:
        self.pipe.send_multipart([STOP, b"", b""])
        self.compute_thread.join(timeout=1.0)
        self.sock.close(linger=LEAVE_LINGER_MS)
        self.pipe.close(linger=0)
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
        self.draining = True


def build(settings: WorkerSettings) -> Worker:
    """Load the data (fetching it from the broker if asked) and make a worker."""
    from protocol.fingerprint import file_sha256
    from workers.fetch import ensure_data
    from workers.statistics import StatisticError, Statistics

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


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="lss-worker", description="Run one LSS worker process.")
    add_worker_flags(parser)
    settings = settings_from(parser.parse_args(argv))
    setup_logging(settings.state_dir, settings.name, settings.log_level)
    events.write_events(settings.state_dir, settings.name)
    worker = build(settings)
    worker.install_signal_handlers()
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
