"""The pages of one job listing, without I/O: what `Client.jobs` and `AsyncClient.jobs` ask.

A listing is asked for in pages (`ListJobs`, at most the broker's page limit each) until
the broker says there is no more, or until `limit` jobs are listed.
"""

from __future__ import annotations

from protocol import messages as m

PAGE_JOBS = 10_000  # the broker's own page limit: more per page would be cut to it
MAX_NUMBER_DIGITS = 18  # a job number or a limit: within the int64 msgpack carries


def whole_number(text: str) -> int | None:
    """`text` as a whole number of at most `MAX_NUMBER_DIGITS` ASCII digits, or None."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_NUMBER_DIGITS:
        return int(text)
    return None


def job_number(text: str) -> int | None:
    """The job number of a job id (`job_id_N`) or of the number N itself, or None."""
    seq = whole_number(text)
    if seq is None:
        seq = m.job_seq(text)
    return seq if seq is not None and len(str(seq)) <= MAX_NUMBER_DIGITS else None


def _number_of(job: str) -> int:
    seq = job_number(job)
    if seq is None:
        raise ValueError(f"after wants a job id such as job_id_7, got {job!r}")
    return seq


class JobListing:
    """Jobs numbered above `after` (a number, or a job id such as the last of a page), in
    `status` and of `statistic` (when given), at most `limit` of them (None: all), in
    submission order."""

    def __init__(
        self,
        status: str | None = None,
        statistic: str | None = None,
        after: int | str = 0,
        limit: int | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        if isinstance(after, str):
            after = _number_of(after)
        if after < 0:
            raise ValueError("after must not be negative")
        self.jobs: dict[str, str] = {}
        self._status, self._statistic, self._limit = status, statistic, limit
        self._after: int | None = after

    def next_request(self) -> m.ListJobs | None:
        """The request for the next page; None once the listing is complete."""
        if self._after is None:
            return None
        left = PAGE_JOBS if self._limit is None else self._limit - len(self.jobs)
        return m.ListJobs(self._after, min(left, PAGE_JOBS), self._status, self._statistic)

    def add(self, page: m.JobList) -> None:
        """Take in the reply to `next_request`."""
        self.jobs.update((str(job), str(status)) for job, status in page.jobs)
        done = self._limit is not None and len(self.jobs) >= self._limit
        self._after = None if done else page.next_after
