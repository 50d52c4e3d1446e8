"""A worker's result of one job: an error's reason is cut short, whatever it quotes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from protocol import messages as m
from workers.compute import JobRunner


class Refused(Exception):
    pass


def quote_the_question(_statistic: str, params: Mapping[str, object]) -> dict[str, Any]:
    raise Refused(f"no data for question {params['question']!r}")


def test_an_error_reason_is_capped_and_escaped() -> None:
    runner = JobRunner(quote_the_question, Refused, "f" * 64, 1 << 20)
    request = m.body_of(m.Job("best5", {"question": "\x7f" * 3_000}))
    frames = runner.run(request)
    result = m.decode_body(m.Result, frames.body)
    assert result.status == "error" and result.reason is not None
    assert len(result.reason) < m.MAX_REASON_CHARS + 30
    assert result.reason.startswith("no data for question '\\x7f\\x7f")
    assert len(frames.body) < 2 * m.MAX_REASON_CHARS


def test_a_job_past_its_deadline_when_its_turn_comes_is_skipped_not_computed() -> None:
    computed: list[str] = []

    def compute(statistic: str, _params: Mapping[str, object]) -> dict[str, Any]:
        computed.append(statistic)
        return {"x": 1.0}

    runner = JobRunner(compute, Refused, "f" * 64, 1 << 20)
    job = m.body_of(m.Job("best5", {"question": "Q"}, deadline_ms=200))
    late = m.decode_body(m.Result, runner.run(job, received_s=time.monotonic() - 0.3).body)
    assert (late.status, late.reason, computed) == ("cancelled", "deadline passed", [])
    on_time = m.decode_body(m.Result, runner.run(job, received_s=time.monotonic()).body)
    assert (on_time.status, computed) == ("done", ["best5"])
