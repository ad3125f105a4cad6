"""A second opinion: the same task-free executions run by moto's Step Functions interpreter (a port
of LocalStack's, in-process, no Docker). Only cases where that interpreter is known to follow AWS
are compared; where it deviates (it has no ``null`` intrinsic argument, refuses a negative
ArrayRange step, treats ``true`` as ``1`` in ArrayUnique, unwraps a single match of ``$.o.*``)
this interpreter follows the spec and is tested on its own elsewhere.

moto runs executions on threads; the test waits for them by joining them (no sleeping)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from control_plane.workflows.asl import parse
from control_plane.workflows.machine import ExecutionInfo, start

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

YES_NO = {
    "Y": {"Type": "Pass", "Result": {"r": "yes"}, "End": True},
    "N": {"Type": "Pass", "Result": {"r": "no"}, "End": True},
}

CASES: list[tuple[str, dict[str, Any], Any]] = [
    (
        "input-parameters-resultpath",
        {
            "StartAt": "P",
            "States": {
                "P": {
                    "Type": "Pass",
                    "InputPath": "$.numbers",
                    "ResultPath": "$.sum",
                    "End": True,
                    "Parameters": {
                        "s.$": "States.MathAdd($.val1, $.val2)",
                        "arr.$": "States.Array($.val1, 'x')",
                    },
                }
            },
        },
        {"title": "t", "numbers": {"val1": 3, "val2": 4}},
    ),
    (
        "intrinsics",
        {
            "StartAt": "P",
            "States": {
                "P": {
                    "Type": "Pass",
                    "End": True,
                    "Parameters": {
                        "a.$": "States.ArrayPartition($.xs, 2)",
                        "b.$": "States.StringSplit($.s, ',;')",
                        "c.$": "States.JsonMerge($.o1, $.o2, false)",
                        "d.$": "States.Hash($.s, 'SHA-256')",
                        "e.$": "States.Base64Encode($.s)",
                        "f.$": "States.ArrayUnique($.dup)",
                        "g.$": "States.ArrayContains($.xs, 3)",
                        "h.$": "States.ArrayRange(1, 10, 3)",
                        "i.$": "States.ArrayGetItem($.xs, 1)",
                        "j.$": "States.ArrayLength($.xs)",
                        "k.$": "States.JsonToString($.o1)",
                        "l.$": "States.StringToJson($.js)",
                        "m.$": "States.Format('{} and {}', $.s, true)",
                    },
                }
            },
        },
        {
            "xs": [1, 2, 3, 4, 5],
            "s": "a,b;c",
            "o1": {"a": 1, "b": {"x": 1}},
            "o2": {"b": 2},
            "dup": [1, 1, "a", "a"],
            "js": '{"q": [1]}',
        },
    ),
    (
        "choice-timestamps-and-matches",
        {
            "StartAt": "C",
            "States": {
                "C": {
                    "Type": "Choice",
                    "Default": "N",
                    "Choices": [
                        {
                            "Next": "Y",
                            "And": [
                                {"Variable": "$.t", "TimestampLessThan": "2020-01-01T00:00:00Z"},
                                {"Variable": "$.s", "StringMatches": "log*.txt"},
                            ],
                        }
                    ],
                },
                **YES_NO,
            },
        },
        {"t": "2019-12-31T23:00:00-02:00", "s": "log1.txt"},
    ),
    (
        "choice-or-not-path",
        {
            "StartAt": "C",
            "States": {
                "C": {
                    "Type": "Choice",
                    "Default": "N",
                    "Choices": [
                        {
                            "Next": "Y",
                            "Or": [
                                {"Variable": "$.n", "NumericGreaterThanEqualsPath": "$.m"},
                                {"Not": {"Variable": "$.b", "BooleanEquals": True}},
                            ],
                        }
                    ],
                },
                **YES_NO,
            },
        },
        {"n": 1, "m": 2, "b": True},
    ),
    (
        "map-item-selector-result-selector",
        {
            "StartAt": "M",
            "States": {
                "M": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "ResultPath": "$.out",
                    "End": True,
                    "ItemSelector": {"i.$": "$$.Map.Item.Index", "v.$": "$$.Map.Item.Value", "c.$": "$.c"},
                    "ItemProcessor": {"StartAt": "X", "States": {"X": {"Type": "Pass", "End": True}}},
                    "ResultSelector": {"n.$": "States.ArrayLength($)", "all.$": "$"},
                }
            },
        },
        {"items": ["a", "b"], "c": 1},
    ),
    (
        "parallel-output-path",
        {
            "StartAt": "F",
            "States": {
                "F": {
                    "Type": "Parallel",
                    "OutputPath": "$[1]",
                    "End": True,
                    "Branches": [
                        {"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": 1, "End": True}}},
                        {"StartAt": "B", "States": {"B": {"Type": "Pass", "OutputPath": "$.k", "End": True}}},
                    ],
                }
            },
        },
        {"k": {"z": 1}},
    ),
    (
        "fail-paths",
        {
            "StartAt": "F",
            "States": {"F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "States.Format('c {}', $.n)"}},
        },
        {"e": "MyErr", "n": 3},
    ),
    (
        "resultpath-builds-objects-and-null-paths",
        {
            "StartAt": "P",
            "States": {
                "P": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.a.b.c", "Next": "Q"},
                "Q": {
                    "Type": "Pass",
                    "InputPath": "$.a",
                    "ResultPath": None,
                    "OutputPath": "$.a",
                    "End": True,
                    "Parameters": {"k.$": "$.b.c.x", "l": [1, {"m.$": "$.b"}]},
                },
            },
        },
        {"a": {"z": 0}},
    ),
    (
        "null-input-and-output-paths",
        {
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "InputPath": None, "OutputPath": None, "End": True}},
        },
        {"a": 1},
    ),
    (
        "slices-and-wildcards",
        {
            "StartAt": "P",
            "States": {
                "P": {"Type": "Pass", "End": True, "Parameters": {"a.$": "$.xs[0:2]", "b.$": "$.xs[*]"}}
            },
        },
        {"xs": [1, 2, 3]},
    ),
]


@pytest.fixture
def sfn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    with moto.mock_aws():
        yield boto3.client(
            "stepfunctions", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        )


def run_in_moto(sfn: Any, name: str, definition: dict[str, Any], data: Any) -> tuple[Any, ...]:
    arn = sfn.create_state_machine(
        name=name, definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]
    before = set(threading.enumerate())
    execution = sfn.start_execution(stateMachineArn=arn, name="e1", input=json.dumps(data))["executionArn"]
    for _ in range(100):  # join every thread the execution started, until none is left running
        started = [
            t for t in threading.enumerate() if t not in before and t.ident is not None and t.is_alive()
        ]
        if not started:
            break
        for thread in started:
            thread.join(timeout=30)
    described = sfn.describe_execution(executionArn=execution)
    output = json.loads(described["output"]) if described.get("output") else None
    return described["status"], output, described.get("error"), described.get("cause")


@pytest.mark.parametrize(("name", "definition", "data"), CASES, ids=[c[0] for c in CASES])
def test_same_outcome_as_moto(sfn: Any, name: str, definition: dict[str, Any], data: Any) -> None:
    ours = start(parse(definition), data, execution=ExecutionInfo(id="x", name="e1"), now=0.0).done
    assert ours is not None
    assert (ours.status, ours.output, ours.error, ours.cause) == run_in_moto(sfn, name, definition, data)
