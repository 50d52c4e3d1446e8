"""`Client.map`'s engine: many jobs in flight over a transport of the caller's own.

A pipeline is driven by one caller, so it has its own socket (clients.transport) and
needs no lock: it sends submit-and-wait requests up to the window, reads the final
states as they come, and yields the requests in input order. A job is sent before the
pipeline asks the caller's iterable for the next one: holding it back to send several
together would deadlock an iterable that waits for that job (test_smoke checks this).
Liveness and resending are the session's (clients.session).
A job not over within the caller's timeout ends with `JobTimeout`; the others go on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from clients import operations
from clients.operations import Scheduling
from clients.session import Request
from clients.transport import Transport

Job = tuple[str, dict[str, Any]]


class Pipeline:
    """Runs jobs with at most `window` in flight over `transport`, which it closes; each
    job is submitted with `when`'s priority and deadline."""

    def __init__(self, transport: Transport, timeout_s: float, when: Scheduling) -> None:
        self.transport = transport
        self.session = transport.session
        self.timeout_s = timeout_s
        self.when = when

    def run(self, jobs: Iterable[Job], window: int) -> Iterator[Request]:
        """Each job's request, over (answered, or failed with `JobTimeout`), in input order."""
        in_flight: deque[tuple[Request, float]] = deque()
        try:
            for statistic, params in jobs:
                in_flight.append(self._submit(statistic, params))
                while len(in_flight) >= window:
                    yield self._take(*in_flight.popleft())
                self.transport.flush()  # before `jobs`, which may wait for this very job
            while in_flight:
                yield self._take(*in_flight.popleft())
        finally:
            self.transport.close()

    def _submit(self, statistic: str, params: dict[str, Any]) -> tuple[Request, float]:
        now = time.monotonic()
        submit = operations.map_submit(self.session, statistic, params, self.when)
        return self.session.request(submit), now

    def _take(self, request: Request, sent_at: float) -> Request:
        """Wait for `request` to be over, serving other replies and liveness meanwhile."""
        if self.session.has_outgoing and not request.done:
            self.transport.flush()
        while not request.done:
            left = sent_at + self.timeout_s - time.monotonic()
            if left <= 0:
                self.session.forget(request)
                operations.map_timeout(request, self.timeout_s)
                break
            self.transport.pump(left)
        return request
