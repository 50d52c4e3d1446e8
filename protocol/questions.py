"""The nine questions of docs/statistics.md, which way is best for each, and their short ids.

Shared by the workers (best5 / worst5, and resolving what a user typed: `protocol.names`)
and the clients (`lss questions`, `GET /api/questions`, `Client.questions()`, the
dashboard's list and its best / worst marks), which must not import each other.
"""

from __future__ import annotations

BEST_IS_MIN = frozenset(
    {
        "Percent of adults aged 18 years and older who have an overweight classification",
        "Percent of adults aged 18 years and older who have obesity",
        "Percent of adults who engage in no leisure-time physical activity",
        "Percent of adults who report consuming fruit less than one time daily",
        "Percent of adults who report consuming vegetables less than one time daily",
    }
)
BEST_IS_MAX = frozenset(
    {
        "Percent of adults who achieve at least 150 minutes a week of moderate-intensity aerobic "
        "physical activity or 75 minutes a week of vigorous-intensity aerobic activity "
        "(or an equivalent combination)",
        "Percent of adults who achieve at least 150 minutes a week of moderate-intensity aerobic "
        "physical activity or 75 minutes a week of vigorous-intensity aerobic physical activity "
        "and engage in muscle-strengthening activities on 2 or more days a week",
        "Percent of adults who achieve at least 300 minutes a week of moderate-intensity aerobic "
        "physical activity or 150 minutes a week of vigorous-intensity aerobic activity "
        "(or an equivalent combination)",
        "Percent of adults who engage in muscle-strengthening activities on 2 or more days a week",
    }
)
QUESTIONS = (*sorted(BEST_IS_MIN), *sorted(BEST_IS_MAX))
"""Every question: those where the minimum is best first, each group sorted."""

QUESTION_IDS: dict[str, str] = {
    "obesity": "Percent of adults aged 18 years and older who have obesity",
    "overweight": "Percent of adults aged 18 years and older who have an overweight classification",
    "inactivity": "Percent of adults who engage in no leisure-time physical activity",
    "fruit": "Percent of adults who report consuming fruit less than one time daily",
    "vegetables": "Percent of adults who report consuming vegetables less than one time daily",
    "aerobic150": "Percent of adults who achieve at least 150 minutes a week of "
    "moderate-intensity aerobic physical activity or 75 minutes a week of vigorous-intensity "
    "aerobic activity (or an equivalent combination)",
    "aerobic300": "Percent of adults who achieve at least 300 minutes a week of "
    "moderate-intensity aerobic physical activity or 150 minutes a week of vigorous-intensity "
    "aerobic activity (or an equivalent combination)",
    "aerobic_muscle": "Percent of adults who achieve at least 150 minutes a week of "
    "moderate-intensity aerobic physical activity or 75 minutes a week of vigorous-intensity "
    "aerobic physical activity and engage in muscle-strengthening activities on 2 or more days "
    "a week",
    "muscle": "Percent of adults who engage in muscle-strengthening activities on 2 or more days "
    "a week",
}
"""Short id -> full text, for each of the nine; a job may name its question by either."""


def question_list() -> list[dict[str, str]]:
    """The nine questions as `[{"id": ..., "question": ...}, ...]`, in `QUESTIONS` order."""
    id_of = {text: short for short, text in QUESTION_IDS.items()}
    return [{"id": id_of[text], "question": text} for text in QUESTIONS]
