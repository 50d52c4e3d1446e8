"""Each client key's quota of bytes in the store (LSS_KEY_QUOTA_MB): refused at submit
when a key is at it, and an answer past it is not kept."""

from __future__ import annotations

from broker.storage_guard import MB
from broker.store import Outcome, Store, stored_bytes
from protocol.messages import ErrorCode, JobStatus


class KeyQuota:
    """What a key's jobs and answers may take in the store (0 MB: no quota)."""

    def __init__(self, store: Store, quota_mb: float, result_ttl_s: float) -> None:
        self._store = store
        self.quota_bytes = int(quota_mb * MB)
        self._result_ttl_s = result_ttl_s
        # A submit needs room for its body and for an answer as large as any seen: a
        # key at its quota is refused at submit, not given jobs whose answers are dropped.
        self._largest_answer = 0

    def describe(self, owner: str) -> dict[str, int]:
        return {"quota_bytes": self.quota_bytes, "stored_bytes": self._store.stored_bytes(owner)}

    def refusal(self, owner: str, body: bytes) -> tuple[ErrorCode, str] | None:
        """Why a submit of `body` by `owner` is refused, or None."""
        if not self.quota_bytes:
            return None
        stored = self._store.stored_bytes(owner)
        if stored + len(body) + self._largest_answer <= self.quota_bytes:
            return None
        return ErrorCode.OVER_LIMIT, (
            f"quota: this key's jobs and answers take {stored / MB:.1f} MB in the store, and"
            f" its quota is {self.quota_bytes / MB:g} MB (LSS_KEY_QUOTA_MB) with room kept"
            f" for an answer; they are freed as results expire"
            f" ({self._result_ttl_s:g} s after they finish)"
        )

    def within(self, owner: str, outcome: Outcome) -> Outcome:
        """`outcome`, or an error with a short note instead of an answer or a reason that
        would take the job's key past its quota: what a key stores stays bounded, however
        many jobs it had running when it reached the quota."""
        if not self.quota_bytes or (outcome.answer is None and outcome.reason is None):
            return outcome
        if outcome.answer is not None:
            size, what = len(outcome.answer), "answer"
            self._largest_answer = max(self._largest_answer, size)
        else:  # a worker's reason, which a client may provoke, is stored as an answer is
            size, what = stored_bytes(b"", reason=outcome.reason), "reason"
        if self._store.stored_bytes(owner) + size <= self.quota_bytes:
            return outcome
        # Short: it is stored in the answer's place, and counts against the quota too.
        reason = f"quota: {what} of {size} bytes not kept (LSS_KEY_QUOTA_MB)"
        return Outcome(JobStatus.ERROR, reason=reason, fingerprint=outcome.fingerprint)
