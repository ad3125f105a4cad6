"""What an event may be before it goes to a function: at most `MAX_PAYLOAD_BYTES` of JSON nested at
most `MAX_EVENT_DEPTH` deep (deeper JSON would exhaust the runtime's parser and kill a warm
instance). Refused at the gateway with 400 `InvalidEvent`, before any instance is involved.

The common event passes on one byte count (C speed, no parsing: the hot path never decodes a
payload); only an event with more brackets than the depth limit is parsed, on a thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from control_plane.core import InvalidEvent

MAX_EVENT_DEPTH = 256


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iteratively: no recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in item)
    return deepest


def _check_parsed(body: bytes, limit: int) -> None:
    try:
        value = json.loads(body)
    except RecursionError:
        raise InvalidEvent(f"the event nests deeper than {limit} levels") from None
    except ValueError as exc:
        raise InvalidEvent(f"the event is not valid JSON: {exc}") from None
    if _depth(value) > limit:
        raise InvalidEvent(f"the event nests deeper than {limit} levels")


async def check_event(body: bytes, limit: int = MAX_EVENT_DEPTH) -> None:
    """InvalidEvent if `body` nests deeper than `limit` (or, having to be parsed, is not JSON)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return  # cannot nest deeper than it has brackets
    await asyncio.to_thread(_check_parsed, body, limit)


async def check_stored_event(body: bytes, limit: int = MAX_EVENT_DEPTH) -> None:
    """InvalidEvent unless `body` is JSON nesting at most `limit` deep: an event that is kept to run
    later (an async call's) is parsed whole, so that a bad one is refused at the door rather than
    failing every attempt."""
    if len(body) > 65536:
        await asyncio.to_thread(_check_parsed, body, limit)
    else:
        _check_parsed(body, limit)
