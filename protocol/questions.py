"""The nine questions of docs/statistics-contract.md, and which way is best for each.

Shared by the workers (best5 / worst5) and the dashboard (its question list and its
best / worst marks), which must not import each other.
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
