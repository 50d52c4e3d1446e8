"""The broker process: two ROUTER sockets, one poll loop, group commit, shutdown.

Each loop turn drains both sockets (up to READS_PER_TURN, and PEER_MESSAGES_PER_TURN
from any one peer), lets `BrokerCore` act on the messages (with the sender's role when
CURVE is on, broker.access), dispatches queued jobs, sends the jobs, commits the store
once, and only then answers clients: the durability rule of docs/protocol.md
("Durability"). Client requests are served for `client_slice_ms` a turn at most, in
chunks whose store reads are made at once (broker.read_ahead); the rest wait in a
backlog taken in fair shares by peer (broker.backlog), and the next turn comes at once,
so that a flood of requests never holds worker heartbeats or a PING back for long. A
store error rolls the transaction back and the core with it; the loop goes on. Several
messages for one peer in a turn travel as one BATCH. Malformed input is answered or
logged and dropped; it never ends the loop.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import zmq

from broker.access import Caller, Callers
from broker.backlog import ClientBacklog, announced
from broker.core import BrokerCore, CoreSettings
from broker.datafile import DataFile
from broker.limits import PEER_MESSAGES_PER_TURN
from broker.security import CurveServer, warn_if_plaintext
from broker.sockets import BindError, bind_router, write_endpoints
from broker.storage_guard import MB, RETRY_AFTER_FAILURE_S, StorageGuard
from broker.store import SqliteStore, StorageError, Store
from protocol import config
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.logs import Throttle, shown
from protocol.messages import Envelope
from protocol.wire import READS_PER_TURN, send_frames, waiting, waiting_from

if TYPE_CHECKING:
    from broker.cluster import Cluster

log = logging.getLogger("lss.broker")

# Messages (BATCH contents counted) handled from the worker socket in one turn, and
# client requests read and waiting to be served: past it the rest wait in ZeroMQ's
# queues (RECEIVE_HWM per peer) for a later turn, so that many peers at once cannot
# make the broker's memory or one turn's replies grow without bound either.
TURN_MESSAGES = 50_000
# Client requests are served in chunks of this many, whose store reads are made at once,
# for `client_slice_ms` a turn (then workers', the commit and the replies come).
CLIENT_CHUNK = 100
EXPIRY_EVERY_S = 60.0


@dataclass(frozen=True)
class BrokerSettings:
    """Everything the broker process is told (see broker.__main__ for the flags)."""

    client_endpoint: str = config.CLIENT_ENDPOINT
    worker_endpoint: str = config.WORKER_ENDPOINT
    state_dir: str = config.STATE_DIR
    data: str | None = None
    core: CoreSettings | None = None
    curve_dir: str | None = None
    sqlite_synchronous: str = config.SQLITE_SYNCHRONOUS
    disk_reserve_mb: float = config.DISK_RESERVE_MB
    shutdown_linger_s: float = 1.0
    store: str = config.STORE  # "sqlite" or a postgresql:// URL
    broker_lease_s: float = config.BROKER_LEASE_S
    client_slice_ms: float = config.CLIENT_SLICE_MS


def default_core_settings() -> CoreSettings:
    return CoreSettings(
        heartbeat_interval_s=config.HEARTBEAT_INTERVAL_MS / 1000,
        heartbeat_liveness=config.HEARTBEAT_LIVENESS,
        job_timeout_s=config.JOB_TIMEOUT_S,
        max_attempts=config.MAX_ATTEMPTS,
        max_queue=config.MAX_QUEUE,
        result_ttl_s=config.RESULT_TTL_S,
        max_message_bytes=config.MAX_MESSAGE_BYTES,
    )


class Broker:
    """Owns the sockets, the store and the loop; `run()` returns an exit code."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.core_settings = settings.core or default_core_settings()
        state = Path(settings.state_dir)
        broker_id = uuid.uuid4().hex
        # The data and the ports first: a typo or a port in use stops this broker before
        # it has touched any store (the one in use may belong to the broker on that port).
        data = DataFile(settings.data) if settings.data else None
        fingerprint = data.fingerprint if data else None
        self.context = zmq.Context()
        self.curve = CurveServer(self.context, settings.curve_dir) if settings.curve_dir else None
        self.frontend, self.backend = self._bind_both()
        self.store = open_store(settings, broker_id)
        self.guard = StorageGuard(state, int(settings.disk_reserve_mb * MB))
        self.core = BrokerCore(
            self.store, self.core_settings, fingerprint, data.chunk if data else None, broker_id
        )
        self.cluster = self._join_cluster()
        if self.cluster is not None:  # another moment, or another broker, may serve it
            self.core.retry_refused_after(int(RETRY_AFTER_FAILURE_S * 1000))
        self._polled_fd: int | None = None
        self._next_expiry = 0.0
        self._backlog = ClientBacklog()
        warn_if_plaintext(
            [settings.client_endpoint, settings.worker_endpoint], self.curve is not None
        )
        self._signals = 0
        self._malformed = Throttle(log)
        self._storage_errors = Throttle(log, burst=5, window_s=60.0)
        self._callers = Callers(secured=self.curve is not None)
        frontend, backend = self.frontend, self.backend
        write_endpoints(state, frontend, backend, self.core.broker_id)

    def _join_cluster(self) -> Cluster | None:
        """With a shared (PostgreSQL) store: this broker's lease, adoption and news."""
        if not is_postgres_url(self.settings.store):
            return None
        from broker.cluster import Cluster
        from broker.store.postgres import PgStore

        assert isinstance(self.store, PgStore)  # open_store made it from the same URL
        return Cluster(self.store, self.core, self.settings.broker_lease_s)

    def _bind_both(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        """The client and worker sockets, bound; on a `BindError`, nothing is left open."""
        bound: list[zmq.Socket[bytes]] = []
        try:
            for setting in ("client_endpoint", "worker_endpoint"):
                endpoint: str = getattr(self.settings, setting)
                max_bytes = self.core_settings.max_message_bytes
                bound.append(bind_router(self.context, endpoint, setting, max_bytes, self.curve))
        except BindError:
            for sock in bound:
                sock.close(linger=0)
            if self.curve:
                self.curve.stop()
            self.context.term()
            raise
        return bound[0], bound[1]

    def install_signal_handlers(self) -> None:
        """First SIGINT/SIGTERM drains; a second one stops at once."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            self.core.begin_shutdown(signal.Signals(signum).name)

    def run(self) -> int:
        """Serve until a drained shutdown (exit 0) or a second signal (exit 130)."""
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        # Lost workers are noticed at a tick: ticking at interval/5 keeps a SIGKILLed
        # worker's detection near LIVENESS x INTERVAL (2.6 s at most, not 2.75 s).
        tick_every_s = self.core_settings.heartbeat_interval_s / 5
        # Every timer runs on the monotonic clock: a step of the wall clock (NTP, an
        # operator) must neither stop failure detection nor expire every lease at once.
        next_tick = self._next_expiry = time.monotonic()
        drained_at: float | None = None
        # What start-up made (modules, the data's fingerprint, the store) lives as long as
        # the broker: out of the collector's sight, so that a full collection, which a
        # flood of requests' garbage triggers, no longer takes tens of milliseconds.
        gc.freeze()
        try:
            while self._signals < 2:
                self._poll_store_news(poller)
                busy = self._backlog or self._next_expiry <= time.monotonic()
                ready = dict(poller.poll(0 if busy else int(tick_every_s * 1000)))
                now = time.monotonic()
                self._step_cluster(ready, now)
                self.core.refuse_submits(self.guard.refusal(now))
                self._turn(ready, now)
                if now >= next_tick:
                    self._guarded(self.core.tick, now)
                    if self.curve:
                        self.curve.check()
                    next_tick = now + tick_every_s
                if now >= self._next_expiry:
                    self._next_expiry = now + min(
                        EXPIRY_EVERY_S, self.core_settings.result_ttl_s / 2
                    )
                    self._guarded(self._expire, now)
                drained_at = self._after_drain(drained_at, now)
                self._flush(now)
                if drained_at is not None and now - drained_at >= self.settings.shutdown_linger_s:
                    log.info("drained; broker exits")
                    return config.EXIT_OK
            log.warning("second signal: exiting now; unfinished jobs resume at the next start")
            return config.EXIT_INTERRUPTED
        finally:
            self.close()

    def _poll_store_news(self, poller: zmq.Poller) -> None:
        """Poll the cluster's listening connection too (its socket changes when it is
        made again)."""
        fd = self.cluster.fileno() if self.cluster is not None else None
        if fd != self._polled_fd:
            if self._polled_fd is not None:
                poller.unregister(self._polled_fd)
            if fd is not None:
                poller.register(fd, zmq.POLLIN)
            self._polled_fd = fd

    def _step_cluster(self, ready: dict[Any, int], now: float) -> None:
        """Between turns, outside any transaction: broker.cluster."""
        if self.cluster is None:
            return
        try:
            self.cluster.step(self._polled_fd is not None and self._polled_fd in ready)
        except StorageError as exc:
            self._storage_failed(exc, now)

    def _turn(self, ready: dict[zmq.Socket[bytes], int], now: float) -> None:
        """Clients' requests (lone ones first), those that came meanwhile from lone
        peers, then workers' messages and dispatch: a one-call served in this turn
        leaves for its worker at once, and its answer, if it is back by the drain, is
        committed and replied to in this same turn."""
        sent = False  # a newcomer's job: its answer may be back by the drain
        if self.frontend in ready:
            self._read_clients(now)
        if self._backlog:
            sent = self._serve_lone(now)
            sent = self._serve_clients(now) or sent
            self._read_clients(now)
            sent = self._serve_lone(now) or sent
        if self.backend in ready or sent:
            self._drain(self.backend, self._on_worker, self._bad_worker_message, now)
        self.core.dispatch(now)

    def _on_client(self, envelope: Envelope, now: float, caller: Caller) -> None:
        try:
            self.core.on_client(envelope, now, caller)
        except StorageError as exc:
            reason = self._storage_failed(exc, now)
            self.core.refuse(envelope.identity or b"", envelope.tag, m.ErrorCode.STORAGE, reason)

    def _on_worker(self, envelope: Envelope, now: float, caller: Caller) -> None:
        try:
            self.core.on_worker(envelope, now, caller)
        except StorageError as exc:
            self._storage_failed(exc, now)

    def _guarded(self, step: Callable[[float], object], now: float) -> None:
        try:
            step(now)
        except StorageError as exc:
            self._storage_failed(exc, now)

    def _storage_failed(self, exc: StorageError, now: float) -> str:
        """Roll the store and the core back, refuse submits for a while; the reason."""
        self._storage_errors.warning(
            exc.operation, "storage failed, transaction rolled back: %s", exc
        )
        reason = self.core.roll_back(exc, now)
        self.guard.failed(exc, now)
        self.core.refuse_submits(self.guard.refusal(now))
        return reason

    def _read_clients(self, now: float) -> None:
        """Read the waiting client messages into the backlog (a BATCH unpacked, each
        message decoded only when served) until it is full (TURN_MESSAGES requests, or
        broker.backlog.BACKLOG_BYTES)."""
        for frames, user in self._waiting(self.frontend):
            count = announced(frames)  # more than a BATCH holds: unpacking refuses it
            if count <= m.MAX_BATCH and not self._within_peer_share(frames[0], count):
                continue  # over its share: not even unpacked
            messages = self._unpack(self.frontend, frames, self._bad_client_message, now)
            if messages and self._within_peer_share(frames[0], len(messages)):
                caller = self._callers.of(user)
                lone = len(messages) == 1 and self.core.unoccupied(frames[0], caller)
                self._backlog.add(frames[0], [(message, caller) for message in messages], lone)
            if self._backlog.full(TURN_MESSAGES):
                return  # the rest wait in ZeroMQ's queues for a later turn

    def _within_peer_share(self, identity: bytes, count: int) -> bool:
        """False (logged) if a peer's requests waiting would go over its share, so that
        one peer's flood costs bounded memory for its requests and replies."""
        if self._backlog.held(identity) + count <= PEER_MESSAGES_PER_TURN:
            return True
        self._malformed.warning(
            ("flood", identity), "dropped %d message(s) from client peer %s: over %d waiting",
            count, shown(identity), PEER_MESSAGES_PER_TURN,
        )  # fmt: skip
        return False

    def _serve_clients(self, now: float) -> bool:
        """Serve backlogged client requests, a chunk at a time, for `client_slice_ms`.
        After each chunk, the jobs of producers with nothing running leave at once
        (`_send_newcomers`). True if any did."""
        started, slice_s = time.monotonic(), self.settings.client_slice_ms / 1000
        sent = False
        while self._backlog and time.monotonic() - started < slice_s:
            self._serve_chunk(self._decoded_requests(self._backlog.take(CLIENT_CHUNK), now), now)
            sent = self._send_newcomers(now) or sent
        return sent

    def _serve_lone(self, now: float) -> bool:
        """Serve the lone requests waiting (broker.backlog), a chunk at most; True if a
        newcomer's job left (`_send_newcomers`)."""
        requests = self._decoded_requests(self._backlog.take_lone(CLIENT_CHUNK), now)
        if not requests:
            return False
        self._serve_chunk(requests, now)
        return self._send_newcomers(now)

    def _send_newcomers(self, now: float) -> bool:
        """Send the jobs of producers with nothing running at once (broker.producers,
        newcomers): their answers can come back, and be committed and replied to, in
        this same turn. True if any left."""
        if not self.core.dispatch_newcomers(now):
            return False
        self._send_to_workers()
        return True

    def _decoded_requests(
        self, taken: list[tuple[list[bytes], Caller]], now: float
    ) -> list[tuple[Envelope, Caller]]:
        return [
            (envelope, caller)
            for frames, caller in taken
            if (envelope := self._decoded(frames, self._bad_client_message, now))
        ]

    def _serve_chunk(self, requests: list[tuple[Envelope, Caller]], now: float) -> None:
        """Serve `requests` from the store's reads made at once, else each alone."""
        try:  # `_serve` lets no exception out: any here is the reading ahead's
            with self.core.read_ahead([envelope for envelope, _ in requests]):
                self._serve(requests, now)
            return
        except StorageError as exc:  # then each request reads alone
            self._storage_failed(exc, now)
        except Exception:  # a bug must cost the chunk its reading ahead, never the broker
            log.exception("failed to read %d client requests ahead", len(requests))
        self._serve(requests, now)

    def _serve(self, requests: list[tuple[Envelope, Caller]], now: float) -> None:
        for envelope, caller in requests:
            try:
                self._on_client(envelope, now, caller)
            except Exception:  # a bug must cost one message, never the broker
                log.exception("failed to handle %s", type(envelope.message).__name__)

    def _drain(
        self,
        sock: zmq.Socket[bytes],
        handle: Callable[[Envelope, float, Caller], None],
        on_error: Callable[[list[bytes], ProtocolError, float], None],
        now: float,
    ) -> None:
        per_peer: dict[bytes, int] = {}
        handled = 0
        for frames, user in self._waiting(sock):
            messages = self._unpack(sock, frames, on_error, now)
            if messages and self._within_turn_budget(frames[0], len(messages), per_peer, sock):
                caller = self._callers.of(user)
                for message in messages:
                    self._handle(message, handle, on_error, now, caller)
            handled += max(len(messages), 1)
            if handled >= TURN_MESSAGES:
                return  # the rest wait in ZeroMQ's queues for the next turn

    def _unpack(
        self,
        sock: zmq.Socket[bytes],
        frames: list[bytes],
        on_error: Callable[[list[bytes], ProtocolError, float], None],
        now: float,
    ) -> list[list[bytes]]:
        """The messages in `frames` (one, or a BATCH's); [] if it was refused."""
        too_large = self._size_error(frames)
        if too_large is not None:
            reason = f"too_large: {too_large}"
            if not (sock is self.backend and self._unreadable_result(frames, reason, now)):
                on_error(frames, ProtocolError(too_large, "too_large"), now)
            return []
        try:
            return m.messages_in(frames, routed=True)
        except ProtocolError as exc:
            on_error(frames, exc, now)
            return []

    def _waiting(self, sock: zmq.Socket[bytes]) -> Iterator[tuple[list[bytes], str]]:
        """The messages waiting on `sock`, with their sender's User-Id (CURVE only: the
        lookup costs a little per message, and without CURVE there is none)."""
        if self.curve:
            return waiting_from(sock, READS_PER_TURN)
        return ((frames, "") for frames in waiting(sock, READS_PER_TURN))

    def _within_turn_budget(
        self, identity: bytes, count: int, per_peer: dict[bytes, int], sock: zmq.Socket[bytes]
    ) -> bool:
        """Count a peer's messages this turn; False (logged) once it is over its share,
        so that one peer's flood costs bounded memory for its replies."""
        total = per_peer.get(identity, 0) + count
        per_peer[identity] = total
        if total <= PEER_MESSAGES_PER_TURN:
            return True
        side = "client" if sock is self.frontend else "worker"
        self._malformed.warning(
            ("flood", identity), "dropped %d message(s) from %s peer %s: over %d in one turn",
            count, side, shown(identity), PEER_MESSAGES_PER_TURN,
        )  # fmt: skip
        return False

    def _handle(
        self,
        frames: list[bytes],
        handle: Callable[[Envelope, float, Caller], None],
        on_error: Callable[[list[bytes], ProtocolError, float], None],
        now: float,
        caller: Caller,
    ) -> None:
        envelope = self._decoded(frames, on_error, now)
        if envelope is None:
            return
        try:
            handle(envelope, now, caller)
        except Exception:  # a bug must cost one message, never the broker
            log.exception("failed to handle %s", type(envelope.message).__name__)

    @staticmethod
    def _decoded(
        frames: list[bytes],
        on_error: Callable[[list[bytes], ProtocolError, float], None],
        now: float,
    ) -> Envelope | None:
        """The message in `frames`, or None (`on_error` told) if it does not decode."""
        try:
            return m.decode(frames, routed=True)
        except ProtocolError as exc:
            on_error(frames, exc, now)
            return None

    def _size_error(self, frames: list[bytes]) -> str | None:
        size = sum(map(len, frames))
        limit = self.core_settings.max_message_bytes
        return f"message of {size} bytes exceeds the limit of {limit}" if size > limit else None

    def _unreadable_result(self, frames: list[bytes], reason: str, now: float) -> bool:
        """A RESULT this broker cannot read (oversize, or malformed, e.g. with a field it
        does not know) from the worker holding its job ends that job as an error now, not
        when its lease runs out; the worker stays. True if it was one."""
        if len(frames) < 2 or m.header_command(frames[1]) != m.Command.RESULT:
            return False
        return self.core.fail_unreadable_result(frames[0], m.header_tag(frames[1]), reason, now)

    def _bad_client_message(self, frames: list[bytes], exc: ProtocolError, _now: float) -> None:
        peer = frames[0] if frames else b""
        self._malformed.warning(
            ("malformed client", peer), "malformed client message (%d frames) from %s: %s",
            len(frames), shown(peer), exc,
        )  # fmt: skip
        if len(frames) >= 2:
            self.core.refuse(frames[0], m.header_tag(frames[1]), exc.code, str(exc))

    def _bad_worker_message(self, frames: list[bytes], exc: ProtocolError, now: float) -> None:
        peer = frames[0] if frames else b""
        self._malformed.warning(
            ("malformed worker", peer), "malformed worker message (%d frames) from %s: %s",
            len(frames), shown(peer), exc,
        )  # fmt: skip
        if len(frames) >= 2:
            self.core.refuse_worker(frames[0], exc.code, str(exc))
            self._unreadable_result(frames, f"worker sent a malformed result: {exc}", now)

    def _expire(self, now: float) -> None:
        removed = self.core.expire_results()
        if removed:
            log.info(
                "expired %d result(s) older than %g s", removed, self.core_settings.result_ttl_s
            )
            # A store may delete a batch a call (PostgreSQL): the next batch in the next
            # turn, until a call finds none.
            self._next_expiry = now

    def _after_drain(self, drained_at: float | None, now: float) -> float | None:
        if drained_at is None and self.core.drained():
            if self.core.unfinished():
                log.warning("shutdown: %d job(s) left for the next start (%s)",
                            self.core.unfinished(), self.core.no_worker())  # fmt: skip
            else:
                log.info("shutdown: every accepted job has finished; releasing workers")
            self.core.release_workers(now)
            return now
        if drained_at is not None:
            self.core.release_workers(now)  # workers that registered meanwhile
        return drained_at

    def _flush(self, now: float) -> None:
        """Send jobs, commit, then answer clients, batching what goes to the same peer.

        The order is the durability rule of docs/protocol.md ("Durability").
        """
        self._send_to_workers()
        if self.store.has_changes():
            self._guarded(lambda _: self.core.commit(), now)
        for frames in group_by_peer(self.core.take_client_frames(), self._max_bytes):
            send_frames(self.frontend, frames)

    def _send_to_workers(self) -> None:
        """Send what is queued for workers: jobs may leave before the turn's commit
        (docs/protocol.md, "Durability", rule 2)."""
        for frames in group_by_peer(self.core.take_worker_frames(), self._max_bytes):
            send_frames(self.backend, frames)

    @property
    def _max_bytes(self) -> int:
        return self.core_settings.max_message_bytes

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        self.store.close()
        for sock in (self.frontend, self.backend):
            sock.close(linger=0)
        if self.curve:
            self.curve.stop()
        self.context.term()


def is_postgres_url(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def open_store(settings: BrokerSettings, broker_id: str) -> Store:
    """The store `settings.store` names: SQLite in the state directory, or PostgreSQL.

    Raises `StorageError` if PostgreSQL cannot be reached, `SchemaTooNew` if its schema
    is newer than this broker's, ValueError for anything else.
    """
    if settings.store == "sqlite":
        path = Path(settings.state_dir) / "jobs.sqlite3"
        return SqliteStore(path, synchronous=settings.sqlite_synchronous)
    if is_postgres_url(settings.store):
        from broker.store.postgres import PgStore  # psycopg is needed only here

        return PgStore(settings.store, broker_id, socket.gethostname())
    scheme = settings.store.split(":", 1)[0][:20]  # never the rest: it may hold a password
    raise ValueError(f"--store must be 'sqlite' or a postgresql:// URL, not {scheme!r}...")


def group_by_peer(routed: list[list[bytes]], max_bytes: int) -> list[list[bytes]]:
    """ROUTER frame lists, several messages to one peer grouped into BATCHes, in order."""
    if len(routed) < 2:
        return routed
    by_peer: dict[bytes, list[list[bytes]]] = {}
    for frames in routed:
        by_peer.setdefault(frames[0], []).append(frames[1:])
    return [
        [identity, *frames]
        for identity, messages in by_peer.items()
        for frames in m.batches(messages, max_bytes)
    ]
