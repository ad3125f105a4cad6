"""Input and output processing: InputPath -> Parameters -> (task) -> ResultSelector -> ResultPath ->
OutputPath, with the worked examples of the ASL specification and of AWS's guide, the context
object, and which error each failing field raises."""

from __future__ import annotations

from typing import Any

import pytest
from test_asl_driver import run_to_end

from control_plane.workflows.machine import ExecutionInfo


def task_machine(**fields: Any) -> dict[str, Any]:
    return {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "fn", "End": True, **fields}}}


def seen_by_task(fields: dict[str, Any], data: Any) -> Any:
    """What the task receives as input."""
    got: list[Any] = []
    run_to_end(task_machine(**fields), data, {"fn": lambda v: got.append(v)})
    return got[0]


def output_of(fields: dict[str, Any], data: Any, result: Any) -> Any:
    outcome = run_to_end(task_machine(**fields), data, {"fn": lambda v: result}).outcome
    assert outcome.status == "SUCCEEDED", outcome
    return outcome.output


def test_spec_inputpath_example() -> None:
    data = {
        "comment": "Example for InputPath.",
        "dataset1": {"val1": 1, "val2": 2, "val3": 3},
        "dataset2": {"val1": "a", "val2": "b", "val3": "c"},
    }
    assert seen_by_task({"InputPath": "$.dataset2"}, data) == {"val1": "a", "val2": "b", "val3": "c"}


def test_a_path_can_yield_a_selection_of_values() -> None:
    assert seen_by_task({"InputPath": "$.a[0:2]"}, {"a": [1, 2, 3, 4]}) == [1, 2]
    assert seen_by_task({"InputPath": "$.a[0,1]"}, {"a": [1, 2, 3, 4]}) == [1, 2]


def test_aws_parameters_example() -> None:
    data = {
        "comment": "Example for Parameters.",
        "product": {
            "details": {"color": "blue", "size": "small", "material": "cotton"},
            "availability": "in stock",
            "sku": "2317",
            "cost": "$23",
        },
    }
    parameters = {
        "comment": "Selecting what I care about.",
        "MyDetails": {
            "size.$": "$.product.details.size",
            "exists.$": "$.product.availability",
            "StaticValue": "foo",
        },
    }
    assert seen_by_task({"Parameters": parameters}, data) == {
        "comment": "Selecting what I care about.",
        "MyDetails": {"size": "small", "exists": "in stock", "StaticValue": "foo"},
    }


def test_spec_payload_template_example() -> None:
    parameters = {
        "flagged": True,
        "parts": {"first.$": "$.vals[0]", "last3.$": "$.vals[-3:]"},
        "weekday.$": "$$.Execution.Name",
        "formattedOutput.$": "States.Format('Today is {}', $$.Execution.Name)",
    }
    assert seen_by_task({"Parameters": parameters}, {"flagged": 7, "vals": [0, 10, 20, 30, 40, 50]}) == {
        "flagged": True,
        "parts": {"first": 0, "last3": [30, 40, 50]},
        "weekday": "exec-1",
        "formattedOutput": "Today is exec-1",
    }


def test_templates_apply_inside_arrays_and_leave_plain_dollar_strings_alone() -> None:
    parameters = {"list": [{"a.$": "$.x"}, "$.x", 3], "plain": "$.x"}
    assert seen_by_task({"Parameters": parameters}, {"x": 1}) == {
        "list": [{"a": 1}, "$.x", 3],
        "plain": "$.x",
    }


@pytest.mark.parametrize(
    ("result_path", "output"),
    [
        ("$.master.detail", {"master": {"detail": 6}}),
        ("$.master.result.sum", {"master": {"detail": [1, 2, 3], "result": {"sum": 6}}}),
        ("$.master.detail[0]", {"master": {"detail": [6, 2, 3]}}),
        ("$", 6),
        (None, {"master": {"detail": [1, 2, 3]}}),
    ],
)
def test_spec_resultpath_examples(result_path: str | None, output: Any) -> None:
    assert output_of({"ResultPath": result_path}, {"master": {"detail": [1, 2, 3]}}, 6) == output


def test_spec_resultpath_builds_intervening_objects() -> None:
    assert output_of({"ResultPath": "$.b.greeting"}, {"a": 1}, "Hi!") == {"a": 1, "b": {"greeting": "Hi!"}}


def test_spec_input_output_processing_example() -> None:
    data = {"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}}
    result = run_to_end(
        task_machine(InputPath="$.numbers", ResultPath="$.sum"), data, {"fn": lambda v: v["val1"] + v["val2"]}
    )
    assert result.output == {"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}, "sum": 7}


def test_resultpath_applies_to_the_raw_input_not_the_effective_input() -> None:
    got = output_of(
        {"InputPath": "$.inner", "Parameters": {"p.$": "$.v"}, "ResultPath": "$.r"},
        {"inner": {"v": 1}, "other": 2},
        "done",
    )
    assert got == {"inner": {"v": 1}, "other": 2, "r": "done"}


def test_aws_resultselector_example() -> None:
    lambda_result = {
        "ExecutedVersion": "$LATEST",
        "Payload": {"statusCode": "200", "body": "hello, world!"},
        "SdkHttpMetadata": {"HttpStatusCode": 200},
        "SdkResponseMetadata": {"RequestId": "88fba57b-adbe-467f-abf4-daca36fc9028"},
        "StatusCode": 200,
    }
    fields = {
        "ResultSelector": {
            "ClusterId.$": "$.Payload.body",
            "ResourceType.$": "$.SdkHttpMetadata.HttpStatusCode",
            "static": "x",
        },
        "ResultPath": "$.TaskResult",
    }
    assert output_of(fields, {"comment": "in"}, lambda_result) == {
        "comment": "in",
        "TaskResult": {"ClusterId": "hello, world!", "ResourceType": 200, "static": "x"},
    }


def test_outputpath_selects_from_the_combined_output() -> None:
    assert output_of({"ResultPath": "$.r", "OutputPath": "$.r.value"}, {"a": 1}, {"value": [1, 2]}) == [1, 2]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"InputPath": None}, {}),
        ({"OutputPath": None}, {}),
        ({"ResultPath": None}, {"a": 1}),
    ],
)
def test_null_paths(fields: dict[str, Any], expected: Any) -> None:
    if "InputPath" in fields:
        assert seen_by_task(fields, {"a": 1}) == expected
    else:
        assert output_of(fields, {"a": 1}, "result") == expected


def test_spec_pass_state_example() -> None:
    machine = {
        "StartAt": "ProvideTestData",
        "States": {
            "ProvideTestData": {
                "Type": "Pass",
                "Result": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
                "ResultPath": "$.coords",
                "End": True,
            }
        },
    }
    assert run_to_end(machine, {"georefOf": "Home"}).output == {
        "georefOf": "Home",
        "coords": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
    }


def test_pass_state_with_parameters_and_without_result() -> None:
    machine = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "InputPath": "$.in",
                "Parameters": {"copy.$": "$.x", "k": "v"},
                "ResultPath": "$.out",
                "OutputPath": "$.out",
                "End": True,
            }
        },
    }
    assert run_to_end(machine, {"in": {"x": 5}}).output == {"copy": 5, "k": "v"}
    passthrough = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    assert run_to_end(passthrough, [1, "two"]).output == [1, "two"]


def test_the_result_constant_cannot_be_mutated_through_an_output() -> None:
    from control_plane.workflows.asl import parse

    machine = parse({"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"k": [1]}, "End": True}}})
    first = run_to_end(machine).output
    first["k"].append(2)
    assert run_to_end(machine).output == {"k": [1]}


def test_succeed_state_applies_input_and_output_paths() -> None:
    machine = {"StartAt": "S", "States": {"S": {"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"}}}
    assert run_to_end(machine, {"a": {"b": 42}}).output == 42


def test_standalone_json_texts_are_valid_inputs_and_outputs() -> None:
    values: tuple[Any, ...] = ("a string", 3.5, True, None, [])
    for value in values:
        machine = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "fn", "End": True}}}
        assert run_to_end(machine, value, {"fn": lambda v: v}).output == value


def test_the_context_object() -> None:
    parameters = {
        "id.$": "$$.Execution.Id",
        "name.$": "$$.Execution.Name",
        "input.$": "$$.Execution.Input",
        "start.$": "$$.Execution.StartTime",
        "state.$": "$$.State.Name",
        "entered.$": "$$.State.EnteredTime",
        "retries.$": "$$.State.RetryCount",
        "machine.$": "$$.StateMachine.Name",
    }
    calls: list[Any] = []

    def flaky(v: Any) -> Any:
        calls.append(v)
        if len(calls) < 3:
            from test_asl_driver import TaskError

            raise TaskError("Flaky")
        return v

    machine = {
        "StartAt": "First",
        "States": {
            "First": {"Type": "Wait", "Seconds": 90, "Next": "T"},
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "Parameters": parameters,
                "End": True,
                "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1}],
            },
        },
    }
    execution = ExecutionInfo(id="arn:aws:states:x:1:execution:sm:e", name="e", state_machine_name="sm")
    result = run_to_end(machine, {"in": 1}, {"fn": flaky}, now=1457920740.25, execution=execution)
    assert result.output == {
        "id": "arn:aws:states:x:1:execution:sm:e",
        "name": "e",
        "input": {"in": 1},
        "start": "2016-03-14T01:59:00.250Z",
        "state": "T",
        "entered": "2016-03-14T02:00:30.250Z",
        "retries": 2,
        "machine": "sm",
    }
    assert [c["retries"] for c in calls] == [0, 1, 2]


def test_map_item_context_and_legacy_parameters() -> None:
    machine = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "Parameters": {"i.$": "$$.Map.Item.Index", "v.$": "$$.Map.Item.Value", "tag.$": "$.tag"},
                "Iterator": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "End": True,
            }
        },
    }
    assert run_to_end(machine, {"items": ["a", "b"], "tag": "t"}).output == [
        {"i": 0, "v": "a", "tag": "t"},
        {"i": 1, "v": "b", "tag": "t"},
    ]


def test_spec_map_example() -> None:
    data = {
        "ship-date": "2016-03-14T01:59:00Z",
        "detail": {
            "delivery-partner": "UQS",
            "shipped": [
                {"prod": "R31", "dest-code": 9511, "quantity": 1344},
                {"prod": "S39", "dest-code": 9511, "quantity": 40},
                {"prod": "R31", "dest-code": 9833, "quantity": 12},
                {"prod": "R40", "dest-code": 9860, "quantity": 887},
                {"prod": "R40", "dest-code": 9511, "quantity": 1220},
            ],
        },
    }
    machine = {
        "StartAt": "Validate-All",
        "States": {
            "Validate-All": {
                "Type": "Map",
                "InputPath": "$.detail",
                "ItemsPath": "$.shipped",
                "MaxConcurrency": 0,
                "ItemSelector": {"parcel.$": "$$.Map.Item.Value", "courier.$": "$.delivery-partner"},
                "ItemProcessor": {
                    "StartAt": "Validate",
                    "States": {
                        "Validate": {
                            "Type": "Task",
                            "Resource": "arn:aws:lambda:us-east-1:123456789012:function:ship-val",
                            "End": True,
                        }
                    },
                },
                "ResultPath": "$.detail.shipped",
                "End": True,
            }
        },
    }
    seen: list[Any] = []

    def ship_val(v: Any) -> Any:
        seen.append(v)
        return {"ok": v["parcel"]["prod"]}

    result = run_to_end(machine, data, {"arn:aws:lambda:us-east-1:123456789012:function:ship-val": ship_val})
    assert seen[0] == {"parcel": {"prod": "R31", "dest-code": 9511, "quantity": 1344}, "courier": "UQS"}
    assert result.output == {
        "ship-date": "2016-03-14T01:59:00Z",
        "detail": {
            "delivery-partner": "UQS",
            "shipped": [{"ok": p} for p in ["R31", "S39", "R31", "R40", "R40"]],
        },
    }


def test_spec_parallel_example() -> None:
    def branch(name: str) -> dict[str, Any]:
        return {
            "StartAt": name,
            "States": {name: {"Type": "Task", "Resource": f"arn:aws:states:::task:{name}", "End": True}},
        }

    machine = {
        "StartAt": "FunWithMath",
        "States": {
            "FunWithMath": {"Type": "Parallel", "Branches": [branch("Add"), branch("Subtract")], "End": True}
        },
    }
    handlers = {
        "arn:aws:states:::task:Add": lambda v: v[0] + v[1],
        "arn:aws:states:::task:Subtract": lambda v: v[0] - v[1],
    }
    assert run_to_end(machine, [3, 2], handlers).output == [5, 1]


# --- which error a failing field raises --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "data", "result", "error"),
    [
        ({"InputPath": "$.missing"}, {}, None, "States.Runtime"),
        ({"OutputPath": "$.missing"}, {}, {}, "States.Runtime"),
        ({"Parameters": {"x.$": "$.missing"}}, {}, None, "States.ParameterPathFailure"),
        ({"Parameters": {"x.$": "$$.Map.Item.Value"}}, {}, None, "States.ParameterPathFailure"),
        ({"ResultSelector": {"x.$": "$.missing"}}, {}, {}, "States.ParameterPathFailure"),
        ({"ResultPath": "$.x"}, "foo", 1, "States.ResultPathMatchFailure"),  # the spec's example
        ({"ResultPath": "$.a.b"}, {"a": 5}, 1, "States.ResultPathMatchFailure"),
        ({"ResultPath": "$.a[3]"}, {"a": [1]}, 1, "States.ResultPathMatchFailure"),
        ({"TimeoutSecondsPath": "$.t"}, {"t": "soon"}, None, "States.Runtime"),
        ({"TimeoutSecondsPath": "$.t"}, {}, None, "States.Runtime"),
    ],
)
def test_failing_fields_raise_their_errors(
    fields: dict[str, Any], data: Any, result: Any, error: str
) -> None:
    outcome = run_to_end(task_machine(**fields), data, {"fn": lambda v: result}).outcome
    assert (outcome.status, outcome.error) == ("FAILED", error)
    assert outcome.cause


def test_timeout_seconds_path_gives_the_task_its_timeout() -> None:
    result = run_to_end(task_machine(TimeoutSecondsPath="$.t"), {"t": 45}, {"fn": lambda v: 1})
    assert result.invocations[0].timeout_s == 45.0
    assert run_to_end(task_machine(TimeoutSeconds=7), {}, {"fn": lambda v: 1}).invocations[0].timeout_s == 7.0
    assert run_to_end(task_machine(), {}, {"fn": lambda v: 1}).invocations[0].timeout_s is None


@pytest.mark.parametrize(
    ("error", "catchable"),
    [
        ("States.ParameterPathFailure", True),
        ("States.ResultPathMatchFailure", True),
        ("States.Runtime", False),
    ],
)
def test_which_data_flow_errors_a_catcher_sees(error: str, catchable: bool) -> None:
    by_error: dict[str, dict[str, Any]] = {
        "ParameterPathFailure": {"Parameters": {"x.$": "$.missing"}},
        "ResultPathMatchFailure": {"ResultPath": "$.x.y"},
        "Runtime": {"InputPath": "$.missing"},
    }
    fields = by_error[error.split(".")[1]]
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "Next": "Done",
                **fields,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
            },
            "Caught": {"Type": "Pass", "End": True},
            "Done": {"Type": "Succeed"},
        },
    }
    outcome = run_to_end(machine, {"x": 1}, {"fn": lambda v: 1}).outcome
    if catchable:
        assert outcome.status == "SUCCEEDED" and outcome.output["Error"] == error
    else:
        assert (outcome.status, outcome.error) == ("FAILED", error)


def test_catch_resultpath_injects_the_error_output() -> None:
    from test_asl_driver import TaskError

    def fail(_: Any) -> Any:
        raise TaskError("java.lang.Exception", "it broke")

    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "End": True,
                "OutputPath": "$.never",
                "Catch": [
                    {
                        "ErrorEquals": ["java.lang.Exception"],
                        "ResultPath": "$.error-info",
                        "Next": "RecoveryState",
                    },
                    {"ErrorEquals": ["States.ALL"], "Next": "EndMachine"},
                ],
            },
            "RecoveryState": {"Type": "Pass", "End": True},
            "EndMachine": {"Type": "Pass", "End": True},
        },
    }
    result = run_to_end(machine, {"order": 7}, {"fn": fail})
    assert result.output == {"order": 7, "error-info": {"Error": "java.lang.Exception", "Cause": "it broke"}}
