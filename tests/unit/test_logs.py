"""Log hygiene: values a peer sent are escaped and cut short; warnings are throttled per
cause and peer, so one peer's flood cannot hide another's first report."""

from __future__ import annotations

import logging

import pytest

from protocol.logs import SHOWN_CHARS, Throttle, shown


def test_control_characters_are_escaped_and_long_values_cut() -> None:
    assert shown("plain text") == "plain text"
    assert shown("a\nINFO forged\x1b[2J\x00\x9b\\") == "a\\nINFO forged\\x1b[2J\\x00\\x9b\\"
    assert shown(b"w\n\xff") == "w\\n\\xff"
    cut = shown("\x00" * 1_000_000)
    assert cut.endswith("... (1000000 chars)") and len(cut) < SHOWN_CHARS + 30
    assert shown(b"x" * 5_000, limit=10) == "xxxxxxxxxx... (5000 bytes)"
    assert shown(12) == "12"


def test_each_peer_has_its_own_warning_budget(caplog: pytest.LogCaptureFixture) -> None:
    throttle = Throttle(logging.getLogger("lss.test"), burst=3, window_s=60.0)
    with caplog.at_level(logging.WARNING, logger="lss.test"):
        logged = [throttle.warning(("bad", b"flooder"), "bad from flooder") for _ in range(1000)]
        assert throttle.warning(("bad", b"other"), "bad from other")
        assert throttle.warning(("worse", b"flooder"), "worse from flooder")
    assert logged.count(True) == 3
    assert [r.getMessage() for r in caplog.records] == [
        *["bad from flooder"] * 3,
        "bad from other",
        "worse from flooder",
    ]
