"""Running executions: Retry schedules, Catch routing, error matching, Parallel and Map (ordering,
failure, abandonment, MaxConcurrency, tolerance), Wait timers, and the run-time bounds."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_asl_driver import EXECUTION, TaskError, handler_failing, reload, run_to_end

from control_plane.workflows.asl import parse
from control_plane.workflows.machine import (
    MAX_HISTORY_EVENTS,
    MAX_PAYLOAD_BYTES,
    ExecutionInfo,
    InvokeTask,
    StartTimer,
    TaskFailed,
    TaskSucceeded,
    TimerFired,
    advance,
    start,
)


def always(error: str, cause: str = "boom") -> Any:
    def handle(_: Any) -> Any:
        raise TaskError(error, cause)

    return handle


def retrying(retry: list[dict[str, Any]], catch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "Retry": retry,
                "End": True,
                **({"Catch": catch} if catch else {}),
            },
            "Recover": {"Type": "Pass", "End": True},
        }
        if catch
        else {"T": {"Type": "Task", "Resource": "fn", "Retry": retry, "End": True}},
    }


def delays(result: Any) -> list[float]:
    return [e.details["delay_s"] for e in result.events("RetryScheduled")]


# --- Retry ---------------------------------------------------------------------------------------


def test_default_retrier_waits_1_2_4_then_fails() -> None:
    result = run_to_end(retrying([{"ErrorEquals": ["Boom"]}]), {}, {"fn": always("Boom")})
    assert delays(result) == [1.0, 2.0, 4.0]
    assert len(result.invocations) == 4
    assert (result.outcome.status, result.outcome.error, result.outcome.cause) == ("FAILED", "Boom", "boom")


def test_interval_backoff_and_max_delay_cap_then_catch() -> None:
    retry = [
        {
            "ErrorEquals": ["Boom"],
            "IntervalSeconds": 3,
            "MaxAttempts": 4,
            "BackoffRate": 2,
            "MaxDelaySeconds": 10,
        }
    ]
    result = run_to_end(
        retrying(retry, [{"ErrorEquals": ["States.ALL"], "Next": "Recover"}]),
        {},
        {"fn": always("Boom", "still broken")},
        now=0.0,
    )
    assert delays(result) == [3.0, 6.0, 10.0, 10.0]
    assert [t.fire_at for t in result.timers] == [3.0, 9.0, 19.0, 29.0]
    assert len(result.invocations) == 5
    assert result.output == {"Error": "Boom", "Cause": "still broken"}


def test_the_spec_retrier_example_with_a_max_delay() -> None:
    retry = [
        {
            "ErrorEquals": ["States.Timeout"],
            "IntervalSeconds": 3,
            "MaxAttempts": 2,
            "BackoffRate": 2.0,
            "MaxDelaySeconds": 4,
        }
    ]
    result = run_to_end(retrying(retry), {}, {"fn": always("States.Timeout", "took too long")})
    assert delays(result) == [3.0, 4.0]
    assert result.types.count("TaskTimedOut") == 3 and result.outcome.error == "States.Timeout"


def test_a_retry_that_succeeds_continues_normally() -> None:
    result = run_to_end(
        retrying([{"ErrorEquals": ["Flaky"], "IntervalSeconds": 5}]),
        {"x": 1},
        {"fn": handler_failing(2, "Flaky", {"done": True})},
    )
    assert result.output == {"done": True}
    assert delays(result) == [5.0, 10.0]
    assert [i.token for i in result.invocations] == ["root/T#1@1", "root/T#1@2", "root/T#1@3"]
    assert all(i.input == {"x": 1} for i in result.invocations)


def test_max_attempts_zero_never_retries() -> None:
    retry: list[dict[str, Any]] = [
        {"ErrorEquals": ["Fatal"], "MaxAttempts": 0},
        {"ErrorEquals": ["States.ALL"]},
    ]
    result = run_to_end(
        retrying(retry, [{"ErrorEquals": ["Fatal"], "Next": "Recover"}]), {}, {"fn": always("Fatal")}
    )
    assert delays(result) == [] and len(result.invocations) == 1
    assert result.output["Error"] == "Fatal"


def test_spec_complex_retry_scenario() -> None:
    machine = {
        "StartAt": "X",
        "States": {
            "X": {
                "Type": "Task",
                "Resource": "fn",
                "Next": "Y",
                "Retry": [
                    {
                        "ErrorEquals": ["ErrorA", "ErrorB"],
                        "IntervalSeconds": 1,
                        "BackoffRate": 2,
                        "MaxAttempts": 2,
                    },
                    {"ErrorEquals": ["ErrorC"], "IntervalSeconds": 5},
                ],
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Z"}],
            },
            "Y": {"Type": "Succeed"},
            "Z": {"Type": "Pass", "End": True},
        },
    }
    errors = iter(["ErrorA", "ErrorB", "ErrorC", "ErrorB"])

    def fn(_: Any) -> Any:
        raise TaskError(next(errors))

    result = run_to_end(machine, {}, {"fn": fn})
    assert delays(result) == [1.0, 2.0, 5.0]
    assert result.output == {"Error": "ErrorB", "Cause": ""}
    assert result.events("PassStateEntered")[0].state_name == "Z"


def test_full_jitter_is_below_the_backoff_and_deterministic() -> None:
    retry = [{"ErrorEquals": ["Boom"], "IntervalSeconds": 10, "MaxAttempts": 6, "JitterStrategy": "FULL"}]
    first = delays(run_to_end(retrying(retry), {}, {"fn": always("Boom")}))
    second = delays(run_to_end(retrying(retry), {}, {"fn": always("Boom")}))
    other = delays(
        run_to_end(
            retrying(retry),
            {},
            {"fn": always("Boom")},
            execution=ExecutionInfo(id="arn:exec:other", name="other"),
        )
    )
    assert first == second != other
    assert all(0 <= d < 10 * 2**n for n, d in enumerate(first))
    assert len(set(first)) == len(first)


def test_retry_counts_survive_a_crash_between_attempts() -> None:
    machine = parse(retrying([{"ErrorEquals": ["Boom"], "MaxAttempts": 1}]))
    step = start(machine, {}, execution=EXECUTION, now=0.0)
    step = advance(machine, reload(step.state), TaskFailed(step.actions[0].token, "Boom", ""), now=1.0)
    (timer,) = step.actions
    assert isinstance(timer, StartTimer) and timer.fire_at == 2.0
    step = advance(machine, reload(step.state), TimerFired(timer.token), now=2.0)
    (invoke,) = step.actions
    assert isinstance(invoke, InvokeTask) and invoke.token == "root/T#1@2"
    step = advance(machine, reload(step.state), TaskFailed(invoke.token, "Boom", "again"), now=3.0)
    assert step.done is not None and (step.done.status, step.done.cause) == ("FAILED", "again")


# --- error matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_equals", "error", "caught"),
    [
        (["States.ALL"], "Anything", True),
        (["States.ALL"], "States.Timeout", True),
        (["States.TaskFailed"], "Custom.Error", True),
        (["States.TaskFailed"], "States.Permissions", True),
        (["States.TaskFailed"], "States.Timeout", False),
        (["States.TaskFailed"], "States.HeartbeatTimeout", False),
        (["States.Timeout"], "States.Timeout", True),
        (["States.Timeout"], "States.HeartbeatTimeout", True),
        (["States.Timeout"], "Custom.Error", False),
        (["A", "B"], "B", True),
        (["A", "B"], "a", False),
        (["States.ALL"], "States.Runtime", False),
        (["States.Runtime"], "States.Runtime", False),
        (["States.ALL"], "States.DataLimitExceeded", False),
    ],
)
def test_error_matching(error_equals: list[str], error: str, caught: bool) -> None:
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "End": True,
                "Catch": [{"ErrorEquals": error_equals, "Next": "C"}],
            },
            "C": {"Type": "Pass", "End": True},
        },
    }
    outcome = run_to_end(machine, {}, {"fn": always(error)}).outcome
    assert (outcome.status == "SUCCEEDED") is caught
    assert (outcome.output if caught else outcome.error) == (
        {"Error": error, "Cause": "boom"} if caught else error
    )


def test_catchers_are_scanned_in_order() -> None:
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "End": True,
                "Catch": [
                    {"ErrorEquals": ["Other"], "Next": "First"},
                    {"ErrorEquals": ["Mine", "Yours"], "Next": "Second", "ResultPath": "$.err"},
                    {"ErrorEquals": ["States.ALL"], "Next": "Third", "ResultPath": None},
                ],
            },
            "First": {"Type": "Pass", "Result": 1, "End": True},
            "Second": {"Type": "Pass", "End": True},
            "Third": {"Type": "Pass", "End": True},
        },
    }
    assert run_to_end(machine, {"in": 1}, {"fn": always("Yours", "c")}).output == {
        "in": 1,
        "err": {"Error": "Yours", "Cause": "c"},
    }
    assert run_to_end(machine, {"in": 1}, {"fn": always("Unknown")}).output == {"in": 1}
    assert run_to_end(machine, {"in": 1}, {"fn": always("Other")}).output == 1


def test_a_catcher_whose_result_path_cannot_apply_fails_the_execution() -> None:
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "End": True,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "C", "ResultPath": "$.e"}],
            },
            "C": {"Type": "Pass", "End": True},
        },
    }
    outcome = run_to_end(machine, "a string input", {"fn": always("Boom")}).outcome
    assert (outcome.status, outcome.error) == ("FAILED", "States.ResultPathMatchFailure")


def test_fail_state_error_and_cause() -> None:
    machine = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "ErrorA", "Cause": "Kaiju attack"}}}
    outcome = run_to_end(machine).outcome
    assert (outcome.status, outcome.error, outcome.cause, outcome.output) == (
        "FAILED",
        "ErrorA",
        "Kaiju attack",
        None,
    )
    dynamic = {
        "StartAt": "F",
        "States": {
            "F": {"Type": "Fail", "ErrorPath": "$.Error", "CausePath": "States.Format('code {}', $.code)"}
        },
    }
    outcome = run_to_end(dynamic, {"Error": "E42", "code": 42}).outcome
    assert (outcome.error, outcome.cause) == ("E42", "code 42")
    bare = run_to_end({"StartAt": "F", "States": {"F": {"Type": "Fail"}}}).outcome
    assert (bare.status, bare.error, bare.cause) == ("FAILED", None, None)
    mistyped = run_to_end(dynamic, {"Error": 1, "code": 1}).outcome
    assert mistyped.error == "States.Runtime"


def test_errors_and_causes_are_clipped() -> None:
    outcome = run_to_end(
        retrying([{"ErrorEquals": ["X"], "MaxAttempts": 0}]), {}, {"fn": always("E" * 1000, "c" * 100_000)}
    ).outcome
    assert outcome.error == "E" * 256 and outcome.cause == "c" * 32_768


# --- Parallel ------------------------------------------------------------------------------------


def branch(resource: str, name: str) -> dict[str, Any]:
    return {"StartAt": name, "States": {name: {"Type": "Task", "Resource": resource, "End": True}}}


FAN = {
    "StartAt": "Fan",
    "States": {
        "Fan": {
            "Type": "Parallel",
            "Next": "After",
            "ResultSelector": {"all.$": "$"},
            "ResultPath": "$.fan",
            "Branches": [branch("a", "A"), branch("b", "B"), branch("c", "C")],
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Handled"}],
        },
        "After": {"Type": "Succeed"},
        "Handled": {"Type": "Pass", "End": True},
    },
}


@pytest.mark.parametrize("order", ["fifo", "lifo", "random"])
def test_parallel_output_is_in_branch_order(order: str) -> None:
    def tagger(tag: str) -> Any:
        return lambda v: f"{tag}:{v['n']}"

    handlers = {r: tagger(r) for r in "abc"}
    result = run_to_end(FAN, {"n": 1}, handlers, order=order, seed=3)
    assert result.output == {"n": 1, "fan": {"all": ["a:1", "b:1", "c:1"]}}
    assert [e.details["scope"] for e in result.events("TaskStateEntered")] == [
        "root/Fan[0]",
        "root/Fan[1]",
        "root/Fan[2]",
    ]


def test_a_failing_branch_fails_the_parallel_and_abandons_the_others() -> None:
    machine = parse(FAN)
    step = start(machine, {"n": 1}, execution=EXECUTION, now=0.0)
    a, b, c = step.actions
    assert all(isinstance(x, InvokeTask) for x in (a, b, c))
    step = advance(machine, step.state, TaskSucceeded(a.token, "a"), now=1.0)
    step = advance(machine, step.state, TaskFailed(b.token, "B.Broke", "b failed"), now=2.0)
    assert step.done is not None and step.done.output == {"Error": "B.Broke", "Cause": "b failed"}
    assert [h.type for h in step.history] == [
        "TaskFailed",
        "ParallelStateFailed",
        "CatchTriggered",
        "ParallelStateExited",
        "PassStateEntered",
        "PassStateExited",
        "ExecutionSucceeded",
    ]
    late = advance(machine, step.state, TaskSucceeded(c.token, "c"), now=3.0)
    assert late.state is step.state and late.actions == []


def test_a_failing_branch_with_work_still_running_elsewhere() -> None:
    machine = parse(
        {
            "StartAt": "Fan",
            "States": {
                "Fan": {
                    "Type": "Parallel",
                    "End": True,
                    "Branches": [
                        branch("slow", "Slow"),
                        {
                            "StartAt": "W",
                            "States": {
                                "W": {"Type": "Wait", "Seconds": 5, "Next": "Boom"},
                                "Boom": {"Type": "Fail", "Error": "Bang"},
                            },
                        },
                    ],
                }
            },
        }
    )
    step = start(machine, {}, execution=EXECUTION, now=0.0)
    invoke, timer = step.actions
    assert isinstance(timer, StartTimer)
    step = advance(machine, step.state, TimerFired(timer.token), now=5.0)
    assert step.done is not None and step.done.error == "Bang"
    assert advance(machine, step.state, TaskSucceeded(invoke.token, 1), now=6.0).state is step.state


def test_a_parallel_can_be_retried_as_a_whole() -> None:
    calls = {"ok": 0, "flaky": 0}

    def ok(_: Any) -> Any:
        calls["ok"] += 1
        return "ok"

    def flaky(_: Any) -> Any:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise TaskError("Flaky")
        return "fine"

    machine = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Parallel",
                "End": True,
                "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 2}],
                "Branches": [branch("ok", "Ok"), branch("flaky", "Flaky")],
            }
        },
    }
    result = run_to_end(machine, {}, {"ok": ok, "flaky": flaky})
    assert result.output == ["ok", "fine"]
    assert calls == {"ok": 2, "flaky": 2} and delays(result) == [2.0]


def test_branches_that_end_synchronously() -> None:
    machine = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Parallel",
                "End": True,
                "Parameters": {"v.$": "$.v"},
                "Branches": [
                    {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": 1, "End": True}}},
                    {"StartAt": "S", "States": {"S": {"Type": "Succeed"}}},
                ],
            }
        },
    }
    assert run_to_end(machine, {"v": 2}).output == [1, {"v": 2}]
    failing = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Parallel",
                "End": True,
                "Branches": [
                    branch("never", "Never"),
                    {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Now"}}},
                ],
            }
        },
    }
    result = run_to_end(failing, {}, {})
    assert result.outcome.error == "Now" and result.invocations == []


def test_nested_parallel_inside_map() -> None:
    machine = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "End": True,
                "ItemProcessor": {
                    "StartAt": "Fan",
                    "States": {
                        "Fan": {
                            "Type": "Parallel",
                            "End": True,
                            "Branches": [branch("double", "Double"), branch("square", "Square")],
                        }
                    },
                },
            }
        },
    }
    result = run_to_end(
        machine, [1, 2, 3], {"double": lambda v: 2 * v, "square": lambda v: v * v}, order="random"
    )
    assert result.output == [[2, 1], [4, 4], [6, 9]]
    tokens = {i.token for i in result.invocations}
    assert "root/M[2]/Fan[1]/Square#16@1" in tokens or any(
        re.fullmatch(r"root/M\[2\]/Fan\[1\]/Square#\d+@1", t) for t in tokens
    )


# --- Map -----------------------------------------------------------------------------------------


def mapping(max_concurrency: int, **extra: Any) -> dict[str, Any]:
    return {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "MaxConcurrency": max_concurrency,
                "End": True,
                **extra,
                "ItemProcessor": {
                    "StartAt": "Work",
                    "States": {"Work": {"Type": "Task", "Resource": "work", "End": True}},
                },
            }
        },
    }


def running_iterations(snapshot: list[str]) -> set[str]:
    return {m.group(1) for t in snapshot if (m := re.match(r"root/M\[(\d+)\]/", t))}


@pytest.mark.parametrize(
    ("limit", "order"), [(1, "fifo"), (2, "random"), (3, "lifo"), (4, "random"), (0, "random")]
)
def test_max_concurrency_is_respected_and_every_item_finishes(limit: int, order: str) -> None:
    items = list(range(10))
    result = run_to_end(mapping(limit), items, {"work": lambda v: v * 10}, order=order, seed=limit)
    assert result.output == [i * 10 for i in items]
    widths = [len(running_iterations(s)) for s in result.pending_snapshots]
    assert max(widths) == (limit or len(items))
    assert sorted(i.input for i in result.invocations) == items
    if limit == 1:
        assert [i.input for i in result.invocations] == items  # strictly one after the other


def test_max_concurrency_with_iterations_of_several_steps() -> None:
    machine = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "MaxConcurrencyPath": "$.limit",
                "ItemsPath": "$.items",
                "End": True,
                "ItemProcessor": {
                    "StartAt": "Wait",
                    "States": {
                        "Wait": {"Type": "Wait", "SecondsPath": "$", "Next": "Work"},
                        "Work": {"Type": "Task", "Resource": "work", "End": True},
                    },
                },
            }
        },
    }
    items = [5, 1, 3, 2, 4, 1]
    result = run_to_end(machine, {"limit": 2, "items": items}, {"work": lambda v: -v})
    assert result.output == [-i for i in items]
    assert max(len(running_iterations(s)) for s in result.pending_snapshots) == 2


def test_map_with_no_items_and_map_over_the_raw_input() -> None:
    assert run_to_end(mapping(0), [], {}).output == []
    result = run_to_end(mapping(0, ItemsPath="$.xs", ResultPath="$.ys"), {"xs": ["a"]}, {"work": str.upper})
    assert result.output == {"xs": ["a"], "ys": ["A"]}


def test_map_items_must_be_an_array() -> None:
    outcome = run_to_end(mapping(0, ItemsPath="$.xs"), {"xs": {"a": 1}}, {}).outcome
    assert (outcome.status, outcome.error) == ("FAILED", "States.Runtime")


def test_a_failing_iteration_fails_the_map_and_aborts_the_rest() -> None:
    def work(v: Any) -> Any:
        if v == 3:
            raise TaskError("Bad.Item", f"item {v}")
        return v

    machine = mapping(2, Catch=[{"ErrorEquals": ["Bad.Item"], "Next": "Caught", "ResultPath": "$.error"}])
    machine["States"]["M"].update(ItemsPath="$.items", End=False, Next="Done")
    machine["States"].update({"Caught": {"Type": "Pass", "End": True}, "Done": {"Type": "Succeed"}})
    result = run_to_end(machine, {"items": [1, 2, 3, 4, 5, 6]}, {"work": work})
    assert result.output == {"items": [1, 2, 3, 4, 5, 6], "error": {"Error": "Bad.Item", "Cause": "item 3"}}
    assert [i.input for i in result.invocations] == [1, 2, 3]
    assert len(result.events("MapIterationAborted")) == 1 and result.events("MapStateFailed")


def test_tolerated_failures() -> None:
    def work(v: Any) -> Any:
        if v % 3 == 0:
            raise TaskError("Bad", str(v))
        return v

    items = list(range(1, 10))  # 3, 6 and 9 fail
    tolerant = run_to_end(mapping(0, ToleratedFailureCount=3), items, {"work": work})
    assert tolerant.output[2] == {"Error": "Bad", "Cause": "3"} and tolerant.output[3] == 4
    strict = run_to_end(mapping(0, ToleratedFailureCount=2), items, {"work": work}).outcome
    assert strict.error == "States.ExceedToleratedFailureThreshold"
    pct = run_to_end(mapping(0, ToleratedFailurePercentage=30), items, {"work": work}).outcome
    assert pct.error == "States.ExceedToleratedFailureThreshold"
    pct_ok = run_to_end(mapping(0, ToleratedFailurePercentage=34), items, {"work": work}).outcome
    assert pct_ok.status == "SUCCEEDED"
    by_path = run_to_end(
        mapping(0, ItemsPath="$.items", ToleratedFailureCountPath="$.n"),
        {"items": items, "n": 3},
        {"work": work},
    ).outcome
    assert by_path.status == "SUCCEEDED"


def test_an_item_selector_failure_fails_the_map() -> None:
    machine = mapping(
        0,
        ItemSelector={"x.$": "$$.Map.Item.Value.missing"},
        Catch=[{"ErrorEquals": ["States.ParameterPathFailure"], "Next": "C"}],
    )
    machine["States"]["C"] = {"Type": "Pass", "End": True}
    result = run_to_end(machine, [{"a": 1}], {})
    assert result.output["Error"] == "States.ParameterPathFailure"


def test_map_result_selector_and_output_path() -> None:
    result = run_to_end(
        mapping(
            0,
            ResultSelector={"count.$": "States.ArrayLength($)", "items.$": "$"},
            ItemsPath="$.in",
            ResultPath="$.r",
            OutputPath="$.r.count",
        ),
        {"in": [1, 2, 3]},
        {"work": lambda v: v},
    )
    assert result.output == 3


def test_a_map_can_be_retried_as_a_whole() -> None:
    failed = set()

    def work(v: Any) -> Any:
        if v == 2 and v not in failed:
            failed.add(v)
            raise TaskError("Flaky")
        return v

    result = run_to_end(mapping(1, Retry=[{"ErrorEquals": ["Flaky"]}]), [1, 2, 3], {"work": work})
    assert result.output == [1, 2, 3]
    assert [i.input for i in result.invocations] == [1, 2, 1, 2, 3]


# --- Wait ----------------------------------------------------------------------------------------


NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def waiting(**fields: Any) -> dict[str, Any]:
    return {
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Next": "Done", **fields}, "Done": {"Type": "Succeed"}},
    }


@pytest.mark.parametrize(
    ("fields", "data", "fire_at"),
    [
        ({"Seconds": 10}, {}, NOW + 10),
        ({"Seconds": 0}, {}, None),
        ({"SecondsPath": "$.wait"}, {"wait": 25}, NOW + 25),
        ({"Timestamp": "2016-03-14T01:59:00Z"}, {}, None),  # in the past: no wait
        ({"Timestamp": "2030-01-01T00:00:00Z"}, {}, 1893456000.0),
        ({"Timestamp": "2030-01-01T02:00:00.5+02:00"}, {}, 1893456000.5),
        ({"TimestampPath": "$.until"}, {"until": "2030-01-01T00:00:00Z"}, 1893456000.0),
        ({"SecondsPath": "$.w", "InputPath": "$.inner"}, {"inner": {"w": 3}}, NOW + 3),
    ],
)
def test_wait_fires_at_an_absolute_time(fields: dict[str, Any], data: Any, fire_at: float | None) -> None:
    result = run_to_end(waiting(**fields), data, now=NOW)
    assert [t.fire_at for t in result.timers] == ([] if fire_at is None else [fire_at])
    assert result.outcome.status == "SUCCEEDED"
    assert result.now == (NOW if fire_at is None else fire_at)


def test_wait_output_uses_input_and_output_paths() -> None:
    result = run_to_end(waiting(Seconds=1, InputPath="$.a", OutputPath="$.b"), {"a": {"b": "kept"}})
    assert result.output == "kept"


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        ({"SecondsPath": "$.w"}, {"w": -1}),
        ({"SecondsPath": "$.w"}, {"w": 1.5}),
        ({"SecondsPath": "$.w"}, {"w": "10"}),
        ({"SecondsPath": "$.w"}, {}),
        ({"TimestampPath": "$.t"}, {"t": "tomorrow"}),
    ],
)
def test_a_bad_wait_value_is_a_runtime_error(fields: dict[str, Any], data: Any) -> None:
    outcome = run_to_end(waiting(**fields), data).outcome
    assert (outcome.status, outcome.error) == ("FAILED", "States.Runtime")


# --- execution-level behaviour and bounds -----------------------------------------------------------


def test_history_of_a_simple_execution() -> None:
    machine = {
        "StartAt": "T",
        "States": {"T": {"Type": "Task", "Resource": "fn", "Next": "S"}, "S": {"Type": "Succeed"}},
    }
    result = run_to_end(machine, {"a": 1}, {"fn": lambda v: {"b": 2}})
    assert result.types == [
        "ExecutionStarted",
        "TaskStateEntered",
        "TaskScheduled",
        "TaskSucceeded",
        "TaskStateExited",
        "SucceedStateEntered",
        "SucceedStateExited",
        "ExecutionSucceeded",
    ]
    started, entered, scheduled, succeeded, exited = result.history[:5]
    assert started.details["input"] == {"a": 1} and started.state_name is None
    assert entered.state_name == "T" and entered.details == {"input": {"a": 1}}
    assert scheduled.details["resource"] == "fn" and scheduled.details["token"] == "root/T#1@1"
    assert succeeded.details["output"] == {"b": 2} and exited.details == {"output": {"b": 2}}
    assert result.history[-1].details == {"output": {"b": 2}}


def test_execution_timeout_seconds() -> None:
    machine = {
        "TimeoutSeconds": 10,
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": 100, "End": True}},
    }
    result = run_to_end(machine, {}, now=0.0)
    assert (result.outcome.status, result.outcome.error) == ("FAILED", "States.Timeout")
    assert result.now == 10.0
    quick = {
        "TimeoutSeconds": 10,
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": 1, "End": True}},
    }
    assert run_to_end(quick, {}, now=0.0).outcome.status == "SUCCEEDED"


def test_payload_limit_on_task_output_is_not_catchable() -> None:
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "fn",
                "End": True,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "C"}],
            },
            "C": {"Type": "Pass", "End": True},
        },
    }
    outcome = run_to_end(machine, {}, {"fn": lambda v: "x" * MAX_PAYLOAD_BYTES}).outcome
    assert (outcome.status, outcome.error) == ("FAILED", "States.DataLimitExceeded")
    assert (
        run_to_end(machine, {}, {"fn": lambda v: "x" * (MAX_PAYLOAD_BYTES - 10)}).outcome.status
        == "SUCCEEDED"
    )


def test_payload_limit_on_input_state_output_and_map_results() -> None:
    big = "x" * MAX_PAYLOAD_BYTES
    passing = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    assert run_to_end(passing, {"big": big}).outcome.error == "States.DataLimitExceeded"
    growing = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Parameters": {"a.$": "$.s", "b.$": "$.s"}, "End": True}},
    }
    assert (
        run_to_end(growing, {"s": "y" * (MAX_PAYLOAD_BYTES // 2)}).outcome.error == "States.DataLimitExceeded"
    )
    outcome = run_to_end(mapping(0), list(range(40)), {"work": lambda v: "z" * 8_000}).outcome
    assert (outcome.error, "result of state 'M'" in (outcome.cause or "")) == (
        "States.DataLimitExceeded",
        True,
    )


def test_the_history_bound_stops_a_runaway_loop() -> None:
    machine = {
        "StartAt": "Spin",
        "States": {
            "Spin": {"Type": "Pass", "Next": "Again?"},
            "Again?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.stop", "IsPresent": True, "Next": "Done"}],
                "Default": "Spin",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    step = start(parse(machine), {}, execution=EXECUTION, now=0.0)
    assert step.done is not None and (step.done.status, step.done.error) == ("FAILED", "States.Runtime")
    assert str(MAX_HISTORY_EVENTS) in (step.done.cause or "")
    assert len(step.history) == MAX_HISTORY_EVENTS + 1
    assert step.state["pending"] == {} and step.actions == []


def test_input_that_is_not_json_is_refused() -> None:
    machine = parse({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    with pytest.raises(ValueError, match="not JSON"):
        start(machine, {"when": object()}, execution=EXECUTION, now=0.0)
    with pytest.raises(ValueError, match="not JSON"):
        start(machine, float("nan"), execution=EXECUTION, now=0.0)


def test_a_task_output_that_is_not_json_fails_the_execution() -> None:
    machine = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "fn", "End": True}}}
    outcome = run_to_end(machine, {}, {"fn": lambda v: {"nan": float("nan")}}).outcome
    assert (outcome.status, outcome.error) == ("FAILED", "States.Runtime")


def test_an_unknown_state_version_is_refused() -> None:
    machine = parse({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "fn", "End": True}}})
    step = start(machine, {}, execution=EXECUTION, now=0.0)
    with pytest.raises(ValueError, match="unknown execution state version"):
        advance(machine, {**step.state, "version": 99}, TimerFired("x"), now=1.0)


def test_actions_of_work_abandoned_within_the_same_step_are_not_emitted() -> None:
    machine = parse(
        {
            "StartAt": "Fan",
            "States": {
                "Fan": {
                    "Type": "Parallel",
                    "End": True,
                    "Branches": [
                        branch("never", "Never"),
                        {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Now"}}},
                    ],
                }
            },
        }
    )
    step = start(machine, {}, execution=EXECUTION, now=0.0)
    assert step.actions == [] and step.done is not None and step.done.error == "Now"
    assert "TaskScheduled" in [h.type for h in step.history]
