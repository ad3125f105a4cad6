"""Paths and Reference Paths (the spec's examples), and ResultPath writes."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.workflows.jsonpath import PathNotFound, compile_path, put

DATA = {
    "foo": 123,
    "bar": ["a", "b", "c"],
    "car": {"cdr": True},
    "store.book": 1,
    "store": {"book": 2},
    "foo@bar": {"baz[[": {"?pretty": 3}},
    "a b": 4,
    "nil": None,
    "ledgers": [[0, {"x": 1}], {"branch": [{"pending": {"count": 9}}]}],
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$", DATA),
        ("$.foo", 123),
        ("$.bar", ["a", "b", "c"]),
        ("$.car.cdr", True),
        ("$.store.book", 2),
        ("$.store\\.book", 1),
        ("$.\\stor\\e.boo\\k", 2),
        ("$.foo\\@bar.baz\\[\\[.\\?pretty", 3),
        ("$['store']['book']", 2),
        ('$["store.book"]', 1),
        ("$['a b']", 4),
        ("$.bar[2]", "c"),
        ("$.ledgers[0][1].x", 1),
        ("$.ledgers[1].branch[0].pending.count", 9),
        ("$.nil", None),
    ],
)
def test_reference_paths_select_one_value(path: str, value: Any) -> None:
    compiled = compile_path(path, reference=True)
    assert compiled.is_reference
    assert compiled.find(DATA) == value


@pytest.mark.parametrize("path", ["$.nope", "$.bar[3]", "$.foo.x", "$.bar.x", "$.car[0]", "$.nil.x"])
def test_a_reference_path_that_finds_nothing_raises(path: str) -> None:
    with pytest.raises(PathNotFound):
        compile_path(path).find(DATA)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$.bar[0,1]", ["a", "b"]),
        ("$.bar[-2:]", ["b", "c"]),
        ("$.bar[0:2]", ["a", "b"]),
        ("$.bar[*]", ["a", "b", "c"]),
        ("$.nope[*]", []),
        ("$..count", [9]),
        ("$.ledgers[1].branch[?(@.pending.count > 5)].pending.count", [9]),
    ],
)
def test_other_paths_give_the_list_of_their_matches(path: str, value: Any) -> None:
    compiled = compile_path(path)
    assert not compiled.is_reference
    assert compiled.find(DATA) == value


@pytest.mark.parametrize("path", ["$.bar[*]", "$.bar[0,1]", "$..x", "$.a[?(@.b)]", "$.bar[-1]", "$.a b"])
def test_reference_paths_refuse_jsonpath_operators(path: str) -> None:
    with pytest.raises(ValueError, match="is not a Reference Path"):
        compile_path(path, reference=True)


@pytest.mark.parametrize("text", ["", "foo", "$.", "$.a.", "$.a[", "$.a[?", 3, None])
def test_malformed_paths(text: Any) -> None:
    with pytest.raises(ValueError):
        compile_path(text)


def test_context_paths() -> None:
    path = compile_path("$$.Execution.Id")
    assert path.context and path.find({"Execution": {"Id": "x"}}) == "x"
    with pytest.raises(ValueError, match=r"context object \(\$\$\) is not allowed"):
        compile_path("$$.x", context=False)


def test_put_overwrites_and_creates_objects_without_mutating() -> None:
    raw = {"master": {"detail": [1, 2, 3]}}
    assert put(raw, ("master", "detail"), 6) == {"master": {"detail": 6}}
    assert put(raw, ("master", "result", "sum"), 6) == {"master": {"detail": [1, 2, 3], "result": {"sum": 6}}}
    assert put(raw, ("master", "detail", 1), "x") == {"master": {"detail": [1, "x", 3]}}
    assert put(raw, (), 7) == 7
    assert raw == {"master": {"detail": [1, 2, 3]}}


@pytest.mark.parametrize(
    ("data", "steps"),
    [
        ("foo", ("x",)),
        ({"a": 5}, ("a", "b")),
        ({"a": [1]}, ("a", 3)),
        ({"a": {}}, ("a", 0)),
        ({}, ("new", 0)),
    ],
)
def test_put_refuses_writes_that_cannot_apply(data: Any, steps: tuple[str | int, ...]) -> None:
    with pytest.raises(PathNotFound):
        put(data, steps, 1)
