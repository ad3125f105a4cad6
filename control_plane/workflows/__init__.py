"""Workflows: state machines in Amazon States Language, run durably on the job queue.

`asl` reads and checks a definition (`parse`); `machine` is the pure interpreter (`start`,
`advance`: state + event -> next state + actions + history), with `jsonpath` and `intrinsics`;
`executor` stores executions and runs what their steps ask for as jobs (`Workflows`).
"""

from control_plane.workflows.asl import InvalidDefinition, Machine, parse
from control_plane.workflows.executor import Workflows, resource_function, task_resources
from control_plane.workflows.machine import (
    Action,
    Event,
    ExecutionInfo,
    HistoryEvent,
    InvokeTask,
    Outcome,
    StartTimer,
    Step,
    TaskFailed,
    TaskSucceeded,
    TimerFired,
    advance,
    pending_actions,
    start,
)

__all__ = [
    "Action",
    "Event",
    "ExecutionInfo",
    "HistoryEvent",
    "InvalidDefinition",
    "InvokeTask",
    "Machine",
    "Outcome",
    "StartTimer",
    "Step",
    "TaskFailed",
    "TaskSucceeded",
    "TimerFired",
    "Workflows",
    "advance",
    "parse",
    "pending_actions",
    "resource_function",
    "start",
    "task_resources",
]
