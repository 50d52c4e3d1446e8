"""A deterministic, realistic stand-in for the BRFSS subset file, for tests, demos and benchmarks.

This module owns the generated data: it writes the subset format of docs/dataset.md
(the exact 34-field header, a running index first, every vocabulary of the real file) with
values that make the statistics meaningful: each location has a "health" effect and each
stratum an effect per question, so best5/worst5 pick stable, different states. Some rows
have an empty `Data_Value`, some carry the `~` footnote, and each location has between 21
and 28 of the 28 strata per question (once `rows` covers one row per combination). Past
that, rows keep coming as further (year, combination) draws, so any size can be produced.
Standard library and the protocol package's tables only, so it imports fast anywhere; the
same seed gives the same bytes.

Command line: `python -m workers.standin --rows N --seed S --out PATH`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import protocol.locations

HEADER_LINE = (
    ",YearStart,YearEnd,LocationAbbr,LocationDesc,Datasource,Class,Topic,Question,"
    "Data_Value_Unit,Data_Value_Type,Data_Value,Data_Value_Alt,Data_Value_Footnote_Symbol,"
    "Data_Value_Footnote,Low_Confidence_Limit,High_Confidence_Limit ,Sample_Size,Total,"
    "Age(years),Education,Gender,Income,Race/Ethnicity,GeoLocation,ClassID,TopicID,QuestionID,"
    "DataValueTypeID,LocationID,StratificationCategory1,Stratification1,"
    "StratificationCategoryId1,StratificationID1"
)
HEADER = tuple(HEADER_LINE.split(","))
DEFAULT_ROWS = 18_000
DEFAULT_SEED = 2024
YEARS = tuple(range(2011, 2023))
FOOTNOTE = "Data not available because sample size is insufficient."
FOOTNOTE_SHARE = 0.05  # rows carrying the `~` footnote
FOOTNOTE_EMPTY_SHARE = 0.6  # of those, rows whose Data_Value is empty too
MIN_STRATA = 21  # per location and question, Total always among them

# USPS code -> (LocationID, latitude, longitude); National has no GeoLocation.
# fmt: off
_PLACES: dict[str, tuple[int, float, float]] = {
    "AL": (1, 32.84, -86.63), "AK": (2, 64.85, -147.72), "AZ": (4, 34.87, -111.76),
    "AR": (5, 34.75, -92.27), "CA": (6, 37.64, -120.99), "CO": (8, 38.84, -106.13),
    "CT": (9, 41.57, -72.65), "DE": (10, 39.01, -75.58), "DC": (11, 38.91, -77.02),
    "FL": (12, 28.93, -81.93), "GA": (13, 32.84, -83.63), "HI": (15, 21.30, -157.86),
    "ID": (16, 43.68, -114.36), "IL": (17, 40.49, -88.99), "IN": (18, 39.77, -86.15),
    "IA": (19, 42.47, -93.82), "KS": (20, 38.35, -98.20), "KY": (21, 37.65, -84.77),
    "LA": (22, 31.31, -92.45), "ME": (23, 45.25, -68.99), "MD": (24, 39.29, -76.61),
    "MA": (25, 42.27, -72.08), "MI": (26, 44.66, -84.71), "MN": (27, 46.36, -94.79),
    "MS": (28, 32.75, -89.54), "MO": (29, 38.64, -92.57), "MT": (30, 47.07, -109.42),
    "NE": (31, 41.64, -99.37), "NV": (32, 39.49, -117.07), "NH": (33, 43.66, -71.50),
    "NJ": (34, 40.13, -74.27), "NM": (35, 34.52, -106.24), "NY": (36, 42.83, -75.54),
    "NC": (37, 35.47, -79.16), "ND": (38, 47.48, -100.12), "OH": (39, 40.06, -82.40),
    "OK": (40, 35.47, -97.52), "OR": (41, 44.57, -120.16), "PA": (42, 40.79, -77.86),
    "RI": (44, 41.71, -71.52), "SC": (45, 33.99, -81.05), "SD": (46, 44.35, -100.37),
    "TN": (47, 35.68, -85.77), "TX": (48, 31.83, -99.43), "UT": (49, 39.36, -111.59),
    "VT": (50, 43.63, -72.52), "VA": (51, 37.54, -78.46), "WA": (53, 47.52, -120.47),
    "WV": (54, 38.67, -80.71), "WI": (55, 44.39, -89.82), "WY": (56, 43.24, -108.11),
    "GU": (66, 13.44, 144.79), "PR": (72, 18.22, -66.59), "VI": (78, 18.34, -64.90),
    "US": (59, 0.0, 0.0),
}
# fmt: on
LOCATIONS: tuple[tuple[str, str, int, float, float], ...] = tuple(
    (code, name, *_PLACES[code]) for code, name in protocol.locations.LOCATIONS
)
"""(abbreviation, name, LocationID, latitude, longitude), in protocol.locations' order."""
_OWS = ("Obesity / Weight Status", "Obesity / Weight Status", "OWS", "OWS1")
_PA = ("Physical Activity", "Physical Activity - Behavior", "PA", "PA1")
_FV = ("Fruits and Vegetables", "Fruits and Vegetables - Behavior", "FV", "FV1")
_AEROBIC_150 = (
    "Percent of adults who achieve at least 150 minutes a week of moderate-intensity aerobic "
    "physical activity or 75 minutes a week of vigorous-intensity aerobic"
)
# (QuestionID, (Class, Topic, ClassID, TopicID), mean %, best is the minimum, trend %/year, text)
# fmt: off
QUESTIONS: tuple[tuple[str, tuple[str, str, str, str], float, bool, float, str], ...] = (
    ("Q036", _OWS, 31, True, 0.4, "Percent of adults aged 18 years and older who have obesity"),
    ("Q037", _OWS, 35, True, 0.0,
     "Percent of adults aged 18 years and older who have an overweight classification"),
    ("Q043", _PA, 50, False, 0.1, f"{_AEROBIC_150} activity (or an equivalent combination)"),
    ("Q044", _PA, 21, False, 0.1,
     f"{_AEROBIC_150} physical activity and engage in muscle-strengthening activities "
     "on 2 or more days a week"),
    ("Q045", _PA, 33, False, 0.1,
     "Percent of adults who achieve at least 300 minutes a week of moderate-intensity aerobic "
     "physical activity or 150 minutes a week of vigorous-intensity aerobic activity "
     "(or an equivalent combination)"),
    ("Q046", _PA, 31, False, 0.2,
     "Percent of adults who engage in muscle-strengthening activities on 2 or more days a week"),
    ("Q047", _PA, 26, True, -0.1,
     "Percent of adults who engage in no leisure-time physical activity"),
    ("Q018", _FV, 38, True, 0.2,
     "Percent of adults who report consuming fruit less than one time daily"),
    ("Q019", _FV, 20, True, 0.1,
     "Percent of adults who report consuming vegetables less than one time daily"),
)
_STRATUM_COLUMNS = ("Total", "Age(years)", "Education", "Gender", "Income", "Race/Ethnicity")
# (StratificationCategory1, Stratification1, StratificationCategoryId1, StratificationID1,
#  the one stratum column that is filled); Total first: it is the reference stratum.
STRATA: tuple[tuple[str, str, str, str, str], ...] = (
    ("Total", "Total", "OVR", "OVERALL", "Total"),
    ("Age (years)", "18 - 24", "AGEYR", "AGEYR1824", "Age(years)"),
    ("Age (years)", "25 - 34", "AGEYR", "AGEYR2534", "Age(years)"),
    ("Age (years)", "35 - 44", "AGEYR", "AGEYR3544", "Age(years)"),
    ("Age (years)", "45 - 54", "AGEYR", "AGEYR4554", "Age(years)"),
    ("Age (years)", "55 - 64", "AGEYR", "AGEYR5564", "Age(years)"),
    ("Age (years)", "65 or older", "AGEYR", "AGEYR65PLUS", "Age(years)"),
    ("Education", "Less than high school", "EDU", "EDUHS", "Education"),
    ("Education", "High school graduate", "EDU", "EDUHSGRAD", "Education"),
    ("Education", "Some college or technical school", "EDU", "EDUCOTEC", "Education"),
    ("Education", "College graduate", "EDU", "EDUCOGRAD", "Education"),
    ("Gender", "Male", "GEN", "MALE", "Gender"),
    ("Gender", "Female", "GEN", "FEMALE", "Gender"),
    ("Income", "Less than $15,000", "INC", "INCLESS15", "Income"),
    ("Income", "$15,000 - $24,999", "INC", "INC1525", "Income"),
    ("Income", "$25,000 - $34,999", "INC", "INC2535", "Income"),
    ("Income", "$35,000 - $49,999", "INC", "INC3550", "Income"),
    ("Income", "$50,000 - $74,999", "INC", "INC5075", "Income"),
    ("Income", "$75,000 or greater", "INC", "INC75PLUS", "Income"),
    ("Income", "Data not reported", "INC", "INCNR", "Income"),
    ("Race/Ethnicity", "Non-Hispanic White", "RACE", "RACEWHT", "Race/Ethnicity"),
    ("Race/Ethnicity", "Non-Hispanic Black", "RACE", "RACEBLK", "Race/Ethnicity"),
    ("Race/Ethnicity", "Hispanic", "RACE", "RACEHIS", "Race/Ethnicity"),
    ("Race/Ethnicity", "Asian", "RACE", "RACEASN", "Race/Ethnicity"),
    ("Race/Ethnicity", "Hawaiian/Pacific Islander", "RACE", "RACEHPI", "Race/Ethnicity"),
    ("Race/Ethnicity", "American Indian/Alaska Native", "RACE", "RACENAA", "Race/Ethnicity"),
    ("Race/Ethnicity", "2 or more races", "RACE", "RACE2PLUS", "Race/Ethnicity"),
    ("Race/Ethnicity", "Other", "RACE", "RACEOTH", "Race/Ethnicity"),
)
# fmt: on


_SOURCE = "Behavioral Risk Factor Surveillance System"
_SOURCE_2022 = "BRFSS"
_FOOTNOTE_FIELDS = f",,~,{FOOTNOTE},,,"  # Data_Value_Alt .. Sample_Size of a `~` row
_CHUNK_ROWS = 10_000  # lines joined per write


@dataclass(frozen=True, slots=True)
class _Combo:
    """One (location, question, stratum) the file has rows for, its fixed cells pre-rendered."""

    location: str  # "LocationAbbr,LocationDesc" as CSV
    question: str  # "Class,Topic,Question,Data_Value_Unit,Data_Value_Type" as CSV
    stratum: str  # "Total,..." through StratificationID1 as CSV
    mean: float  # expected Data_Value in 2016, percent
    trend: float  # percent per year
    size_factor: int  # National samples are larger


def generate(
    path: str | os.PathLike[str], rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED
) -> int:
    """Write `rows` data rows of stand-in data to `path` (subset format); return `rows`.

    The same `rows` and `seed` always give the same bytes. The file is written next to
    `path` first and then moved into place, so a reader never sees half a file.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    rng = random.Random(seed)
    draws = _draws(rng, _combinations(rng))
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as out:
            out.write(HEADER_LINE + "\n")
            for start in range(0, rows, _CHUNK_ROWS):
                indexes = range(start, min(start + _CHUNK_ROWS, rows))
                out.writelines(_line(rng, index, *next(draws)) for index in indexes)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return rows


def _combinations(rng: random.Random) -> list[_Combo]:
    """Every (location, question, stratum) with rows: 21 to 28 strata each, Total always."""
    health = [rng.gauss(0.0, 1.0) for _ in LOCATIONS]
    effects = [[rng.gauss(0.0, 3.0) for _ in QUESTIONS] for _ in STRATA]
    effects[0] = [0.0] * len(QUESTIONS)  # Total is the reference
    combos: list[_Combo] = []
    for location, location_health in zip(LOCATIONS, health, strict=True):
        geolocation = _geolocation(rng, location)
        national = location[0] == "US"  # the nation sits near the middle of its states
        for which, question in enumerate(QUESTIONS):
            # A healthy location is low on "best is the minimum" questions, high on the others.
            direction = -1.0 if question[3] else 1.0
            noise = rng.gauss(0.0, 2.5) * (0.1 if national else 1.0)
            shift = (0.0 if national else 3.0 * location_health * direction) + noise
            combos.extend(
                _combo(location, geolocation, question, strat, shift + effects[strat][which])
                for strat in _strata_subset(rng)
            )
    return combos


def _combo(
    location: tuple[str, str, int, float, float],
    geolocation: str,
    question: tuple[str, tuple[str, str, str, str], float, bool, float, str],
    strat: int,
    shift: float,
) -> _Combo:
    """The `_Combo` of one location, question and stratum (index into `STRATA`)."""
    abbreviation, name, location_id = location[:3]
    qid, (klass, topic, class_id, topic_id), mean, _, trend, text = question
    category, stratum, category_id, stratum_id, column = STRATA[strat]
    columns = [stratum if each == column else "" for each in _STRATUM_COLUMNS]
    ids = [geolocation, class_id, topic_id, qid, "VALUE", str(location_id)]
    return _Combo(
        location=_csv((abbreviation, name)),
        question=_csv((klass, topic, text, "", "Value")),
        stratum=_csv((*columns, *ids, category, stratum, category_id, stratum_id)),
        mean=mean + shift,
        trend=trend,
        size_factor=12 if abbreviation == "US" else 1,
    )


def _csv(fields: Sequence[str]) -> str:
    """`fields` (at least two) as one CSV fragment, quoted where the real file quotes."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _geolocation(rng: random.Random, location: tuple[str, str, int, float, float]) -> str:
    """The GeoLocation cell: "(lat, lon)" with the real file's many decimals, or empty."""
    if location[0] == "US":
        return ""
    lat = location[3] + rng.random() * 1e-2
    lon = location[4] - rng.random() * 1e-2
    return f"({lat:.9f}, {lon:.9f})"


def _strata_subset(rng: random.Random) -> list[int]:
    """Indexes into `STRATA` of the strata one location has for one question, in order."""
    others = rng.sample(range(1, len(STRATA)), rng.randint(MIN_STRATA - 1, len(STRATA) - 1))
    return [0, *sorted(others)]


def _draws(rng: random.Random, combos: list[_Combo]) -> Iterator[tuple[_Combo, int]]:
    """Endless (combination, year) draws: each round covers every combination once,
    each combination taking the next year (cyclically) in every round."""
    offsets = [rng.randrange(len(YEARS)) for _ in combos]
    order = list(range(len(combos)))
    round_number = 0
    while True:
        rng.shuffle(order)
        for index in order:
            yield combos[index], YEARS[(offsets[index] + round_number) % len(YEARS)]
        round_number += 1


def _line(rng: random.Random, index: int, combo: _Combo, year: int) -> str:
    """One CSV line of `combo` for `year`, its numbers drawn from `rng`."""
    value = combo.mean + combo.trend * (year - 2016) + rng.gauss(0.0, 1.5)
    value = min(max(value, 1.0), 95.0)
    source = _SOURCE_2022 if year == 2022 else _SOURCE
    if rng.random() < FOOTNOTE_SHARE:
        shown = "" if rng.random() < FOOTNOTE_EMPTY_SHARE else f"{value:.1f}"
        numbers = shown + _FOOTNOTE_FIELDS
    else:
        half_width = 0.8 + 5.0 * rng.random()
        size = int((50 + 5000 * rng.random()) * combo.size_factor)
        low, high = max(value - half_width, 0.0), min(value + half_width, 100.0)
        numbers = f"{value:.1f},{value:.1f},,,{low:.1f},{high:.1f},{size}.0"
    return (
        f"{index},{year},{year},{combo.location},{source},{combo.question},{numbers},"
        f"{combo.stratum}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a stand-in file and print what was written. Returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.standin",
        description="Write a deterministic stand-in of the BRFSS nutrition/activity subset CSV.",
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="data rows to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--out", required=True, help="CSV file to write")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = generate(out, rows=args.rows, seed=args.seed)
    print(
        f"wrote {written} rows to {out} (seed {args.seed}; {len(LOCATIONS)} locations, "
        f"{len(QUESTIONS)} questions, {len(STRATA)} strata, years {YEARS[0]}-{YEARS[-1]})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
