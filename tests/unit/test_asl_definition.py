"""Parsing and validating ASL definitions: what is accepted, and each rejection's message (which
names the faulty place first, like AWS's diagnostics)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from control_plane.workflows.asl import (
    MAX_DEFINITION_BYTES,
    MAX_NESTING,
    MAX_STATES,
    ChoiceState,
    InvalidDefinition,
    MapState,
    TaskState,
    WaitState,
    parse,
    parse_timestamp,
)


def one(state: Any, **extra: Any) -> dict[str, Any]:
    """A machine whose only state (named S) is ``state``; ``extra`` adds more states."""
    return {"StartAt": "S", "States": {"S": state, **extra}}


END = {"Type": "Succeed"}

VALID: dict[str, Any] = {
    "Comment": "all state types",
    "StartAt": "Check",
    "TimeoutSeconds": 3600,
    "Version": "1.0",
    "QueryLanguage": "JSONPath",
    "States": {
        "Check": {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.n", "IsPresent": True},
                        {"Not": {"Variable": "$.n", "IsNull": True}},
                    ],
                    "Next": "Work",
                },
            ],
            "Default": "Give up",
        },
        "Work": {
            "Type": "Task",
            "Resource": "arn:aws:lambda:us-east-1:1:function:work",
            "TimeoutSeconds": 30,
            "InputPath": "$",
            "Parameters": {"n.$": "$.n", "when.$": "$$.State.EnteredTime"},
            "ResultSelector": {"v.$": "$.value"},
            "ResultPath": "$.work",
            "OutputPath": "$",
            "Retry": [
                {
                    "ErrorEquals": ["Flaky"],
                    "IntervalSeconds": 2,
                    "MaxAttempts": 5,
                    "BackoffRate": 1.5,
                    "MaxDelaySeconds": 10,
                    "JitterStrategy": "FULL",
                },
                {"ErrorEquals": ["States.ALL"]},
            ],
            "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.error", "Next": "Give up"}],
            "Next": "Pause",
        },
        "Pause": {"Type": "Wait", "SecondsPath": "$.n", "Next": "Fan"},
        "Fan": {
            "Type": "Parallel",
            "Next": "Each",
            "Branches": [{"StartAt": "B1", "States": {"B1": {"Type": "Pass", "Result": 1, "End": True}}}],
        },
        "Each": {
            "Type": "Map",
            "ItemsPath": "$[0]",
            "MaxConcurrency": 2,
            "ItemSelector": {"i.$": "$$.Map.Item.Index"},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Item",
                "States": {"Item": {"Type": "Pass", "End": True}},
            },
            "ToleratedFailureCount": 1,
            "End": True,
        },
        "Give up": {"Type": "Fail", "ErrorPath": "$.error.Error", "Cause": "gave up"},
    },
}


def test_a_definition_with_every_state_type_parses() -> None:
    machine = parse(VALID)
    assert machine.timeout_s == 3600
    assert machine.root.start_at == "Check"
    assert set(machine.states) == {"Check", "Work", "Pause", "Fan", "B1", "Each", "Item", "Give up"}
    work = machine.states["Work"]
    assert isinstance(work, TaskState) and work.timeout_s == 30 and len(work.retry) == 2
    assert (
        work.retry[0].jitter == "FULL" and work.retry[1].interval_s == 1.0 and work.retry[1].max_attempts == 3
    )
    each = machine.states["Each"]
    assert isinstance(each, MapState) and each.max_concurrency == 2 and each.tolerated_count == 1
    assert isinstance(machine.states["Check"], ChoiceState)


def test_json_text_and_yaml_text_give_the_same_machine() -> None:
    as_json = parse(json.dumps(VALID))
    yaml_text = """
StartAt: Wait a bit
States:
  Wait a bit:
    Type: Wait
    Timestamp: 2016-03-14T01:59:00Z   # unquoted: must stay a string, not a YAML timestamp
    Next: Done
  Done:
    Type: Succeed
"""
    as_yaml = parse(yaml_text)
    assert set(as_json.states) == set(VALID["States"]) | {"B1", "Item"}
    wait = as_yaml.states["Wait a bit"]
    assert isinstance(wait, WaitState) and wait.timestamp == 1457920740.0


def test_parse_does_not_keep_a_reference_to_mutable_input() -> None:
    spec = copy.deepcopy(VALID)
    machine = parse(spec)
    spec["States"]["Work"]["Resource"] = "changed"
    spec["States"]["B1"] = "changed"
    spec["States"]["Fan"]["Branches"][0]["States"]["B1"]["Result"] = "changed"
    assert isinstance(machine.states["Work"], TaskState) and machine.states["Work"].resource.endswith(":work")
    assert machine.definition == VALID


TASK = {"Type": "Task", "Resource": "r", "End": True}

INVALID: list[tuple[Any, str]] = [
    # structure
    ("[1, 2]", "definition: must be an object with StartAt and States"),
    ("{", "definition: neither JSON nor YAML"),
    ({"States": {"S": END}}, "StartAt: required, and must be a state name"),
    ({"StartAt": "S"}, "States: required, and must be a non-empty object"),
    ({"StartAt": "S", "States": {}}, "States: required, and must be a non-empty object"),
    ({"StartAt": "Nope", "States": {"S": END}}, "StartAt: no state named 'Nope'"),
    ({**one(END), "Extra": 1}, "definition: field 'Extra' is not supported in a state machine"),
    ({**one(END), "QueryLanguage": "JSONata"}, "definition.QueryLanguage: 'JSONata' is not supported"),
    ({**one(END), "TimeoutSeconds": 0}, "definition.TimeoutSeconds: must be a positive integer"),
    # transitions
    (
        {"StartAt": "Check", "States": {"Check": {"Type": "Pass", "Next": "Nope"}, "Done": END}},
        "States.Check.Next: no state named 'Nope'",
    ),
    (one({"Type": "Pass"}), 'States.S: needs Next or "End": true'),
    (one({"Type": "Pass", "End": True, "Next": "S"}), 'States.S: has both Next and "End": true'),
    (one({"Type": "Pass", "End": "yes"}), "States.S.End: must be a boolean"),
    (one({"Type": "Succeed", "Next": "S"}), "States.S: field 'Next' is not supported in a Succeed state"),
    (one({"Type": "Pass", "Next": "T"}, T={"Type": "Pass", "Next": "S"}), "States: no terminal state"),
    (one(END, Orphan=END), "States.Orphan: state is not reachable from StartAt"),
    (
        {
            "StartAt": "S",
            "States": {
                "S": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.a", "IsNull": True, "Next": "T"}],
                    "Default": "Nope",
                },
                "T": END,
            },
        },
        "States.S.Default: no state named 'Nope'",
    ),
    # state fields
    (one({"Type": "Teleport"}), "States.S.Type: unknown state type 'Teleport'"),
    (one({**TASK, "Colour": "red"}), "States.S: field 'Colour' is not supported in a Task state"),
    (
        one({"Type": "Pass", "Resource": "r", "End": True}),
        "field 'Resource' is not supported in a Pass state",
    ),
    (one({"Type": "Pass", "Retry": [], "End": True}), "field 'Retry' is not supported in a Pass state"),
    (
        one({"Type": "Wait", "TimeoutSeconds": 1, "Seconds": 1, "End": True}),
        "field 'TimeoutSeconds' is not supported in a Wait state",
    ),
    (one({"Type": "Fail", "InputPath": "$"}), "field 'InputPath' is not supported in a Fail state"),
    (one({"Type": "Task", "End": True}), "States.S.Resource: required, a non-empty string"),
    (one({**TASK, "TimeoutSeconds": 0}), "States.S.TimeoutSeconds: must be a positive integer"),
    (one({**TASK, "TimeoutSeconds": 1.5}), "States.S.TimeoutSeconds: must be a positive integer"),
    (
        one({**TASK, "TimeoutSeconds": 5, "TimeoutSecondsPath": "$.t"}),
        "States.S: TimeoutSeconds and TimeoutSecondsPath are mutually exclusive",
    ),
    (
        one({"Type": "Fail", "Error": "E", "ErrorPath": "$.e"}),
        "States.S: Error and ErrorPath are mutually exclusive",
    ),
    (one("not an object"), "States.S: a state must be an object"),
    ("x" * 81, "a state name must have 1 to 80 characters"),
    # not implemented, rejected by name
    (one({**TASK, "HeartbeatSeconds": 5}), "States.S.HeartbeatSeconds: task heartbeats are not supported"),
    (one({"Type": "Pass", "Assign": {"x": 1}, "End": True}), "States.S.Assign: state machine variables"),
    (one({"Type": "Pass", "Output": {}, "End": True}), "States.S.Output: JSONata fields are not supported"),
    (one({**TASK, "Credentials": {}}), "States.S.Credentials: per-task credentials are not supported"),
    (one({"Type": "Pass", "QueryLanguage": "JSONata", "End": True}), "States.S.QueryLanguage: 'JSONata'"),
    # paths and templates
    (one({"Type": "Pass", "InputPath": "nope", "End": True}), "States.S.InputPath: 'nope' is not a path"),
    (
        one({"Type": "Pass", "InputPath": "$.a[", "End": True}),
        "States.S.InputPath: '$.a[' is not a valid JSONPath",
    ),
    (
        one({"Type": "Pass", "ResultPath": "$.a[*]", "End": True}),
        "States.S.ResultPath: '$.a[*]' is not a Reference Path",
    ),
    (
        one({"Type": "Pass", "ResultPath": "$$.Execution", "End": True}),
        "States.S.ResultPath: '$$.Execution': a path into the context object ($$) is not allowed here",
    ),
    (
        one({"Type": "Pass", "Parameters": [1], "End": True}),
        "States.S.Parameters: a payload template must be an object",
    ),
    (
        one({"Type": "Pass", "Parameters": {"a.$": 3}, "End": True}),
        "States.S.Parameters.a.$: the value of a '.$' field must be a path or an intrinsic function",
    ),
    (
        one({"Type": "Pass", "Parameters": {"a.$": "hello"}, "End": True}),
        "States.S.Parameters.a.$: 'hello' is neither a path nor an intrinsic function",
    ),
    (
        one({"Type": "Pass", "Parameters": {"deep": {"a": 1, "a.$": "$.x"}}, "End": True}),
        "States.S.Parameters.deep: duplicate field 'a' once '.$' is stripped",
    ),
    (
        one({"Type": "Pass", "Parameters": {"a.$": "States.Nope(1)"}, "End": True}),
        "States.S.Parameters.a.$: bad intrinsic function: unknown intrinsic function 'States.Nope'",
    ),
    (
        one({"Type": "Pass", "Parameters": {"a.$": "States.ArrayLength(1, 2)"}, "End": True}),
        "bad intrinsic function: States.ArrayLength takes 1 argument(s), got 2",
    ),
    (
        one({"Type": "Pass", "Parameters": {"a.$": "States.Format('x {}', $.a"}, "End": True}),
        "bad intrinsic function: unterminated call to States.Format",
    ),
    (
        one({"Type": "Pass", "Parameters": {"a.$": "States.Format('\\q')"}, "End": True}),
        "bad intrinsic function: open escape",
    ),
    # retry and catch
    (
        one({**TASK, "Retry": [{"ErrorEquals": ["States.ALL", "X"]}]}),
        "States.S.Retry[0].ErrorEquals: States.ALL must appear alone",
    ),
    (
        one({**TASK, "Retry": [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}]}),
        "States.S.Retry[0].ErrorEquals: States.ALL must be in the last retrier",
    ),
    (
        one(
            {
                **TASK,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "S"}, {"ErrorEquals": ["X"], "Next": "S"}],
            }
        ),
        "States.S.Catch[0].ErrorEquals: States.ALL must be in the last catcher",
    ),
    (
        one({**TASK, "Retry": [{"ErrorEquals": []}]}),
        "States.S.Retry[0].ErrorEquals: required, a non-empty array",
    ),
    (
        one({**TASK, "Retry": [{"ErrorEquals": ["X"], "IntervalSeconds": 0}]}),
        "States.S.Retry[0].IntervalSeconds: must be a positive integer",
    ),
    (
        one({**TASK, "Retry": [{"ErrorEquals": ["X"], "MaxAttempts": -1}]}),
        "States.S.Retry[0].MaxAttempts: must be a non-negative integer",
    ),
    (
        one({**TASK, "Retry": [{"ErrorEquals": ["X"], "BackoffRate": 0.5}]}),
        "States.S.Retry[0].BackoffRate: must be a number ≥ 1.0",
    ),
    (
        one({**TASK, "Retry": [{"ErrorEquals": ["X"], "JitterStrategy": "SOME"}]}),
        "States.S.Retry[0].JitterStrategy: must be FULL or NONE",
    ),
    (
        one({**TASK, "Retry": [{"ErrorEquals": ["X"], "Delay": 1}]}),
        "States.S.Retry[0]: field 'Delay' is not supported in a retrier",
    ),
    (one({**TASK, "Catch": [{"ErrorEquals": ["X"]}]}), "States.S.Catch[0]: needs Next"),
    (
        one({**TASK, "Catch": [{"ErrorEquals": ["X"], "Next": "Nope"}]}),
        "States.S.Catch[0].Next: no state named 'Nope'",
    ),
    # choice rules
    (one({"Type": "Choice", "Choices": []}), "States.S.Choices: required, a non-empty array of choice rules"),
    (
        one({"Type": "Choice", "Choices": [{"Variable": "$.a", "StringEquals": "x"}]}),
        "States.S.Choices[0]: a top-level choice rule needs Next",
    ),
    (
        one(
            {
                "Type": "Choice",
                "Choices": [{"Variable": "$.a", "StringEquals": "x", "IsNull": True, "Next": "T"}],
            },
            T=END,
        ),
        "States.S.Choices[0]: a choice rule needs exactly one comparison operator, found IsNull, "
        "StringEquals",
    ),
    (
        one({"Type": "Choice", "Choices": [{"Variable": "$.a", "Next": "T"}]}, T=END),
        "States.S.Choices[0]: a choice rule needs exactly one comparison operator, found none",
    ),
    (
        one({"Type": "Choice", "Choices": [{"StringEquals": "x", "Next": "T"}]}, T=END),
        "States.S.Choices[0]: a choice rule needs Variable and one comparison operator",
    ),
    (
        one({"Type": "Choice", "Choices": [{"Variable": "$.a", "StringSimilar": "x", "Next": "T"}]}, T=END),
        "States.S.Choices[0]: unknown comparison operator 'StringSimilar'",
    ),
    (
        one(
            {
                "Type": "Choice",
                "Choices": [{"Not": {"Variable": "$.a", "IsNull": True, "Next": "T"}, "Next": "T"}],
            },
            T=END,
        ),
        "States.S.Choices[0].Not.Next: only top-level choice rules have Next",
    ),
    (
        one({"Type": "Choice", "Choices": [{"And": [], "Next": "T"}]}, T=END),
        "States.S.Choices[0].And: must be a non-empty array of choice rules",
    ),
    (
        one(
            {
                "Type": "Choice",
                "Choices": [{"And": [{"Variable": "$.a", "IsNull": True}], "Or": [], "Next": "T"}],
            },
            T=END,
        ),
        "States.S.Choices[0]: a boolean rule has exactly one of And/Or/Not and nothing else",
    ),
    (
        one({"Type": "Choice", "Choices": [{"Variable": "$.a", "NumericEquals": "1", "Next": "T"}]}, T=END),
        "States.S.Choices[0].NumericEquals: must be a number, got '1'",
    ),
    (
        one({"Type": "Choice", "Choices": [{"Variable": "$.a", "BooleanEquals": 1, "Next": "T"}]}, T=END),
        "States.S.Choices[0].BooleanEquals: must be a boolean",
    ),
    (
        one(
            {
                "Type": "Choice",
                "Choices": [{"Variable": "$.a", "TimestampEquals": "2020-01-01", "Next": "T"}],
            },
            T=END,
        ),
        "States.S.Choices[0].TimestampEquals: must be an RFC 3339 timestamp",
    ),
    (
        one(
            {"Type": "Choice", "Choices": [{"Variable": "$.a", "StringMatches": "a\\b", "Next": "T"}]}, T=END
        ),
        "States.S.Choices[0].StringMatches: open escape",
    ),
    (
        one(
            {"Type": "Choice", "Choices": [{"Variable": "$.a", "StringEqualsPath": "nope", "Next": "T"}]},
            T=END,
        ),
        "States.S.Choices[0].StringEqualsPath: 'nope' is not a path",
    ),
    (
        one({"Type": "Choice", "Choices": [{"Variable": "$.a[*]", "IsNull": True, "Next": "T"}]}, T=END),
        "States.S.Choices[0].Variable: '$.a[*]' is not a Reference Path",
    ),
    (
        one(
            {"Type": "Choice", "Choices": [{"Variable": "$.a", "IsNull": True, "Next": "T"}], "End": True},
            T=END,
        ),
        "States.S: field 'End' is not supported in a Choice state",
    ),
    # wait
    (one({"Type": "Wait", "End": True}), "States.S: needs exactly one of Seconds, SecondsPath, Timestamp"),
    (
        one({"Type": "Wait", "Seconds": 1, "TimestampPath": "$.t", "End": True}),
        "States.S: needs exactly one of",
    ),
    (one({"Type": "Wait", "Seconds": -1, "End": True}), "States.S.Seconds: must be a non-negative integer"),
    (
        one({"Type": "Wait", "Timestamp": "2016-03-14 01:59:00", "End": True}),
        "States.S.Timestamp: must be an RFC 3339 timestamp",
    ),
    (
        one({"Type": "Wait", "SecondsPath": "$.a..b", "End": True}),
        "States.S.SecondsPath: '$.a..b' is not a Reference",
    ),
    # parallel and map
    (
        one({"Type": "Parallel", "Branches": [], "End": True}),
        "States.S.Branches: required, a non-empty array",
    ),
    (
        one(
            {
                "Type": "Parallel",
                "End": True,
                "Branches": [{"StartAt": "X", "States": {"X": {"Type": "Pass", "Next": "S"}}}],
            }
        ),
        "States.S.Branches[0].States.X.Next: no state named 'S'",
    ),
    (
        one({"Type": "Parallel", "End": True, "Branches": [{"StartAt": "S", "States": {"S": END}}]}),
        "States.S.Branches[0].States.S: duplicate state name (also at States.S)",
    ),
    (
        one(
            {"Type": "Parallel", "End": True, "Branches": [{"StartAt": "X", "States": {"X": END, "Y": END}}]}
        ),
        "States.S.Branches[0].States.Y: state is not reachable from StartAt",
    ),
    (
        one(
            {"Type": "Parallel", "End": True, "Branches": [{"StartAt": "X", "States": {"X": END}, "Foo": 1}]}
        ),
        "States.S.Branches[0]: field 'Foo' is not supported in a branch",
    ),
    (one({"Type": "Map", "End": True}), "States.S: needs ItemProcessor (or the older Iterator)"),
    (
        one(
            {
                "Type": "Map",
                "End": True,
                "Iterator": {"StartAt": "X", "States": {"X": END}},
                "ItemProcessor": {"StartAt": "Y", "States": {"Y": END}},
            }
        ),
        "States.S: ItemProcessor and Iterator are mutually exclusive",
    ),
    (
        one(
            {
                "Type": "Map",
                "End": True,
                "ItemSelector": {},
                "Parameters": {},
                "ItemProcessor": {"StartAt": "X", "States": {"X": END}},
            }
        ),
        "States.S: ItemSelector and Parameters are mutually exclusive",
    ),
    (
        one(
            {
                "Type": "Map",
                "End": True,
                "MaxConcurrency": -1,
                "ItemProcessor": {"StartAt": "X", "States": {"X": END}},
            }
        ),
        "States.S.MaxConcurrency: must be a non-negative integer",
    ),
    (
        one(
            {
                "Type": "Map",
                "End": True,
                "ToleratedFailurePercentage": 101,
                "ItemProcessor": {"StartAt": "X", "States": {"X": END}},
            }
        ),
        "States.S.ToleratedFailurePercentage: must be a number from 0 to 100",
    ),
    (
        one(
            {
                "Type": "Map",
                "End": True,
                "ItemReader": {},
                "ItemProcessor": {"StartAt": "X", "States": {"X": END}},
            }
        ),
        "States.S.ItemReader: distributed Map (ItemReader) is not supported",
    ),
    (
        one(
            {
                "Type": "Map",
                "End": True,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                    "StartAt": "X",
                    "States": {"X": END},
                },
            }
        ),
        "States.S.ItemProcessor.ProcessorConfig.Mode: 'DISTRIBUTED' is not supported (only INLINE)",
    ),
    (
        one(
            {
                "Type": "Map",
                "End": True,
                "ItemsPath": "$.a[0:2]",
                "ItemProcessor": {"StartAt": "X", "States": {"X": END}},
            }
        ),
        "States.S.ItemsPath: '$.a[0:2]' is not a Reference Path",
    ),
]


@pytest.mark.parametrize(("definition", "message"), INVALID, ids=[m[:60] for _, m in INVALID])
def test_invalid_definitions_are_rejected_with_their_place(definition: Any, message: str) -> None:
    if definition == "x" * 81:
        definition = {"StartAt": "x" * 81, "States": {"x" * 81: END}}
    with pytest.raises(InvalidDefinition) as e:
        parse(definition)
    assert message in str(e.value)


def test_the_message_starts_with_the_place() -> None:
    with pytest.raises(InvalidDefinition, match=r"^States\.Check\.Next: no state named 'Nope'$"):
        parse({"StartAt": "Check", "States": {"Check": {"Type": "Pass", "Next": "Nope"}, "Done": END}})


def test_invalid_definition_is_a_value_error() -> None:
    assert issubclass(InvalidDefinition, ValueError)


def test_a_state_name_of_80_characters_is_fine() -> None:
    name = "n" * 80
    assert name in parse({"StartAt": name, "States": {name: END}}).states


def test_too_many_states() -> None:
    states: dict[str, Any] = {f"s{i}": {"Type": "Pass", "Next": f"s{i + 1}"} for i in range(MAX_STATES)}
    states[f"s{MAX_STATES}"] = END
    with pytest.raises(InvalidDefinition, match=f"more than {MAX_STATES} states"):
        parse({"StartAt": "s0", "States": states})


def test_a_long_chain_within_the_bound_parses() -> None:
    states: dict[str, Any] = {f"s{i}": {"Type": "Pass", "Next": f"s{i + 1}"} for i in range(2_000)}
    states["s2000"] = END
    assert len(parse({"StartAt": "s0", "States": states}).states) == 2_001


def test_a_definition_larger_than_the_bound_is_rejected() -> None:
    big = one({"Type": "Pass", "Result": "x" * MAX_DEFINITION_BYTES, "End": True})
    with pytest.raises(InvalidDefinition, match="definition: larger than"):
        parse(big)
    with pytest.raises(InvalidDefinition, match="definition: larger than"):
        parse(json.dumps(big))


def test_nesting_deeper_than_the_bound_is_rejected() -> None:
    def nest(depth: int) -> dict[str, Any]:
        inner: dict[str, Any] = {"StartAt": f"L{depth}", "States": {f"L{depth}": END}}
        for d in range(depth - 1, -1, -1):
            inner = {
                "StartAt": f"L{d}",
                "States": {f"L{d}": {"Type": "Parallel", "Branches": [inner], "End": True}},
            }
        return inner

    parse(nest(MAX_NESTING))
    with pytest.raises(InvalidDefinition, match=f"nested deeper than {MAX_NESTING} levels"):
        parse(nest(MAX_NESTING + 1))


def test_non_json_values_in_a_mapping_are_rejected() -> None:
    with pytest.raises(InvalidDefinition, match=r"^States\.S\.Result: nan is not a JSON number$"):
        parse(one({"Type": "Pass", "Result": float("nan"), "End": True}))
    with pytest.raises(InvalidDefinition, match=r"^States\.S\.Result: set is not a JSON value$"):
        parse(one({"Type": "Pass", "Result": {1, 2}, "End": True}))
    with pytest.raises(InvalidDefinition, match=r"^States\.S\.Result: key 1 is not a string$"):
        parse("StartAt: S\nStates:\n  S:\n    Type: Pass\n    End: true\n    Result: {1: a}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-03-14T01:59:00Z", (1457920740, 0)),
        ("2016-03-14T01:59:00.5Z", (1457920740, 500_000_000)),
        ("2016-03-14T01:59:00.123456789123Z", (1457920740, 123_456_789)),
        ("2016-03-14T03:59:00+02:00", (1457920740, 0)),
        ("2016-03-13T23:59:00-02:00", (1457920740, 0)),
        ("1970-01-01T00:00:00Z", (0, 0)),
        ("2016-03-14t01:59:00Z", None),
        ("2016-03-14T01:59:00", None),
        ("2016-03-14T01:59:00z", None),
        ("2016-02-30T01:59:00Z", None),
        ("2016-03-14T25:00:00Z", None),
        ("2016-03-14T01:59:00+24:00", None),
        ("2016-03-14", None),
        (1457920740, None),
    ],
)
def test_timestamps_follow_the_asl_profile_of_rfc3339(text: Any, expected: tuple[int, int] | None) -> None:
    assert parse_timestamp(text) == expected
