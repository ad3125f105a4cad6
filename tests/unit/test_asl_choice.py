"""Choice rules: every comparison operator (positive, negative, mistyped, and its Path form), the
type tests, And/Or/Not, Default, and what happens when nothing matches."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from test_asl_driver import run_to_end

from control_plane.workflows.asl import Machine, parse

T1 = "2016-03-14T01:59:00Z"
T1_OFFSET = "2016-03-14T03:59:00+02:00"  # the same instant
T1_MS = "2016-03-14T01:59:00.000Z"  # the same instant
T2 = "2016-03-14T01:59:00.5Z"

# (operator, operand, value of $.v, expected)
CASES: list[tuple[str, Any, Any, bool]] = [
    ("StringEquals", "abc", "abc", True),
    ("StringEquals", "abc", "abd", False),
    ("StringEquals", "1", 1, False),
    ("StringLessThan", "b", "a", True),
    ("StringLessThan", "b", "b", False),
    ("StringLessThan", "b", "c", False),
    ("StringLessThanEquals", "b", "b", True),
    ("StringLessThanEquals", "b", "c", False),
    ("StringGreaterThan", "b", "c", True),
    ("StringGreaterThan", "b", "b", False),
    ("StringGreaterThanEquals", "b", "b", True),
    ("StringGreaterThanEquals", "b", "a", False),
    ("StringGreaterThan", "B", "a", True),  # character by character, no case folding
    ("StringMatches", "foo*.log", "foo23.log", True),
    ("StringMatches", "*.log", "zebra.log", True),
    ("StringMatches", "foo*.*", "foobar.zebra", True),
    ("StringMatches", "foo*.log", "foo23.txt", False),
    ("StringMatches", "log", "catalog", False),  # the whole string must match
    ("StringMatches", "a\\*b", "a*b", True),
    ("StringMatches", "a\\*b", "axb", False),
    ("StringMatches", "a\\\\b", "a\\b", True),
    ("StringMatches", "a.c", "abc", False),  # no character but * is special
    ("StringMatches", "*", "", True),
    ("StringMatches", "*", 5, False),
    ("NumericEquals", 1, 1.0, True),
    ("NumericEquals", 1, 2, False),
    ("NumericEquals", 1, "1", False),
    ("NumericEquals", 1, True, False),
    ("NumericLessThan", 10, 9.5, True),
    ("NumericLessThan", 10, 10, False),
    ("NumericLessThanEquals", 10, 10, True),
    ("NumericLessThanEquals", 10, 11, False),
    ("NumericGreaterThan", 10, 11, True),
    ("NumericGreaterThan", 10, 10, False),
    ("NumericGreaterThanEquals", 10, 10, True),
    ("NumericGreaterThanEquals", -1.5, -2, False),
    ("BooleanEquals", True, True, True),
    ("BooleanEquals", False, True, False),
    ("BooleanEquals", True, 1, False),
    ("TimestampEquals", T1, T1_OFFSET, True),
    ("TimestampEquals", T1, T1_MS, True),
    ("TimestampEquals", T1, T2, False),
    ("TimestampEquals", T1, "not a time", False),
    ("TimestampEquals", T1, 1457920740, False),
    ("TimestampLessThan", T2, T1, True),
    ("TimestampLessThan", T1, T1, False),
    ("TimestampLessThanEquals", T1, T1_OFFSET, True),
    ("TimestampLessThanEquals", T1, T2, False),
    ("TimestampGreaterThan", T1, T2, True),
    ("TimestampGreaterThan", T2, T1, False),
    ("TimestampGreaterThanEquals", T1, T1, True),
    ("TimestampGreaterThanEquals", T2, T1, False),
    ("IsNull", True, None, True),
    ("IsNull", True, 0, False),
    ("IsNull", False, "x", True),
    ("IsNull", False, None, False),
    ("IsNumeric", True, 3.5, True),
    ("IsNumeric", True, "3", False),
    ("IsNumeric", True, True, False),
    ("IsNumeric", False, "3", True),
    ("IsString", True, "", True),
    ("IsString", True, None, False),
    ("IsString", False, 1, True),
    ("IsBoolean", True, False, True),
    ("IsBoolean", True, 0, False),
    ("IsBoolean", False, "true", True),
    ("IsTimestamp", True, T1, True),
    ("IsTimestamp", True, "2016-03-14", False),
    ("IsTimestamp", False, "yesterday", True),
    ("IsPresent", True, None, True),
    ("IsPresent", False, None, False),
]


@cache
def chooser(rule: str) -> Machine:
    """A machine answering "yes" when the rule (JSON text of its fields) matches, else "no"."""
    import json

    return parse(
        {
            "StartAt": "C",
            "States": {
                "C": {"Type": "Choice", "Choices": [{**json.loads(rule), "Next": "Yes"}], "Default": "No"},
                "Yes": {"Type": "Pass", "Result": "yes", "End": True},
                "No": {"Type": "Pass", "Result": "no", "End": True},
            },
        }
    )


def matches(rule: dict[str, Any], data: Any) -> bool:
    import json

    output = run_to_end(chooser(json.dumps(rule, sort_keys=True)), data).output
    assert output in ("yes", "no")
    return bool(output == "yes")


@pytest.mark.parametrize(
    ("op", "operand", "value", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_operators(op: str, operand: Any, value: Any, expected: bool) -> None:
    assert matches({"Variable": "$.v", op: operand}, {"v": value}) is expected


PATH_FORMS = [c for c in CASES if not c[0].startswith(("Is", "StringMatches"))]


@pytest.mark.parametrize(
    ("op", "operand", "value", "expected"),
    PATH_FORMS,
    ids=[f"{c[0]}Path-{i}" for i, c in enumerate(PATH_FORMS)],
)
def test_path_forms_compare_two_values_of_the_input(
    op: str, operand: Any, value: Any, expected: bool
) -> None:
    assert matches({"Variable": "$.v", f"{op}Path": "$.other"}, {"v": value, "other": operand}) is expected


def test_a_path_form_comparing_with_a_mistyped_value_is_false() -> None:
    assert matches({"Variable": "$.v", "TimestampEqualsPath": "$.other"}, {"v": T1, "other": "nope"}) is False
    assert matches({"Variable": "$.v", "NumericEqualsPath": "$.other"}, {"v": 1, "other": "1"}) is False


def test_path_forms_may_read_the_context_object() -> None:
    assert (
        matches({"Variable": "$.name", "StringEqualsPath": "$$.Execution.Name"}, {"name": "exec-1"}) is True
    )
    assert matches({"Variable": "$$.State.Name", "StringEquals": "C"}, {}) is True


def test_is_present_is_false_for_a_missing_field() -> None:
    assert matches({"Variable": "$.missing", "IsPresent": True}, {}) is False
    assert matches({"Variable": "$.missing", "IsPresent": False}, {}) is True
    assert matches({"Variable": "$.a.b", "IsPresent": True}, {"a": [1]}) is False


def test_any_other_operator_on_a_missing_field_is_a_runtime_error() -> None:
    machine = chooser('{"Variable": "$.missing", "StringEquals": "x"}')
    result = run_to_end(machine, {})
    assert (result.outcome.status, result.outcome.error) == ("FAILED", "States.Runtime")
    assert "'$.missing' selects nothing" in (result.outcome.cause or "")
    result = run_to_end(chooser('{"StringEqualsPath": "$.missing", "Variable": "$.v"}'), {"v": "x"})
    assert result.outcome.error == "States.Runtime"


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        (
            {"And": [{"Variable": "$.a", "IsNumeric": True}, {"Variable": "$.a", "NumericGreaterThan": 1}]},
            {"a": 2},
            True,
        ),
        (
            {"And": [{"Variable": "$.a", "IsNumeric": True}, {"Variable": "$.a", "NumericGreaterThan": 1}]},
            {"a": 1},
            False,
        ),
        # And stops at the first false rule: the missing field is never read
        (
            {"And": [{"Variable": "$.a", "IsPresent": True}, {"Variable": "$.a", "NumericGreaterThan": 1}]},
            {},
            False,
        ),
        (
            {"Or": [{"Variable": "$.a", "StringEquals": "x"}, {"Variable": "$.a", "StringEquals": "y"}]},
            {"a": "y"},
            True,
        ),
        (
            {"Or": [{"Variable": "$.a", "StringEquals": "x"}, {"Variable": "$.a", "StringEquals": "y"}]},
            {"a": "z"},
            False,
        ),
        ({"Not": {"Variable": "$.type", "StringEquals": "Private"}}, {"type": "Public"}, True),
        ({"Not": {"Not": {"Variable": "$.type", "StringEquals": "Private"}}}, {"type": "Private"}, True),
        (
            {
                "Or": [
                    {
                        "And": [
                            {"Variable": "$.a", "BooleanEquals": True},
                            {"Not": {"Variable": "$.b", "IsNull": True}},
                        ]
                    },
                    {"Variable": "$.c", "NumericEquals": 3},
                ]
            },
            {"a": True, "b": None, "c": 3},
            True,
        ),
        (
            {
                "Or": [
                    {
                        "And": [
                            {"Variable": "$.a", "BooleanEquals": True},
                            {"Not": {"Variable": "$.b", "IsNull": True}},
                        ]
                    },
                    {"Variable": "$.c", "NumericEquals": 3},
                ]
            },
            {"a": True, "b": None, "c": 4},
            False,
        ),
    ],
)
def test_boolean_rules(rule: dict[str, Any], data: Any, expected: bool) -> None:
    assert matches(rule, data) is expected


DISPATCH = {
    "StartAt": "DispatchEvent",
    "States": {
        "DispatchEvent": {
            "Type": "Choice",
            "Choices": [
                {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
                {
                    "And": [
                        {"Variable": "$.value", "IsPresent": True},
                        {"Variable": "$.value", "IsNumeric": True},
                        {"Variable": "$.value", "NumericGreaterThanEquals": 20},
                        {"Variable": "$.value", "NumericLessThan": 30},
                    ],
                    "Next": "ValueInTwenties",
                },
                {"Variable": "$.rating", "NumericGreaterThanPath": "$.auditThreshold", "Next": "StartAudit"},
            ],
            "Default": "RecordEvent",
        },
        "Public": {"Type": "Pass", "Result": "Public", "End": True},
        "ValueInTwenties": {"Type": "Pass", "Result": "ValueInTwenties", "End": True},
        "StartAudit": {"Type": "Pass", "Result": "StartAudit", "End": True},
        "RecordEvent": {"Type": "Pass", "Result": "RecordEvent", "End": True},
    },
}


@pytest.mark.parametrize(
    ("data", "chosen"),
    [
        ({"type": "Private", "value": 22}, "ValueInTwenties"),  # the spec's example
        ({"type": "Other"}, "Public"),
        ({"type": "Private", "value": 35, "rating": 9, "auditThreshold": 5}, "StartAudit"),
        ({"type": "Private", "value": "22", "rating": 1, "auditThreshold": 5}, "RecordEvent"),
    ],
)
def test_the_first_matching_rule_wins_else_default(data: Any, chosen: str) -> None:
    result = run_to_end(DISPATCH, data)
    assert result.output == chosen
    exited = result.events("ChoiceStateExited")
    assert exited[0].details["output"] == data


def test_no_match_and_no_default_fails_with_no_choice_matched() -> None:
    machine = {
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.a", "StringEquals": "x", "Next": "D"}]},
            "D": {"Type": "Succeed"},
        },
    }
    result = run_to_end(machine, {"a": "y"})
    assert (result.outcome.status, result.outcome.error) == ("FAILED", "States.NoChoiceMatched")


def test_choice_input_and_output_paths() -> None:
    machine = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "InputPath": "$.inner",
                "OutputPath": "$.keep",
                "Choices": [{"Variable": "$.flag", "BooleanEquals": True, "Next": "D"}],
            },
            "D": {"Type": "Succeed"},
        },
    }
    assert run_to_end(machine, {"inner": {"flag": True, "keep": [1]}}).output == [1]
