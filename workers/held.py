"""The order in which a worker's compute thread takes the jobs it holds.

The socket thread hands each job to the compute thread over an inproc pipe, as frames
`[tag, body, connection, mark, received]`. Jobs run in the order they came, except that
a front job (`FRONT_JOB`: the only running job of its producer) runs before the held
jobs that are not (the stop message, too, waits for the jobs before it): a one-call is
not queued behind a bulk producer's jobs already on the worker (docs/protocol.md, "Fair
producers").
"""

from __future__ import annotations

from collections import deque

import zmq

STOP = b""  # empty tag: tells the compute thread to end
SUSPECT = b"s"  # marks a suspect job on the pipe
FRONT = b"f"  # marks a front job on the pipe


class HeldJobs:
    """The jobs handed to the compute thread and not started, read from its pipe."""

    def __init__(self, pipe: zmq.Socket[bytes]) -> None:
        self._pipe = pipe
        self._front: deque[list[bytes]] = deque()
        self._rest: deque[list[bytes]] = deque()

    def next(self) -> list[bytes]:
        """The next job's frames (or the stop message): waits when none is held."""
        if not (self._front or self._rest):
            self._keep(self._pipe.recv_multipart())
        while self._pipe.poll(0):
            self._keep(self._pipe.recv_multipart())
        return (self._front or self._rest).popleft()

    def _keep(self, frames: list[bytes]) -> None:
        if frames[0] != STOP and frames[3] == FRONT:
            self._front.append(frames)
        else:
            self._rest.append(frames)
