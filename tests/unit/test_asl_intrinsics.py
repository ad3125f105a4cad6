"""Intrinsic functions: the spec's Appendix B examples, AWS's narrower semantics, failures, and
determinism of the random ones (through the interpreter, so the seed comes from the execution)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from test_asl_driver import EXECUTION, run_to_end

from control_plane.workflows.asl import InvalidDefinition, parse
from control_plane.workflows.intrinsics import IntrinsicError, evaluate, parse_intrinsic
from control_plane.workflows.jsonpath import Path
from control_plane.workflows.machine import ExecutionInfo


def call(text: str, data: Any = None, seed: bytes = b"seed") -> Any:
    return evaluate(parse_intrinsic(text), lambda p: p.find(data), lambda: seed)


def through_pass(expression: str, data: Any) -> Any:
    machine = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Parameters": {"out.$": expression}, "End": True}},
    }
    return run_to_end(machine, data).output["out"]


SPEC_EXAMPLES: list[tuple[str, Any, Any]] = [
    (
        "States.Format('Your name is {}, we are in the year {}', $.name, 2020)",
        {"name": "Foo", "zebra": "stripe"},
        "Your name is Foo, we are in the year 2020",
    ),
    (
        "States.Format('Welcome to {} {}\\'s playlist.', $.firstName, $.lastName)",
        {"firstName": "Ann", "lastName": "Lee"},
        "Welcome to Ann Lee's playlist.",
    ),
    ("States.StringToJson($.someString)", {"someString": '{"number": 20}'}, {"number": 20}),
    (
        "States.JsonToString($.someJson)",
        {"someJson": {"name": "Foo", "year": 2020}},
        '{"name":"Foo","year":2020}',
    ),
    (
        "States.Array('Foo', 2020, $.someJson, null)",
        {"someJson": {"random": "abcdefg"}},
        ["Foo", 2020, {"random": "abcdefg"}, None],
    ),
    (
        "States.ArrayPartition($.inputArray,4)",
        {"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9]},
        [[1, 2, 3, 4], [5, 6, 7, 8], [9]],
    ),
    (
        "States.ArrayContains($.inputArray, $.lookingFor)",
        {"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9], "lookingFor": 5},
        True,
    ),
    ("States.ArrayRange(1, 9, 2)", {}, [1, 3, 5, 7, 9]),
    (
        "States.ArrayGetItem($.inputArray, $.index)",
        {"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9], "index": 5},
        6,
    ),
    ("States.ArrayLength($.inputArray)", {"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9]}, 9),
    ("States.ArrayUnique($.inputArray)", {"inputArray": [1, 2, 3, 3, 3, 3, 3, 3, 4]}, [1, 2, 3, 4]),
    ("States.Base64Encode($.input)", {"input": "Data to encode"}, "RGF0YSB0byBlbmNvZGU="),
    ("States.Base64Decode($.base64)", {"base64": "RGF0YSB0byBlbmNvZGU="}, "Data to encode"),
    (
        "States.Hash($.Data, $.Algorithm)",
        {"Data": "input data", "Algorithm": "SHA-1"},
        hashlib.sha1(b"input data").hexdigest(),
    ),
    (
        "States.JsonMerge($.json1, $.json2, false)",
        {"json1": {"a": {"a1": 1, "a2": 2}, "b": 2}, "json2": {"a": {"a3": 1, "a4": 2}, "c": 3}},
        {"a": {"a3": 1, "a4": 2}, "b": 2, "c": 3},
    ),
    ("States.MathAdd($.value1, $.step)", {"value1": 111, "step": -1}, 110),
    (
        "States.StringSplit($.inputString, $.splitter)",
        {"inputString": "1,2,3,4,5", "splitter": ","},
        ["1", "2", "3", "4", "5"],
    ),
    (
        "States.StringSplit($.inputString, $.splitter)",
        {"inputString": "This.is+a,test=string", "splitter": ".+,="},
        ["This", "is", "a", "test", "string"],
    ),
]


@pytest.mark.parametrize(
    ("expression", "data", "expected"), SPEC_EXAMPLES, ids=[e[0][:40] for e in SPEC_EXAMPLES]
)
def test_spec_examples(expression: str, data: Any, expected: Any) -> None:
    assert call(expression, data) == expected
    assert through_pass(expression, data) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("States.Format('{} + {} = {}', 1, 2.5, true)", "1 + 2.5 = true"),
        ("States.Format('null is {}', null)", "null is null"),
        ("States.Format('literal \\{} and {}', 'x')", "literal {} and x"),
        ("States.Format($.template, 'x')", "[x]"),
        ("States.Format('no placeholders')", "no placeholders"),
        ("States.Array()", []),
        ("States.Array(States.ArrayLength(States.Array(1, 2, 3)), 'b')", [3, "b"]),
        ("States.ArrayRange(9, 1, -3)", [9, 6, 3]),
        ("States.ArrayRange(1, 1, 5)", [1]),
        ("States.ArrayRange(5, 1, 1)", []),
        ("States.ArrayContains(States.Array(1, 'a', true), 'a')", True),
        ("States.ArrayContains(States.Array(1, 2), true)", False),
        ("States.ArrayUnique(States.Array(1, true, 1, 'a', 'a', null, null))", [1, True, "a", None]),
        ("States.ArrayPartition(States.Array(1, 2), 5)", [[1, 2]]),
        ("States.Hash('abc', 'MD5')", hashlib.md5(b"abc").hexdigest()),
        ("States.Hash('abc', 'SHA-256')", hashlib.sha256(b"abc").hexdigest()),
        ("States.Hash('abc', 'SHA-384')", hashlib.sha384(b"abc").hexdigest()),
        ("States.Hash('abc', 'SHA-512')", hashlib.sha512(b"abc").hexdigest()),
        ("States.StringSplit('a,,b', ',')", ["a", "b"]),
        ("States.MathAdd(-5, 5)", 0),
        ("States.StringToJson('[1, {\"a\": null}]')", [1, {"a": None}]),
        ("States.JsonToString('x')", '"x"'),
        ("States.Base64Encode('héllo')", "aMOpbGxv"),
        ("States.Array($.bar[0,1])", [["a", "b"]]),
        ("States.Array($$.Execution.Name)", ["exec-1"]),
    ],
)
def test_more_cases(expression: str, expected: Any) -> None:
    data = {"template": "[{}]", "bar": ["a", "b", "c"]}
    if "$$" not in expression:
        assert call(expression, data) == expected
    assert through_pass(expression, data) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("States.Format('{} {}', 1)", "2 placeholder(s) for 1 argument(s)"),
        ("States.Format('{}', $.obj)", "cannot format a dict"),
        ("States.Format(1)", "the template must be a string"),
        ("States.StringToJson('{nope')", "not JSON"),
        ("States.StringToJson(1)", "must be a string"),
        ("States.ArrayPartition($.obj, 2)", "must be an array"),
        ("States.ArrayPartition(States.Array(1), 0)", "positive integer"),
        ("States.ArrayRange(1, 2, 0)", "must not be zero"),
        ("States.ArrayRange(1, 2000, 1)", "at most 1000"),
        ("States.ArrayRange(1.5, 3, 1)", "must be integers"),
        ("States.ArrayGetItem(States.Array(1), 1)", "out of range"),
        ("States.ArrayGetItem(States.Array(1), -1)", "non-negative integer"),
        ("States.ArrayLength('abc')", "must be an array"),
        ("States.Base64Decode('%%%')", "not base64"),
        ("States.Hash('abc', 'SHA-3')", "unknown algorithm"),
        ("States.JsonMerge($.obj, $.obj, true)", "only the shallow mode"),
        ("States.JsonMerge($.obj, 1, false)", "both values must be objects"),
        ("States.MathAdd(1, 1.5)", "must be integers"),
        ("States.MathRandom(5, 1)", "start must not exceed end"),
        ("States.StringSplit(1, ',')", "must be strings"),
        ("States.Array($.missing)", "argument '$.missing'"),
    ],
)
def test_failures_are_intrinsic_errors(expression: str, message: str) -> None:
    with pytest.raises(IntrinsicError, match=re.escape(message)):
        call(expression, {"obj": {"a": 1}})


def test_size_limits() -> None:
    with pytest.raises(IntrinsicError, match="longer than 10000"):
        call("States.Base64Encode($.s)", {"s": "x" * 10_001})
    with pytest.raises(IntrinsicError, match="longer than 10000"):
        call("States.Hash($.s, 'MD5')", {"s": "x" * 10_001})
    assert call("States.Base64Encode($.s)", {"s": "x" * 10_000})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("States.Nope()", "unknown intrinsic function 'States.Nope'"),
        ("States.UUID(1)", "States.UUID takes 0 argument(s), got 1"),
        ("States.MathRandom(1)", "States.MathRandom takes 2-3 argument(s), got 1"),
        ("States.Format()", "States.Format takes 1+ argument(s), got 0"),
        ("States.Array(1 2)", "expected ',' or ')'"),
        ("States.Array('abc)", "unterminated string literal"),
        ("States.Array(1)x", "unexpected 'x'"),
        ("States.Array(1.2.3)", "bad number"),
        ("States.Array($.a[)", "is not a valid JSONPath"),
        ("States.Array", "expected '(' after States.Array"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_intrinsic(text)


def test_arguments_may_hold_commas_and_parentheses_inside_paths_and_strings() -> None:
    parsed = parse_intrinsic("States.Array($['a,b'], 'x, (y)', $.c[0,1])")
    assert [type(a).__name__ for a in parsed.args] == ["Path", "Literal", "Path"]
    first = parsed.args[0]
    assert isinstance(first, Path) and first.text == "$['a,b']"
    assert call("States.Array($['a,b'], 'x, (y)', $.c[0,1])", {"a,b": 1, "c": [2, 3]}) == [
        1,
        "x, (y)",
        [2, 3],
    ]


def test_math_random_is_within_bounds_and_seeded() -> None:
    values = {call("States.MathRandom(1, 3)", seed=bytes([i])) for i in range(64)}
    assert values == {1, 2, 3}
    assert call("States.MathRandom(1, 999, 42)", seed=b"a") == call(
        "States.MathRandom(1, 999, 42)", seed=b"b"
    )
    assert call("States.MathRandom(7, 7)") == 7


def test_uuid_is_a_version_4_uuid() -> None:
    value = call("States.UUID()")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", value)


RANDOM = {
    "StartAt": "P",
    "States": {
        "P": {
            "Type": "Pass",
            "End": True,
            "Parameters": {
                "a.$": "States.UUID()",
                "b.$": "States.UUID()",
                "r.$": "States.MathRandom(0, 1000000)",
                "nested": {"c.$": "States.UUID()"},
            },
        }
    },
}


def test_random_intrinsics_replay_identically_and_differ_by_site() -> None:
    first = run_to_end(RANDOM).output
    again = run_to_end(RANDOM).output
    assert first == again
    assert len({first["a"], first["b"], first["nested"]["c"]}) == 3
    other = run_to_end(RANDOM, execution=ExecutionInfo(id="arn:exec:2", name="exec-2")).output
    assert other["a"] != first["a"]
    assert EXECUTION.id == "arn:exec:1"


def test_a_failing_intrinsic_in_a_task_is_caught_as_intrinsic_failure() -> None:
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "Parameters": {"x.$": "States.ArrayLength($.s)"},
                "Retry": [{"ErrorEquals": ["States.ALL"]}],
                "Catch": [{"ErrorEquals": ["States.IntrinsicFailure"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    result = run_to_end(machine, {"s": "not an array"}, {"r": lambda v: v})
    assert result.outcome.status == "SUCCEEDED"
    assert result.output["Error"] == "States.IntrinsicFailure"
    assert "must be an array" in result.output["Cause"]
    assert result.invocations == [] and result.events("RetryScheduled") == []  # no retry of data-flow faults


def test_a_failing_intrinsic_in_a_pass_fails_the_execution() -> None:
    machine = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Parameters": {"x.$": "States.MathAdd(1, 'a')"}, "End": True}},
    }
    result = run_to_end(machine)
    assert (result.outcome.status, result.outcome.error) == ("FAILED", "States.IntrinsicFailure")


def test_intrinsic_syntax_is_checked_at_parse_time() -> None:
    with pytest.raises(InvalidDefinition, match=r"^States\.P\.Parameters\.x\.\$: bad intrinsic function"):
        parse(
            {
                "StartAt": "P",
                "States": {"P": {"Type": "Pass", "Parameters": {"x.$": "States.Array("}, "End": True}},
            }
        )
