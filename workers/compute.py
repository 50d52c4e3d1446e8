"""Running one job: decode its `Job` body, compute the statistic, encode the result.

`JobRunner` turns a forwarded `Job` body into a `Result` body and an answer payload. It
never raises: a malformed job or a failing statistic becomes an error result. Results
are cached by job body, since the data never changes while a worker lives; the
socket thread answers cached jobs itself (`cached`), the compute thread the rest.
The runner also owns the diagnostic statistics (`_sleep`, `_crash`), which exist only
when a worker is started with --diagnostics, for fault-injection tests.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.logs import shown

log = logging.getLogger("lss.worker")

Compute = Callable[[str, Mapping[str, object]], dict[str, Any]]
CACHE_ENTRIES = 4096
CRASH_EXIT_CODE = 86
MAX_SLEEP_S = 3600.0


@dataclass(frozen=True)
class ResultFrames:
    """The frames a worker sends back for one job: `Result` body (`body_of`) and optional
    answer payload."""

    body: bytes
    payload: bytes | None


class JobRunner:
    """Computes jobs with `compute` (raising `expected_error` for a job's own error)."""

    def __init__(
        self,
        compute: Compute,
        expected_error: type[Exception],
        fingerprint: str,
        max_answer_bytes: int,
        diagnostics: bool = False,
    ) -> None:
        self._compute = compute
        self._expected_error = expected_error
        self._fingerprint = fingerprint
        self._max_answer_bytes = max_answer_bytes
        self._diagnostics = diagnostics
        self._done = m.body_of(
            m.Result(m.JobStatus.DONE.value, fingerprint)
        )  # the same for every job
        # Written by the compute thread only, read by both: plain dict operations are
        # atomic under the GIL. Eviction is first-in first-out.
        self._cache: dict[bytes, ResultFrames] = {}

    def cached(self, job_body: bytes) -> ResultFrames | None:
        """The result of an identical earlier job, if remembered."""
        return self._cache.get(job_body)

    def run(self, job_body: bytes, received_s: float | None = None) -> ResultFrames:
        """The result of the job whose `Job` body is `job_body`; CANCELLED ("deadline
        passed") if it names a deadline that passed since it was received (`received_s`,
        time.monotonic())."""
        cached = self._cache.get(job_body)
        if cached is not None:
            return cached
        try:
            job = m.decode_body(m.Job, job_body)
        except ProtocolError as exc:
            return self._error(f"malformed job: {exc}")
        late = received_s is not None and time.monotonic() > received_s + job.deadline_ms / 1000
        if job.deadline_ms and late:
            return self.cancelled(m.REASON_DEADLINE)
        if job.statistic.startswith("_") and self._diagnostics:
            return self._diagnostic(job)
        result = self._computed(job)
        self._remember(job_body, result)
        return result

    def _computed(self, job: m.Job) -> ResultFrames:
        try:
            answer = self._compute(job.statistic, job.params)
        except self._expected_error as exc:
            return self._error(str(exc))
        except Exception as exc:  # a bug must fail one job, not the worker
            log.exception("statistic %s failed", job.statistic)
            return self._error(f"internal error in {job.statistic}: {exc}")
        payload = m.pack(answer)
        if len(payload) > self._max_answer_bytes:
            return self._error(f"answer of {len(payload)} bytes exceeds {self._max_answer_bytes}")
        return ResultFrames(self._done, payload)

    def _error(self, reason: str) -> ResultFrames:
        """An error result; the reason is cut short (it may quote a huge parameter, and
        an oversize RESULT would fail the job anyway)."""
        reason = shown(reason, m.MAX_REASON_CHARS)
        return ResultFrames(
            m.body_of(m.Result(m.JobStatus.ERROR.value, self._fingerprint, reason)), None
        )

    def cancelled(self, reason: str) -> ResultFrames:
        """The result of a job skipped: cancelled by its broker, or its deadline passed."""
        return ResultFrames(
            m.body_of(m.Result(m.JobStatus.CANCELLED.value, self._fingerprint, reason)), None
        )

    def _remember(self, job_body: bytes, result: ResultFrames) -> None:
        self._cache[job_body] = result
        if len(self._cache) > CACHE_ENTRIES:
            del self._cache[next(iter(self._cache))]

    def _diagnostic(self, job: m.Job) -> ResultFrames:
        """`_sleep` {seconds, only_pid?}: answer {"slept_s"} after a delay (none on a worker
        whose pid is not `only_pid`, when given); `_crash`: the process dies at once."""
        if job.statistic == "_crash":
            log.warning("diagnostic _crash: exiting with code %d", CRASH_EXIT_CODE)
            os._exit(CRASH_EXIT_CODE)
        seconds, only_pid = job.params.get("seconds"), job.params.get("only_pid")
        if job.statistic != "_sleep" or not isinstance(seconds, int | float):
            return self._error(f"unknown diagnostic {job.statistic!r} (or missing 'seconds')")
        slept = min(max(float(seconds), 0.0), MAX_SLEEP_S)
        if isinstance(only_pid, int) and only_pid != os.getpid():
            slept = 0.0
        time.sleep(slept)
        return ResultFrames(self._done, m.pack({"slept_s": slept}))
