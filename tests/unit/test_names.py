"""protocol.names, questions' ids and the locations' USPS codes: the rules every path shares."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from protocol.locations import LOCATIONS, USPS_CODES
from protocol.names import Vocabulary, question_vocabulary, state_vocabulary
from protocol.questions import QUESTION_IDS, QUESTIONS, question_list
from workers.standin import LOCATIONS as STANDIN_LOCATIONS

OBESITY = "Percent of adults aged 18 years and older who have obesity"


def test_every_question_has_one_short_lowercase_id() -> None:
    assert sorted(QUESTION_IDS.values()) == sorted(QUESTIONS)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", short) for short in QUESTION_IDS)
    assert QUESTION_IDS["obesity"] == OBESITY


def test_the_question_list_is_the_agreed_shape() -> None:
    listed = question_list()
    assert len(listed) == 9
    assert [entry["question"] for entry in listed] == list(QUESTIONS)
    assert all(set(entry) == {"id", "question"} for entry in listed)
    assert {"id": "obesity", "question": OBESITY} in listed


def test_the_55_locations_and_the_standins_are_one_table() -> None:
    assert len(USPS_CODES) == len(set(USPS_CODES.values())) == 55
    assert USPS_CODES["US"] == "National" and USPS_CODES["OH"] == "Ohio"
    assert [place[:2] for place in STANDIN_LOCATIONS] == list(LOCATIONS)


def test_a_name_in_the_data_wins_over_an_alias() -> None:
    # A data set whose location is literally called "In" keeps it; "in" is not Indiana then.
    names = state_vocabulary(["In", "Indiana"])
    assert names.resolve("In") == "In"
    assert names.resolve("IN") == "In"


def test_aliases_of_names_absent_from_the_data_do_not_resolve() -> None:
    names = state_vocabulary(["Ohio"])
    assert names.resolve("oh") == "Ohio"
    assert names.resolve("TX") is None
    assert question_vocabulary([OBESITY]).resolve("muscle") is None


def test_the_country_and_the_capital_answer_to_their_everyday_names() -> None:
    """Typed as people write them, "Washington DC" was offered 'Washington' (the state) as
    its closest match, and "United States" nothing at all."""
    names = state_vocabulary(["National", "District of Columbia", "Washington"])
    for typed in ("United States", "usa", "U.S.", "United States of America"):
        assert names.resolve(typed) == "National", typed
    for typed in ("Washington DC", "washington, d.c.", "Washington D.C.", "D.C."):
        assert names.resolve(typed) == "District of Columbia", typed
    assert names.resolve("washington") == "Washington"


def test_close_matches_come_from_the_allowed_names_only() -> None:
    names = Vocabulary(["Ohio", "Iowa", "Idaho"], {}, offer_aliases=False)
    assert names.closest("ohoi") == ["Ohio"]
    assert names.closest("ohoi", among=["Iowa"]) == []
    assert names.hint("zzzz") == ""


def test_the_broker_can_import_the_names_without_pandas() -> None:
    code = "import sys, protocol.names; print('pandas' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, check=True)
    assert out.stdout.strip() == b"False"
