"""Bounded msgpack decoding: a frame is refused as soon as it leaves what the protocol accepts.

msgpack's `unpackb` builds every object of a frame before its caller can look at one:
a 1 MiB frame of empty arrays is a million lists, about 300 ms of a broker's CPU (and
its garbage collector's), all for a message that is then refused. Every frame is read
here instead, with limits taken from the protocol's own caps (`Limits`, chosen by
protocol.messages for each kind of frame):

- msgpack's own `max_*_len` refuse a string, binary, array or map longer than the
  protocol has, from its header, before anything of it is built;
- a hook counts the containers (maps and lists) as msgpack completes them, and stops the
  decoding at the first one past the frame's budget: a body holds a handful;
- nesting deeper than `max_depth` is refused (a budget no larger than `max_depth` bounds
  it already; a larger one is checked once decoded);
- a BATCH (`frame_lists`) is checked item by item as it is decoded: the first thing that
  is not a list of two or three binary frames ends it.

`is_whole_map` checks a frame the receiver forwards without reading (a job's answer, at
the broker) in msgpack's C code, building no object at all. All raise `ProtocolError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.errors import ProtocolError

_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)
_LIMIT_PASSED = re.compile(r"(\d+) exceeds max_(str|bin|array|map|ext)_len\((\d+)\)")
_KINDS = {
    "str": "a string of {} bytes",
    "bin": "binary data of {} bytes",
    "array": "a list of {} items",
    "map": "a map of {} items",
    "ext": "a msgpack extension of {} bytes",
}
_MAP_HEADERS = frozenset({*range(0x80, 0x90), 0xDE, 0xDF})  # fixmap, map 16, map 32


class _Refused(ValueError):
    """Raised from a hook to stop msgpack at once (it passes the exception on): too much."""


class _Malformed(ValueError):
    """Raised from a hook to stop msgpack at once: not what the frame may hold."""


@dataclass(frozen=True)
class Limits:
    """What one frame may hold: the longest string and binary (bytes), the longest array
    and map (items), the most containers in all, and the deepest nesting."""

    max_str_bytes: int
    max_bin_bytes: int
    max_array_items: int
    max_map_items: int
    max_containers: int
    max_depth: int

    def unpack_options(self) -> dict[str, Any]:
        return {
            "raw": False,
            "strict_map_key": True,
            "max_str_len": self.max_str_bytes,
            "max_bin_len": self.max_bin_bytes,
            "max_array_len": self.max_array_items,
            "max_map_len": self.max_map_items,
            "max_ext_len": 0,
        }


def unpack_within(data: bytes, limits: Limits, options: dict[str, Any]) -> Any:
    """The value `data` holds, if it is within `limits` (`options`: theirs, made once)."""
    budget = limits.max_containers

    def count(container: Any) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0:
            raise _Refused(f"more than {limits.max_containers} maps and lists")
        return container

    try:
        value = msgpack.unpackb(data, object_hook=count, list_hook=count, **options)
    except _UNPACK_ERRORS as exc:
        raise _refusal(exc) from exc
    if limits.max_containers > limits.max_depth and not nesting_within(value, limits.max_depth):
        raise ProtocolError(f"maps and lists nested deeper than {limits.max_depth} levels")
    return value


def nesting_within(value: Any, levels: int) -> bool:
    """Whether `value` has at most `levels` levels of maps and lists (a scalar has none)."""
    children = value.values() if type(value) is dict else value if type(value) is list else None
    if children is None:
        return True
    if levels < 1:
        return False
    kinds = set(map(type, children))  # one pass in C: most containers hold only scalars
    if dict not in kinds and list not in kinds:
        return True
    return all(nesting_within(child, levels - 1) for child in children)


def frame_lists(data: bytes, max_lists: int, refused_prefix: bytes) -> list[list[bytes]]:
    """A BATCH body: a list of 1 to `max_lists` lists of 2 or 3 binary frames, no first
    frame starting with `refused_prefix`. Stops at the first list that is not one."""
    checked = 0  # lists of frames completed so far: all of them must be the outer list's
    outer: list[Any] | None = None

    def check(items: list[Any]) -> list[Any]:
        nonlocal checked, outer
        if outer is None and _is_frames(items):
            if items[0].startswith(refused_prefix):
                raise _Malformed("a BATCH must not contain a BATCH")
            checked += 1
        elif outer is None and len(items) == checked:  # whose items are all those lists
            outer = items
        else:
            raise _Malformed("a BATCH item must be a list of 2 or 3 binary frames")
        return items

    try:
        value = msgpack.unpackb(
            data, list_hook=check, max_array_len=max_lists, max_map_len=0, max_str_len=0,
            max_ext_len=0,
        )  # fmt: skip
    except _UNPACK_ERRORS as exc:
        raise _refusal(exc) from exc
    if value is not outer or not value:
        raise ProtocolError(f"BATCH body must be a list of 1 to {max_lists} messages")
    return value


def _is_frames(items: list[Any]) -> bool:
    return (
        1 < len(items) < 4
        and type(items[0]) is bytes
        and type(items[1]) is bytes
        and (len(items) == 2 or type(items[2]) is bytes)
    )


def is_whole_map(data: bytes) -> bool:
    """Whether `data` is exactly one well-formed msgpack map (nested at most as deep as
    msgpack's C decoder goes), checked without building any of it."""
    if not data or data[0] not in _MAP_HEADERS:
        return False
    unpacker = msgpack.Unpacker(max_buffer_size=len(data))
    unpacker.feed(data)
    try:
        unpacker.skip()
    except _UNPACK_ERRORS:
        return False
    return bool(unpacker.tell() == len(data))


def _refusal(exc: Exception) -> ProtocolError:
    """msgpack's refusal (or a hook's) as ours: `too_large` for something longer than a
    limit (msgpack says "9 exceeds max_str_len(8)") or past a budget, `bad_request` for a
    kind the frame may not hold at all (a limit of 0) and for anything not msgpack."""
    if isinstance(exc, _Refused):
        return ProtocolError(str(exc), "too_large")
    if isinstance(exc, _Malformed):
        return ProtocolError(str(exc))
    if isinstance(exc, msgpack.StackError):  # its message is empty
        return ProtocolError("nested deeper than msgpack decodes")
    limit = _LIMIT_PASSED.search(str(exc))
    if limit is None:
        return ProtocolError(f"not valid msgpack: {exc}")
    size, kind, most = limit.groups()
    what = _KINDS[kind].format(size)
    if most == "0":
        return ProtocolError(f"{what}, where this message may hold none")
    return ProtocolError(f"{what}, over {most}, the protocol's cap", "too_large")
