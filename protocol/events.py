"""Structured events: the facts that tests, the bench and the soak measure, as JSON lines.

A log line is written for people and may be reworded; an event is written for programs,
so a figure computed from it cannot silently change. A process that calls
`write_events(state_dir, name)` appends one JSON object per `emit()` to
`STATE_DIR/events.jsonl`:

    {"t": 1764387710.52, "event": "worker_lost", "process": "broker", "pid": 4242,
     "worker": "vm:4250:1", "worker_pid": 4250, "reason": "heartbeat lost",
     "jobs": ["job_id_7"]}

`t` is the wall clock (epoch seconds) when the event happened; the other fields are the
event's own. Events are rare (a worker registered or lost, data loaded, a reconnect),
never one per job. Processes sharing a state directory share the file: each line is
one append, so lines do not interleave. Without `write_events` an emit costs nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"

_log = logging.getLogger("lss.events")
_log.propagate = False  # events are not log lines
_log.addHandler(logging.NullHandler())


def emit(event: str, **fields: Any) -> None:
    """Record that `event` happened now, with its `fields` (JSON-serialisable)."""
    _log.info(event, extra={"fields": fields})


class _JsonLines(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        head = {"t": record.created, "event": record.msg, "process": self.process}
        return json.dumps({**head, "pid": record.process, **getattr(record, "fields", {})})


def write_events(state_dir: str | Path, process: str) -> None:
    """From now on, append this process's events to STATE_DIR/events.jsonl."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(state_dir) / EVENTS_FILE)  # append: one write a line
    handler.setFormatter(_JsonLines(process))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)


def read_events(state_dir: str | Path, event: str | None = None) -> list[dict[str, Any]]:
    """The events recorded in STATE_DIR (only those named `event`, if given), oldest first."""
    path = Path(state_dir) / EVENTS_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            record: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        if event is None or record.get("event") == event:
            found.append(record)
    return found
