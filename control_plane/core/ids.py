"""Identifiers: random, prefixed, short enough to read in logs and long enough never to repeat."""

from __future__ import annotations

import uuid


def new_id(prefix: str = "", length: int = 12) -> str:
    """`prefix-<hex>` (or bare hex with no prefix) from a random UUID's first `length` digits."""
    digits = uuid.uuid4().hex[:length]
    return f"{prefix}-{digits}" if prefix else digits


def id_prefix(function: str) -> str:
    """What an instance id of `function` starts with: its key with `tenant/` as `tenant.` (ids go
    in URL paths and container names; no tenant or function name has a dot)."""
    return function.replace("/", ".")


def request_id() -> str:
    """A request id (a provision, an invocation): 32 hex digits."""
    return uuid.uuid4().hex
