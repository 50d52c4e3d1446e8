"""Every statistic, for every question and several states, through real processes,
checked against an independent plain-Python computation (bench.reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness import Service
from bench.reference import MINIMISED, QUESTIONS, Reference, assert_close, close_enough
from protocol.locations import USPS_CODES
from protocol.messages import STATE_STATISTICS, STATISTICS
from protocol.questions import QUESTION_IDS

pytestmark = [pytest.mark.integration, pytest.mark.shares_service]


WHOLE = [s for s in STATISTICS if s not in STATE_STATISTICS]
PER_STATE = [s for s in STATISTICS if s in STATE_STATISTICS]
STATES = ["Ohio", "California", "National", "Guam", "District of Columbia"]


@pytest.fixture(scope="module")
def reference(standin_csv: Path) -> Reference:
    return Reference(standin_csv)


def test_every_statistic_for_every_question(service: Service, reference: Reference) -> None:
    jobs = [(stat, {"question": q}) for q in QUESTIONS for stat in WHOLE]
    jobs += [
        (stat, {"question": q, "state": s}) for q in QUESTIONS for s in STATES for stat in PER_STATE
    ]
    with service.client(timeout=30) as client:
        answers = list(client.map(jobs, window=32))
    assert len(answers) == len(jobs) == 9 * 6 + 9 * 5 * 4
    for (statistic, params), answer in zip(jobs, answers, strict=True):
        expected = reference.answer(statistic, params["question"], params.get("state"))
        assert_close(answer, expected, f"{statistic}{params}")


def test_years_and_names_as_people_type_them(service: Service, reference: Reference) -> None:
    """Every statistic over 2015-2018, the question by its id and the state by its USPS
    code: the answers name them as the data does and count only those years' rows."""
    narrowed = reference.within(2015, 2018)
    jobs = [
        (stat, {"question": short, "years": [2015, 2018]})
        for short in ("obesity", "muscle")
        for stat in WHOLE
    ]
    jobs += [
        (stat, {"question": short, "state": code, "years": [2015, 2018]})
        for short in ("obesity", "muscle")
        for code in ("oh", "US", "Gu")
        for stat in PER_STATE
    ]
    with service.client(timeout=30) as client:
        answers = list(client.map(jobs, window=32))
    for (statistic, params), answer in zip(jobs, answers, strict=True):
        question = QUESTION_IDS[str(params["question"])]
        state = USPS_CODES.get(str(params.get("state", "")).upper())
        expected = narrowed.answer(statistic, question, state)
        assert_close(answer, expected, f"{statistic}{params}")
    # The years made a difference: all years give another states_mean.
    assert not close_enough(answers[0], reference.answer(jobs[0][0], QUESTION_IDS["obesity"]))


def test_ordering_of_ranked_answers(service: Service) -> None:
    with service.client() as client:
        for question in QUESTIONS:
            states_mean = list(client.states_mean(question).values())
            best = list(client.best5(question).values())
            worst = list(client.worst5(question).values())
            assert states_mean == sorted(states_mean), question
            ascending_best = question in MINIMISED
            assert best == sorted(best, reverse=not ascending_best), question
            assert worst == sorted(worst, reverse=ascending_best), question
            assert len(best) == len(worst) == 5


def test_job_ids_follow_submission_order(service: Service) -> None:
    with service.client() as client:
        ids = [client.submit("global_mean", question=QUESTIONS[0]) for _ in range(5)]
        numbers = [int(job.rsplit("_", 1)[1]) for job in ids]
        assert numbers == list(range(numbers[0], numbers[0] + 5))
        for job in ids:
            client.wait(job)
        assert {job: "done" for job in ids}.items() <= client.jobs().items()
        assert client.num_jobs() == 0
