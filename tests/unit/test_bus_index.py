"""The rule index decides nothing the patterns would not: for any rules and any event, `matching` is
exactly the rules whose pattern matches, in their order (a property test over a pool of patterns
that name the source exactly, with operators, inside `$or`, or not at all)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.eventbus import RuleIndex, compile_pattern, exact_sources

POOL: list[dict[str, Any]] = [
    {"source": ["a"]},
    {"source": ["a", "b"], "detail-type": ["x"]},
    {"source": ["b"], "detail": {"n": [{"numeric": [">", 5]}]}},
    {"source": [{"prefix": "a"}]},
    {"source": [{"anything-but": ["a"]}]},
    {"source": ["c", {"prefix": "b"}]},
    {"detail-type": ["x"]},
    {"$or": [{"source": ["a"]}, {"detail": {"n": [1]}}]},
    {"source": ["a"], "$or": [{"detail-type": ["x"]}, {"detail": {"n": [{"exists": True}]}}]},
    {"source": [{"equals-ignore-case": "A"}]},
    {"detail": {"source": ["a"]}},
]
COMPILED = [compile_pattern(p) for p in POOL]

events = st.fixed_dictionaries({
    "source": st.sampled_from(["a", "b", "c", "ab", "A", "z"]),
    "detail-type": st.sampled_from(["x", "y"]),
    "detail": st.fixed_dictionaries({}, optional={"n": st.integers(0, 10),
                                                  "source": st.sampled_from(["a", "b"])}),
})


@settings(max_examples=400, deadline=None)
@given(picks=st.lists(st.integers(0, len(POOL) - 1), max_size=20), event=events)
def test_matching_is_exactly_the_matching_rules_in_order(picks: list[int], event: dict[str, Any]) -> None:
    rules = [(COMPILED[i], n) for n, i in enumerate(picks)]
    index = RuleIndex(rules)
    assert index.matching(event) == [n for pattern, n in rules if pattern.matches(event)]


def test_only_plain_sources_are_indexed() -> None:
    assert [exact_sources(p) for p in COMPILED] == [
        frozenset({"a"}), frozenset({"a", "b"}), frozenset({"b"}), None, None, None, None, None,
        frozenset({"a"}), None, None]
