"""A synchronous stand-in for the durable executor, and the crash/idempotency tests it rests on.

``run_to_end`` plays the executor the way the real one must behave, and checks the interpreter's
contract at every single step, so every test that uses it checks it too:
- the execution state goes through ``json.dumps``/``json.loads`` after each step (a control-plane
  crash and reload), and only the reloaded copy is used from then on;
- every event is delivered twice: the second delivery must return the very same state with no
  actions and no history (an at-least-once queue's duplicate);
- ``pending_actions`` of the reloaded state must equal the work still outstanding (what the
  executor would re-issue after a crash);
- the state given to ``advance`` is never mutated.
Tasks run synchronously through ``handlers`` (resource -> callable); timers fire in ``fire_at``
order by moving a fake clock forward. Nothing sleeps.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from control_plane.workflows.asl import Machine, parse
from control_plane.workflows.machine import (
    Action,
    Event,
    ExecutionInfo,
    HistoryEvent,
    InvokeTask,
    Outcome,
    StartTimer,
    TaskFailed,
    TaskSucceeded,
    TimerFired,
    advance,
    pending_actions,
    start,
)

NO_INPUT: Any = object()  # run_to_end's default input: {} (AWS's default when none is given)
EXECUTION = ExecutionInfo(
    id="arn:exec:1", name="exec-1", state_machine_id="arn:sm:1", state_machine_name="sm"
)


class TaskError(Exception):
    """Raised by a handler to make its task fail with ``error``/``cause``."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(error, cause)
        self.error, self.cause = error, cause


@dataclass
class Result:
    outcome: Outcome
    history: list[HistoryEvent]
    invocations: list[InvokeTask]
    timers: list[StartTimer]
    state: dict[str, Any]
    pending_snapshots: list[list[str]] = field(default_factory=list)
    now: float = 0.0

    @property
    def output(self) -> Any:
        return self.outcome.output

    @property
    def types(self) -> list[str]:
        return [h.type for h in self.history]

    def events(self, kind: str) -> list[HistoryEvent]:
        return [h for h in self.history if h.type == kind]


def reload(state: dict[str, Any]) -> dict[str, Any]:
    """A crash: the state as the executor would read it back from its store."""
    assert_plain_json(state)
    loaded: dict[str, Any] = json.loads(json.dumps(state, allow_nan=False))
    return loaded


def assert_plain_json(value: Any, where: str = "state") -> None:
    """Only dict (str keys), list, str, int, float, bool and None: json.dumps alone would let a
    tuple through (as a list) and the state would change shape across a reload."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{where}: key {k!r}"
            assert_plain_json(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_plain_json(v, f"{where}[{i}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{where}: {type(value).__name__}"


def machine_of(definition: Machine | str | Mapping[str, Any]) -> Machine:
    return definition if isinstance(definition, Machine) else parse(definition)


def run_to_end(
    definition: Machine | str | Mapping[str, Any],
    input: Any = NO_INPUT,
    handlers: Mapping[str, Callable[[Any], Any]] | None = None,
    *,
    now: float = 1_000.0,
    order: str = "fifo",
    seed: int = 0,
    execution: ExecutionInfo = EXECUTION,
    max_steps: int = 20_000,
) -> Result:
    """Run an execution to its end; ``order`` picks the next task: fifo, lifo or random."""
    machine = machine_of(definition)
    handlers = handlers or {}
    rng = random.Random(seed)
    step = start(machine, {} if input is NO_INPUT else input, execution=execution, now=now)
    history = list(step.history)
    state = reload(step.state)
    queue: list[Action] = list(step.actions)
    invocations: list[InvokeTask] = []
    timers: list[StartTimer] = []
    snapshots = [sorted(state["pending"])]
    for _ in range(max_steps):
        if step.done is not None:
            assert state["pending"] == {} and queue == []
            return Result(step.done, history, invocations, timers, state, snapshots, now)
        _check_outstanding(machine, state, queue)
        tasks = [a for a in queue if isinstance(a, InvokeTask)]
        event: Event
        if tasks:
            task = tasks[0] if order == "fifo" else tasks[-1] if order == "lifo" else rng.choice(tasks)
            queue.remove(task)
            invocations.append(task)
            try:
                event = TaskSucceeded(task.token, handlers[task.resource](copy.deepcopy(task.input)))
            except TaskError as e:
                event = TaskFailed(task.token, e.error, e.cause)
        else:
            waiting = [a for a in queue if isinstance(a, StartTimer)]
            assert waiting, "the execution is stuck: nothing outstanding, yet not done"
            timer = min(waiting, key=lambda t: (t.fire_at, t.token))
            queue.remove(timer)
            timers.append(timer)
            now = max(now, timer.fire_at)
            event = TimerFired(timer.token)
        before = copy.deepcopy(state)
        step = advance(machine, state, event, now=now)
        assert state == before, "advance mutated the state it was given"
        history.extend(step.history)
        state = reload(step.state)
        again = advance(machine, state, event, now=now)
        assert again.state is state and again.actions == [] and again.history == [], "duplicate not a no-op"
        queue = [a for a in queue if a.token in state["pending"]] + list(step.actions)
        snapshots.append(sorted(state["pending"]))
    raise AssertionError(f"no end after {max_steps} steps")


def _check_outstanding(machine: Machine, state: dict[str, Any], queue: list[Action]) -> None:
    assert sorted(a.token for a in queue) == sorted(state["pending"])
    by_token = {a.token: a for a in queue}
    for action in pending_actions(machine, state):
        assert by_token[action.token] == action


def handler_failing(times: int, error: str, output: Any = "ok", cause: str = "boom") -> Callable[[Any], Any]:
    """A handler that fails ``times`` times with ``error``, then returns ``output``."""
    calls = [0]

    def handle(_: Any) -> Any:
        calls[0] += 1
        if calls[0] <= times:
            raise TaskError(error, cause)
        return output

    return handle


# --- tests of the contract the driver checks, made explicit ----------------------------------------

TWO_TASKS = {
    "StartAt": "A",
    "States": {
        "A": {"Type": "Task", "Resource": "echo", "Next": "B"},
        "B": {"Type": "Task", "Resource": "echo", "End": True},
    },
}


def test_a_duplicate_event_returns_the_same_state_and_nothing_else() -> None:
    machine = parse(TWO_TASKS)
    first = start(machine, {"n": 1}, execution=EXECUTION, now=0.0)
    (invoke,) = first.actions
    assert isinstance(invoke, InvokeTask)
    second = advance(machine, first.state, TaskSucceeded(invoke.token, {"n": 2}), now=1.0)
    assert [type(a) for a in second.actions] == [InvokeTask]
    dup = advance(machine, second.state, TaskSucceeded(invoke.token, {"n": 99}), now=2.0)
    assert dup.state is second.state and dup.actions == [] and dup.history == [] and dup.done is None


def test_unknown_tokens_and_mismatched_events_are_ignored() -> None:
    machine = parse(TWO_TASKS)
    step = start(machine, {}, execution=EXECUTION, now=0.0)
    token = step.actions[0].token
    for event in (TaskSucceeded("nope", 1), TimerFired(token), TaskFailed("root/A#9@9", "E", "")):
        assert advance(machine, step.state, event, now=1.0).state is step.state


def test_a_finished_execution_ignores_everything() -> None:
    result = run_to_end(TWO_TASKS, {"x": 1}, {"echo": lambda v: v})
    step = advance(parse(TWO_TASKS), result.state, TaskSucceeded("root/A#1@1", 5), now=5.0)
    assert step.state is result.state and step.done == result.outcome and step.actions == []


def test_a_reloaded_state_re_issues_its_outstanding_work() -> None:
    machine = parse(
        {
            "StartAt": "Fan",
            "States": {
                "Fan": {
                    "Type": "Parallel",
                    "End": True,
                    "Branches": [
                        {
                            "StartAt": "T",
                            "States": {
                                "T": {"Type": "Task", "Resource": "f", "TimeoutSeconds": 30, "End": True}
                            },
                        },
                        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}}},
                    ],
                }
            },
        }
    )
    step = start(machine, {"k": "v"}, execution=EXECUTION, now=100.0)
    assert pending_actions(machine, reload(step.state)) == sorted(step.actions, key=lambda a: a.token)
    assert step.actions == [
        InvokeTask("root/Fan[0]/T#2@1", "f", {"k": "v"}, 30.0),
        StartTimer("root/Fan[1]/W#3:wait", 160.0),
    ]


def test_tokens_are_unique_and_deterministic_across_runs() -> None:
    loop = {
        "StartAt": "Work",
        "States": {
            "Work": {
                "Type": "Task",
                "Resource": "count",
                "Next": "More?",
                "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1}],
            },
            "More?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericLessThan": 3, "Next": "Work"}],
                "Default": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
    }

    def count(v: Any) -> Any:
        return {"n": v.get("n", 0) + 1}

    flaky = handler_failing(1, "Flaky", None)

    def handler(v: Any) -> Any:
        flaky(v)
        return count(v)

    runs = [run_to_end(loop, {}, {"count": handler if i == 0 else count}) for i in range(2)]
    tokens = [a.token for a in runs[0].invocations]
    assert len(set(tokens)) == len(tokens) == 4  # one retry, then three visits
    assert tokens == ["root/Work#1@1", "root/Work#1@2", "root/Work#3@1", "root/Work#5@1"]
    assert runs[0].output == runs[1].output == {"n": 3}


def test_a_reloaded_state_behaves_exactly_like_the_live_one() -> None:
    definition = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "MaxConcurrency": 2,
                "Next": "Done",
                "ItemSelector": {"v.$": "$$.Map.Item.Value", "id.$": "States.UUID()"},
                "ItemProcessor": {
                    "StartAt": "Work",
                    "States": {
                        "Work": {
                            "Type": "Task",
                            "Resource": "work",
                            "End": True,
                            "Retry": [{"ErrorEquals": ["States.ALL"], "JitterStrategy": "FULL"}],
                        }
                    },
                },
            },
            "Done": {"Type": "Succeed"},
        },
    }
    machine = parse(definition)

    def play(reloading: bool) -> list[Any]:
        step = start(machine, [1, 2, 3], execution=EXECUTION, now=0.0)
        log: list[Any] = [step.actions, step.history]
        state, queue, now, failed = step.state, list(step.actions), 0.0, False
        while step.done is None:
            state = reload(state) if reloading else state
            action = queue.pop(0)
            event: Event
            if isinstance(action, StartTimer):
                now = action.fire_at
                event = TimerFired(action.token)
            elif not failed:
                failed = True
                event = TaskFailed(action.token, "Flaky", "once")
            else:
                event = TaskSucceeded(action.token, action.input)
            step = advance(machine, state, event, now=now)
            state = step.state
            queue = [a for a in queue if a.token in state["pending"]] + step.actions
            log += [step.actions, step.history]
        log.append(step.done)
        return log

    assert play(True) == play(False)


@pytest.mark.parametrize("order", ["fifo", "lifo", "random"])
def test_the_driver_reaches_the_same_end_whatever_the_completion_order(order: str) -> None:
    machine = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "End": True,
                "ItemProcessor": {
                    "StartAt": "Sq",
                    "States": {"Sq": {"Type": "Task", "Resource": "sq", "End": True}},
                },
            }
        },
    }
    result = run_to_end(machine, list(range(8)), {"sq": lambda v: v * v}, order=order, seed=7)
    assert result.output == [i * i for i in range(8)]
