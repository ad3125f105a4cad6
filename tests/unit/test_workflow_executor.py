"""The workflow executor (`control_plane.workflows.executor`) on the store and its queue (SQLite),
with the functions played by Python: executions end as their definitions say, with their history
stored; a Map keeps its MaxConcurrency; a Wait is a job due at its time; throttling waits and is
no failure; a control plane that died between storing a step and putting its jobs loses nothing
(`recover`); a job delivered again is dropped. The interpreter itself: tests/unit/test_asl_*.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.core import InvalidConfig, Throttled
from control_plane.jobs import JobQueueError, Outcome, StoreQueue
from control_plane.store import Store
from control_plane.workflows import Workflows


class Functions:
    """Functions by key: each a Python callable of the event (raising = the handler raised)."""

    def __init__(self, table: dict[str, Callable[[Any], Any]]) -> None:
        self.table = table
        self.calls: list[tuple[str, Any]] = []
        self.running = self.most = 0

    async def __call__(self, key: str, event: bytes, call_id: str) -> Outcome:
        self.calls.append((key, json.loads(event)))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.02)
            result = self.table[key](json.loads(event))
        except Throttled:
            raise
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            return Outcome(500, json.dumps({"error": error}).encode())
        finally:
            self.running -= 1
        return Outcome(200, json.dumps(result).encode())


def _world(tmp_path: Path, functions: Functions) -> tuple[Store, Workflows]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return store, Workflows(store, StoreQueue(store, lease_s=2.0, poll_max_s=0.05), functions)


async def _until_done(store: Store, flows: Workflows, execution_id: str, within_s: float = 30) -> Any:
    stop = asyncio.Event()
    worker = asyncio.create_task(flows.serve(stop))
    try:
        deadline = time.monotonic() + within_s
        while (ex := store.execution(execution_id)).status == "RUNNING":
            assert time.monotonic() < deadline, "the execution did not end"
            await asyncio.sleep(0.02)
        return ex
    finally:
        stop.set()
        await worker


ORDER = {
    "StartAt": "Price",
    "States": {
        "Price": {"Type": "Task", "Resource": "price", "ResultPath": "$.price",
                  "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1, "MaxAttempts": 2}],
                  "Next": "Big?"},
        "Big?": {"Type": "Choice", "Default": "Done",
                 "Choices": [{"Variable": "$.price", "NumericGreaterThan": 100, "Next": "Ship"}]},
        "Ship": {"Type": "Task", "Resource": "arn:aws:lambda:local:default:function:ship", "End": True},
        "Done": {"Type": "Succeed"},
    },
}


def test_an_execution_runs_its_tasks_retries_and_ends_with_its_history(tmp_path: Path) -> None:
    tries = {"n": 0}

    def price(event: Any) -> int:
        tries["n"] += 1
        if tries["n"] == 1:
            raise type("Flaky", (Exception,), {})("try again")
        return event["qty"] * 60

    functions = Functions({"price": price, "ship": lambda e: {"shipped": e["price"]}})
    store, flows = _world(tmp_path, functions)

    async def scenario() -> None:
        await flows.deploy(key="order", tenant="default", name="order", definition=ORDER)
        ex = await _until_done(store, flows, await flows.start("order", {"qty": 2}))
        assert ex.status == "SUCCEEDED" and json.loads(ex.output) == {"shipped": 120}
        assert [k for k, _ in functions.calls] == ["price", "price", "ship"]
        types = [e.type for e in store.execution_history(ex.id)]
        assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
        assert "RetryScheduled" in types or types.count("TaskScheduled") == 3
        assert [e.seq for e in store.execution_history(ex.id)] == list(range(1, len(types) + 1))
    asyncio.run(scenario())


def test_a_map_keeps_its_max_concurrency_and_its_order(tmp_path: Path) -> None:
    functions = Functions({"square": lambda e: e * e})
    store, flows = _world(tmp_path, functions)
    fan = {"StartAt": "Each", "States": {"Each": {
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 3, "End": True,
        "ItemProcessor": {"StartAt": "Sq",
                          "States": {"Sq": {"Type": "Task", "Resource": "square", "End": True}}}}}}

    async def scenario() -> None:
        await flows.deploy(key="fan", tenant="default", name="fan", definition=fan)
        ex = await _until_done(store, flows, await flows.start("fan", {"items": list(range(20))}))
        assert ex.status == "SUCCEEDED" and json.loads(ex.output) == [i * i for i in range(20)]
        assert functions.most <= 3 and len(functions.calls) == 20
    asyncio.run(scenario())


def test_a_wide_maps_results_are_applied_in_batches_each_once(tmp_path: Path) -> None:
    """200 branches at once: their results arrive together and are applied a batch per step (far
    fewer writes of the execution than results), each branch's once, in order."""
    functions = Functions({"square": lambda e: e * e})
    store, flows = _world(tmp_path, functions)
    writes = []
    advance = store.advance_execution

    def counting(*args: Any, **kwargs: Any) -> bool:
        writes.append(len(kwargs["history"]))
        return advance(*args, **kwargs)

    store.advance_execution = counting  # type: ignore[method-assign]
    fan = {"StartAt": "Each", "States": {"Each": {
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 0, "End": True,
        "ItemProcessor": {"StartAt": "Sq",
                          "States": {"Sq": {"Type": "Task", "Resource": "square", "End": True}}}}}}

    async def scenario() -> None:
        await flows.deploy(key="fan", tenant="default", name="fan", definition=fan)
        ex = await _until_done(store, flows, await flows.start("fan", {"items": list(range(200))}))
        assert ex.status == "SUCCEEDED" and json.loads(ex.output) == [i * i for i in range(200)]
        assert len(functions.calls) == 200
        assert len(writes) < 100, len(writes)  # 200 results (32 workers at a time): batched
        history = store.execution_history(ex.id, limit=100_000)
        assert sum(1 for e in history if e.type == "TaskSucceeded") == 200
    asyncio.run(scenario())


def test_a_wait_is_a_job_due_at_its_time(tmp_path: Path) -> None:
    store, flows = _world(tmp_path, Functions({}))
    nap = {"StartAt": "Nap", "States": {"Nap": {"Type": "Wait", "Seconds": 1, "Next": "Up"},
                                        "Up": {"Type": "Pass", "Result": "awake", "End": True}}}

    async def scenario() -> None:
        await flows.deploy(key="nap", tenant="default", name="nap", definition=nap)
        started = time.time()
        ex = await _until_done(store, flows, await flows.start("nap", {}))
        assert ex.status == "SUCCEEDED" and json.loads(ex.output) == "awake"
        assert ex.ended_at - started >= 1.0
    asyncio.run(scenario())


def test_a_throttled_task_waits_and_is_no_failure(tmp_path: Path) -> None:
    left = {"n": 3}

    def busy(event: Any) -> str:
        if left["n"]:
            left["n"] -= 1
            raise Throttled("at max_instances")
        return "done"

    store, flows = _world(tmp_path, Functions({"busy": busy}))
    one = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "busy", "End": True}}}

    async def scenario() -> None:
        await flows.deploy(key="one", tenant="default", name="one", definition=one)
        ex = await _until_done(store, flows, await flows.start("one", {}))
        assert ex.status == "SUCCEEDED" and json.loads(ex.output) == "done"
    asyncio.run(scenario())


def test_a_step_whose_jobs_were_never_put_is_recovered(tmp_path: Path) -> None:
    functions = Functions({"price": lambda e: 10, "ship": lambda e: "no"})
    store, flows = _world(tmp_path, functions)

    class DeadQueue(StoreQueue):
        async def put(self, jobs: Any) -> list[bool]:
            raise JobQueueError("the control plane died here")

    async def scenario() -> None:
        await flows.deploy(key="order", tenant="default", name="order", definition=ORDER)
        dying = Workflows(store, DeadQueue(store), functions)
        with pytest.raises(JobQueueError):
            await dying.start("order", {"qty": 1})  # stored, its first Task's job never put
        [ex] = store.executions(status="RUNNING")
        assert await flows.recover() == 1
        ex = await _until_done(store, flows, ex.id)
        assert ex.status == "SUCCEEDED" and [k for k, _ in functions.calls] == ["price"]
    asyncio.run(scenario())


def test_a_job_delivered_again_is_dropped(tmp_path: Path) -> None:
    functions = Functions({"price": lambda e: 10})
    store, flows = _world(tmp_path, functions)
    one = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "price", "End": True}}}

    async def scenario() -> None:
        await flows.deploy(key="one", tenant="default", name="one", definition=one)
        ex_id = await flows.start("one", {})
        [lease] = await flows.queue.take("workflow", 10, wait_s=5)
        assert await flows.handle(lease) == "succeeded"
        assert await flows.handle(lease) == "stale"  # as a broker's redelivery would hand it again
        assert len(functions.calls) == 1 and store.execution(ex_id).status == "SUCCEEDED"
    asyncio.run(scenario())


@pytest.mark.parametrize(("definition", "said"), [
    ({"StartAt": "Nope", "States": {"A": {"Type": "Pass", "End": True}}}, "Nope"),
    ({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "globex/spy", "End": True}}}, "globex"),
    ("{not json: [", "invalid state machine"),
])
def test_a_bad_definition_is_refused_naming_the_fault(tmp_path: Path, definition: Any, said: str) -> None:
    _, flows = _world(tmp_path, Functions({}))
    with pytest.raises(InvalidConfig, match=said):
        asyncio.run(flows.deploy(key="acme/x", tenant="acme", name="x", definition=definition))
