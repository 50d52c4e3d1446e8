"""Taking back what a failed store transaction had queued to send (BrokerCore.roll_back).

When a write or the commit fails, the store rolls back, and nothing queued on the
strength of those writes may leave: no reply naming a job that is not in the committed
store, no answer that is not recorded, no `JOB` for a number that was never committed.
These functions filter the outbox's frame lists; they run only after such a failure,
so they decode frames rather than make the hot path carry bookkeeping.
"""

from __future__ import annotations

from typing import Any

from broker.limits import Waiter
from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.messages import ErrorCode, job_seq


def client_replies(
    routed: list[list[bytes]],
    void: set[int],
    dropped: set[Waiter],
    reason: str,
    retry_after_ms: int = 0,
) -> list[list[bytes]]:
    """`routed` without the replies to `dropped` waiters (they will be answered later),
    and with every other reply naming a job in `void` turned into a `storage` error."""
    kept: list[list[bytes]] = []
    for frames in routed:
        try:
            envelope = m.decode(frames, routed=True)
        except ProtocolError:  # not ours to judge: it names no job of the transaction
            kept.append(frames)
            continue
        who = (envelope.identity or b"", envelope.tag)
        if who in dropped:
            continue
        if isinstance(envelope.message, m.RecentJobs):  # a listing: without the void jobs
            kept.append(m.route(who[0], _without(envelope.message, void), who[1]))
        elif _named_jobs(envelope.message) & void:
            refusal = m.ErrorReply(ErrorCode.STORAGE.value, reason, retry_after_ms)
            kept.append(m.route(who[0], refusal, who[1]))
        else:
            kept.append(frames)
    return kept


def restated(
    routed: list[list[bytes]], states: dict[int, tuple[m.JobState, bytes | None]]
) -> list[list[bytes]]:
    """`routed` with every `JobState` of a job in `states` replaced by the state there
    (and its answer): what the store holds, not what this broker had said."""
    kept: list[list[bytes]] = []
    for frames in routed:
        try:
            envelope = m.decode(frames, routed=True)
        except ProtocolError:
            kept.append(frames)
            continue
        message = envelope.message
        seq = job_seq(message.job_id) if isinstance(message, m.JobState) else None
        if seq is not None and seq in states:
            state, answer = states[seq]
            kept.append(m.route(envelope.identity or b"", state, envelope.tag, answer))
        else:
            kept.append(frames)
    return kept


def worker_jobs(
    routed: list[list[bytes]], void: set[int]
) -> tuple[list[list[bytes]], list[tuple[bytes, int]]]:
    """`routed` without the `JOB`s for jobs in `void`, and those as (worker, job number)."""
    kept: list[list[bytes]] = []
    taken: list[tuple[bytes, int]] = []
    for frames in routed:
        seq = _job_of(frames)
        if seq in void:
            taken.append((frames[0], seq))
        else:
            kept.append(frames)
    return kept, taken


def _named_jobs(message: m.Message) -> set[int]:
    if isinstance(message, m.Submitted | m.JobState):
        ids = [message.job_id]
    elif isinstance(message, m.JobList):
        ids = [str(entry[0]) for entry in message.jobs]
    else:
        return set()
    return {seq for seq in map(job_seq, ids) if seq is not None}


def _without(recent: m.RecentJobs, void: set[int]) -> m.RecentJobs:
    def kept(entries: list[Any]) -> list[Any]:
        return [entry for entry in entries if job_seq(str(entry.get("job_id"))) not in void]

    return m.RecentJobs(kept(recent.jobs), kept(recent.failures))


def _job_of(frames: list[bytes]) -> int | None:
    try:
        envelope = m.decode(frames, routed=True)
    except ProtocolError:
        return None
    if not isinstance(envelope.message, m.Job):
        return None
    return job_seq(envelope.tag.decode("ascii", "replace"))
