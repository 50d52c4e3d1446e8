"""Request bodies as JSON, refused with a reason (never a crash) when malformed or too deep.

Python's `json` parser recurses once per nesting level, so a body of a million `[`
raises `RecursionError` deep inside it; the nesting is measured first, in one pass
that skips strings, and a body nested deeper than `MAX_DEPTH` is refused before parsing.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
"""Deeper than any statistic's parameters need (they are one flat object)."""


class InvalidBody(ValueError):
    """A body that is not acceptable JSON; `str()` is the reason for the HTTP 400."""


def parse_json(raw: bytes) -> Any:
    """`raw` decoded as UTF-8 JSON; `InvalidBody` with a reason otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBody(f"malformed JSON body: not UTF-8 ({exc.reason})") from exc
    depth = nesting(text)
    if depth > MAX_DEPTH:
        raise InvalidBody(f"JSON body nested {depth}+ levels deep; the limit is {MAX_DEPTH}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidBody(f"malformed JSON body: {exc}") from exc


def nesting(text: str) -> int:
    """The deepest `[`/`{` nesting of JSON `text`, counting up to `MAX_DEPTH + 1` at most."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        elif char in "]}":
            depth -= 1
    return deepest
