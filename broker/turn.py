"""The end of a loop turn: commit the store's transaction, or roll it back and undo
here what it did (docs/protocol.md, "Durability")."""

from __future__ import annotations

import logging

from broker import undo
from broker.limits import Waiter
from broker.state import CoreState
from broker.store import StorageError
from protocol.messages import ErrorCode

log = logging.getLogger("lss.broker")


class TurnEnd:
    """Commits and roll-backs of the turn's transaction."""

    def __init__(self, state: CoreState) -> None:
        self.state = state

    def commit(self) -> None:
        """Commit the store's transaction; raises `StorageError` (then call `roll_back`)."""
        self.state.store.commit()
        self.state.jobs.commit()

    def roll_back(self, failure: StorageError, now_s: float) -> str:
        """Roll the store's transaction back after `failure` (at `now_s`), and undo here
        what it did.

        Jobs added are forgotten, and each request that named one gets a `storage`
        error instead; jobs finished are unfinished again and run again after a backoff
        (broker.jobs.COMMIT_RETRY_MIN_S), their waiters waiting again. Nothing queued on the
        strength of the lost writes leaves. Returns the reason given in those errors.
        """
        reason = f"storage failed: {failure}"
        self.state.storage_failures[failure.operation] += 1
        try:
            self.state.store.rollback()
        except StorageError as exc:
            log.error("rollback failed too: %s", exc)
        added, restored = self.state.jobs.roll_back(now_s)
        answered: set[Waiter] = set()
        for seq, waiters in restored.items():
            self.state.waiters.restore(seq, waiters)
            answered |= waiters
        self.state.outbox.clients = undo.client_replies(
            self.state.outbox.clients,
            added | restored.keys(),
            answered,
            reason,
            self.state.retry_refused_ms,
        )
        self.state.outbox.workers, taken = undo.worker_jobs(self.state.outbox.workers, added)
        for identity, seq in taken:
            self.state.pool.release(identity, seq)
        for seq in added:
            self.state.latency.forget(seq)
            for identity, tag in self.state.waiters.pop(seq):
                self.state.refuse(identity, tag, ErrorCode.STORAGE, reason)
        self.state.jobs.requeue_unheld(
            {seq for worker in self.state.pool.all() for seq in worker.jobs}
        )
        return reason
