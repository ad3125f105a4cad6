"""Rules indexed by the source their pattern names, so that an event is checked against the rules
that could match it, not against every rule of its tenant (pure: no I/O).

Most rules name the event's `source` exactly (`"source": ["app.orders"]`): such a rule can only match
an event of one of those sources, so it is filed under each. A rule whose pattern says nothing of
`source`, or says it with an operator (`prefix`, `anything-but`, ...), is checked against every
event. An event's `source` is always one non-empty string (the bus refuses others), so the index
decides nothing the pattern would not: `matching` is exactly the rules whose pattern matches, in the
order they were given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from control_plane.eventbus.patterns import Pattern

T = TypeVar("T")

__all__ = ["RuleIndex", "exact_sources"]


def exact_sources(pattern: Pattern) -> frozenset[str] | None:
    """The sources an event must have for `pattern` to match it, when the pattern names them as
    plain values; None when it may match an event of any source."""
    parsed = json.loads(pattern.text)
    values = parsed.get("source") if isinstance(parsed, dict) else None
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        return frozenset(values)
    return None


class RuleIndex(Generic[T]):
    """`(pattern, rule)` pairs, by source."""

    def __init__(self, rules: Sequence[tuple[Pattern, T]]) -> None:
        self._by_source: dict[str, list[tuple[int, Pattern, T]]] = {}
        self._any: list[tuple[int, Pattern, T]] = []
        for order, (pattern, rule) in enumerate(rules):
            sources = exact_sources(pattern)
            if sources is None:
                self._any.append((order, pattern, rule))
            else:
                for source in sources:
                    self._by_source.setdefault(source, []).append((order, pattern, rule))
        self.size = len(rules)

    def matching(self, event: Mapping[str, Any]) -> list[T]:
        """The rules whose pattern matches `event`, in their given order."""
        source = event.get("source")
        named = self._by_source.get(source, []) if isinstance(source, str) else []
        if named and self._any:
            candidates = sorted(named + self._any, key=lambda c: c[0])
        else:
            candidates = named or self._any
        return [rule for _, pattern, rule in candidates if pattern.matches(event)]
