"""The gateway's replies as strict JSON: what any JSON parser, a browser's first, accepts.

Python's `json` writes `NaN` and `Infinity` for non-finite floats, which are not JSON:
one such number in a reply (a stored job's parameters, an answer from an older worker)
makes `JSON.parse` throw, and a page that polls that reply goes blank. Every reply of
the gateway is encoded here, so no route can send one: non-finite numbers become `null`
(as `JSON.stringify` does), bytes and other values JSON has no word for become a short
description, and nesting deeper than `MAX_DEPTH` is cut (a peer may store parameters
nested a thousand levels, deeper than the encoder's recursion allows).
"""

from __future__ import annotations

import math
from typing import Any

from flask.json.provider import DefaultJSONProvider

MAX_DEPTH = 64
"""Deeper than any reply the gateway builds; what a peer nested deeper is cut here."""
TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels>"


class StrictJSON(DefaultJSONProvider):
    """Flask's JSON for every reply, never with NaN or Infinity; keys keep their order."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs["allow_nan"] = False  # a value `plain` missed is an error, never bad JSON
        kwargs.setdefault("default", self._described)
        try:  # the common reply, at the C encoder's speed (`plain` costs 4 times as much)
            return super().dumps(obj, **kwargs)
        except (ValueError, TypeError, RecursionError):  # NaN, a bytes key, deep nesting
            return super().dumps(plain(obj), **kwargs)

    def _described(self, value: Any) -> Any:
        """What Flask makes of a value JSON cannot hold (a dataclass, a date...), made
        plain in its turn; a description of anything else rather than a failed reply."""
        try:
            return plain(DefaultJSONProvider.default(value))
        except TypeError:
            return describe(value)


def plain(value: Any, depth: int = 0) -> Any:
    """`value` with non-finite floats as None, bytes described, keys as JSON keys, and
    containers nested deeper than `MAX_DEPTH` replaced by `TOO_DEEP`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {_key(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return describe(value)
    return value


def describe(value: Any) -> str:
    """A short text for a value that has no JSON form (never its content)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return f"<{type(value).__name__}>"


def _key(key: Any) -> str | float | int | None:
    """A key as JSON can write it: a non-finite float as its name ("inf"), others described."""
    if isinstance(key, float):
        return key if math.isfinite(key) else str(key)
    if key is None or isinstance(key, str | int):  # a bool is an int
        return key
    return describe(key)
