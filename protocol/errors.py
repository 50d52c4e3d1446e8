"""The one exception tree of LSS, shared by broker, workers and clients."""

from __future__ import annotations


class LssError(Exception):
    """Base of every error LSS raises on purpose."""


class ProtocolError(LssError):
    """A message that does not follow docs/protocol.md; `code` is an ErrorCode value."""

    def __init__(self, reason: str, code: str = "bad_request") -> None:
        super().__init__(reason)
        self.code = code


class BrokerUnavailable(LssError):
    """The broker did not answer within the deadline."""


class JobTimeout(LssError):
    """A job did not finish within the caller's deadline (it may still finish later)."""


class UnknownJob(LssError):
    """A job id that was never issued, or whose result has expired."""


class JobFailed(LssError):
    """A job finished with an error; `str()` is the reason."""


class JobCancelled(LssError):
    """A job ended cancelled and has no answer: `reason` is "cancelled" (by its owner or
    an admin) or "deadline passed" (it had not started by its deadline)."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"{job_id} was cancelled: {reason}")
        self.job_id = job_id
        self.reason = reason


class RequestRefused(LssError):
    """The broker refused a request (queue full, shutting down, bad request...)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
