"""What a loop turn sends (`Outbox`): frames for clients and for workers, and the
per-peer budgets of answer and data bytes that keep a turn's sends bounded.

When each part leaves relative to the commit: docs/protocol.md, "Durability".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.limits import (
    ANSWER_BYTES_PER_TURN,
    DATA_BYTES_PER_TURN,
    PEER_ANSWER_BYTES_PER_TURN,
    Budget,
)
from protocol import config
from protocol import messages as m
from protocol.messages import ErrorCode

# Replies whose size a peer chooses (up to a page or MAX_RECENT jobs, ~100 KB): they
# count against the peer's answer budget of a turn, as answers do.
SIZED_REPLIES = (m.RecentJobs, m.JobList, m.StatsReply)


@dataclass
class Outbox:
    """Frames to send at the end of the loop turn: to clients and to workers; and the
    bytes of answers and data chunks queued this turn, per peer, to keep them bounded.
    """

    clients: list[list[bytes]] = field(default_factory=list)
    workers: list[list[bytes]] = field(default_factory=list)
    answers: Budget = field(
        default_factory=lambda: Budget(PEER_ANSWER_BYTES_PER_TURN, ANSWER_BYTES_PER_TURN)
    )
    data: Budget = field(
        default_factory=lambda: Budget(config.DATA_CHUNK_BYTES, DATA_BYTES_PER_TURN)
    )

    def reply(
        self, identity: bytes, tag: bytes, message: m.Message, payload: bytes | None = None
    ) -> None:
        """Queue a reply to a client; an answer, or a reply whose size the client chose,
        past its budget of the turn goes as an `over_limit` error instead."""
        frames = m.route(identity, message, tag, payload)
        if payload is not None or isinstance(message, SIZED_REPLIES):
            size = len(payload) if payload is not None else sum(map(len, frames))
            if not self.answers.take(identity, size):
                frames = m.route(identity, over_budget(), tag)
        self.clients.append(frames)

    def take_workers(self) -> list[list[bytes]]:
        """The frames for workers queued so far (the loop sends them before the commit)."""
        workers, self.workers = self.workers, []
        return workers

    def take_clients(self) -> list[list[bytes]]:
        """The frames for clients (sent after the commit); the turn's budgets start anew."""
        clients, self.clients = self.clients, []
        self.answers.reset()
        self.data.reset()
        return clients

    def take(self) -> tuple[list[list[bytes]], list[list[bytes]]]:
        """Both, at the end of a turn with no commit in between (unit tests)."""
        workers = self.take_workers()
        return self.take_clients(), workers


def over_budget() -> m.ErrorReply:
    why = f"more than {PEER_ANSWER_BYTES_PER_TURN} bytes of answers at once; ask again"
    return m.ErrorReply(ErrorCode.OVER_LIMIT.value, why)
