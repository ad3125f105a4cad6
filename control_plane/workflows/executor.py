"""`Workflows`: deploy state machines and run their executions durably on the job queue.

The interpreter (`machine`) is pure; this is what makes its runs survive anything:

- An execution's state lives in the store and moves on by compare-and-set on its version, together
  with the history events of that step, in one transaction.
- What a step asks for (run a Task's function, wait until a time) becomes a job of the `workflow`
  queue, keyed `<execution>:<token>`, put after the step is stored. A job for a token the state no
  longer waits for (a duplicate delivery, a branch abandoned) is dropped: `advance` ignores it.
- A control plane that dies between storing a step and putting its jobs loses nothing: `recover`
  (at start, and every `recover_s`) puts the jobs of every running execution's outstanding work
  again (`pending_actions`), and the queue takes each key once.
- A timer is a job due at its time: a `Wait` of an hour across a restart ends on time, whoever runs.
- A Task runs its function as an async call's attempt would (same gateway and quotas, request id
  `<execution>:<token>`); being throttled or a node lost is no failure: the job comes back later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from control_plane.core import (
    BudgetExceeded,
    ConflictError,
    CumulusError,
    FunctionNotFound,
    InstanceStartFailed,
    InvalidConfig,
    NoCapacity,
    NodeUnavailable,
    NotFound,
    QuotaExceeded,
    Throttled,
)
from control_plane.jobs import Job, JobQueue, Lease, LeaseLost, Outcome, keep_lease, serve_queue, wait_backoff
from control_plane.workflows.asl import InvalidDefinition, Machine, parse
from control_plane.workflows.machine import (
    Action,
    Event,
    ExecutionInfo,
    HistoryEvent,
    InvokeTask,
    StartTimer,
    Step,
    TaskFailed,
    TaskSucceeded,
    TimerFired,
    advance,
    pending_actions,
    start,
)

log = logging.getLogger("cumulus.workflows")

QUEUE = "workflow"
WAITS = (Throttled, QuotaExceeded, BudgetExceeded, NoCapacity, NodeUnavailable, InstanceStartFailed)
MAX_ADVANCE_TRIES = 20

Run = Callable[[str, bytes, str], Awaitable[Outcome]]


class WorkflowStore(Protocol):
    """What workflows keep in the store (`control_plane.store.Store`)."""

    def put_workflow(self, row: dict[str, Any]) -> Any: ...
    def workflow(self, key: str) -> Any: ...
    def start_execution(self, row: dict[str, Any], history: Sequence[dict[str, Any]]) -> bool: ...
    def execution(self, execution_id: str) -> Any: ...
    def executions(self, *, workflow: str | None = None, tenant: str | None = None,
                   status: str | None = None, limit: int = 100) -> list[Any]: ...
    def advance_execution(self, execution_id: str, *, version: int, values: dict[str, Any],
                          history: Sequence[dict[str, Any]]) -> bool: ...


def _history(events: Sequence[HistoryEvent]) -> list[dict[str, Any]]:
    return [{"type": e.type, "state_name": e.state_name, "timestamp": e.timestamp, "details": e.details}
            for e in events]


def resource_function(resource: str, tenant: str) -> str:
    """The function a Task's `Resource` names — `NAME`, `TENANT/NAME`, or an ARN ending in
    `function:NAME` — as a key in `tenant` (InvalidConfig for another tenant's)."""
    name = resource.rsplit("function:", 1)[-1] if "function:" in resource else resource
    owner, _, bare = name.rpartition("/")
    if owner and owner != tenant:
        raise InvalidConfig(f"a workflow of tenant {tenant} runs functions of {tenant} only, not {name!r}")
    return bare if tenant == "default" else f"{tenant}/{bare}"


class Workflows:
    """Workflows of every tenant, and their executions."""

    def __init__(self, store: WorkflowStore, queue: JobQueue, run: Run, *, concurrency: int = 32,
                 recover_s: float = 30.0, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.queue = queue
        self.run = run
        self.concurrency = concurrency
        self.recover_s = recover_s
        self.wall = wall
        self._machines: dict[str, Machine] = {}
        # Events waiting to be applied, by execution, and the task applying them (see `feed`).
        self._inbox: dict[str, list[tuple[Event, asyncio.Future[str]]]] = {}
        self._feeders: dict[str, asyncio.Task[None]] = {}

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def machine(self, definition: str) -> Machine:
        """The parsed definition (cached: executions of one version share it)."""
        found = self._machines.get(definition)
        if found is None:
            found = parse(definition)
            if len(self._machines) > 256:
                self._machines.clear()
            self._machines[definition] = found
        return found

    # -- workflows and executions ---------------------------------------------------------------------
    async def deploy(self, *, key: str, tenant: str, name: str, definition: str | dict[str, Any]) -> Any:
        """Store a workflow (JSON or YAML text, or a dict), checked whole first (InvalidConfig
        naming the fault and its place)."""
        try:
            machine = parse(definition)
        except InvalidDefinition as exc:
            raise InvalidConfig(f"invalid state machine: {exc}") from None
        text = json.dumps(machine.definition)
        for resource in task_resources(machine.definition):
            resource_function(resource, tenant)
        now = self.wall()
        return await self._db(self.store.put_workflow, {"key": key, "tenant": tenant, "name": name,
                                                        "definition": text, "created_at": now,
                                                        "updated_at": now})

    async def start(self, key: str, input: Any, *, name: str | None = None,
                    execution_id: str | None = None) -> str:
        """Start an execution of workflow `key` with `input`; its id (ConflictError for an id
        taken — `execution_id` makes a start idempotent —, NotFound for no such workflow)."""
        wf = await self._db(self.store.workflow, key)
        if wf is None:
            raise NotFound(f"no workflow {key!r}")
        execution_id = execution_id or uuid.uuid4().hex
        name = name or execution_id
        machine = self.machine(wf.definition)
        now = self.wall()
        step = start(machine, input, execution=ExecutionInfo(execution_id, name, key, wf.name), now=now)
        row = {"id": execution_id, "workflow": key, "tenant": wf.tenant, "name": name,
               "definition": wf.definition, "status": "RUNNING", "state": step.state, "version": 1,
               "input": json.dumps(input), "started_at": now, **_ended(step, now)}
        if not await self._db(self.store.start_execution, row, _history(step.history)):
            raise ConflictError(f"an execution {execution_id!r} exists")
        await self._act(execution_id, step.actions)
        return execution_id

    async def _act(self, execution_id: str, actions: Sequence[Action]) -> None:
        jobs = []
        for action in actions:
            body: dict[str, Any] = {"execution": execution_id, "token": action.token}
            if isinstance(action, InvokeTask):
                body.update(kind="task", resource=action.resource, input=json.dumps(action.input),
                            timeout_s=action.timeout_s)
                jobs.append(Job(QUEUE, f"{execution_id}:{action.token}", body))
            elif isinstance(action, StartTimer):
                body.update(kind="timer", fire_at=action.fire_at)
                jobs.append(Job(QUEUE, f"{execution_id}:{action.token}", body, available_at=action.fire_at))
        if jobs:
            await self.queue.put(jobs)

    async def recover(self) -> int:
        """Put the jobs of every running execution's outstanding work again (the queue takes a key
        once): what a control plane that died between a step and its jobs left."""
        count = 0
        for ex in await self._db(self.store.executions, status="RUNNING", limit=100_000):
            actions = pending_actions(self.machine(ex.definition), ex.state)
            await self._act(ex.id, actions)
            count += len(actions)
        return count

    # -- running -------------------------------------------------------------------------------------
    async def serve(self, stop: asyncio.Event) -> None:
        """Run the workflow queue's jobs until `stop` (and recover every `recover_s`)."""
        try:
            await serve_queue(self.queue, QUEUE, self.handle, stop, concurrency=self.concurrency,
                              every=(self.recover_s, self.recover))
        finally:  # what was being applied is applied again from the jobs, redelivered
            feeders = list(self._feeders.values())
            for feeder in feeders:
                feeder.cancel()
            await asyncio.gather(*feeders, return_exceptions=True)

    async def handle(self, lease: Lease) -> str:
        """One delivery of a workflow job; what came of it."""
        body = lease.body
        ex = await self._db(self.store.execution, body["execution"])
        if ex is None or ex.status != "RUNNING" or body["token"] not in ex.state.get("pending", {}):
            with contextlib.suppress(LeaseLost):  # another taker holds it: it finds it stale too
                await self.queue.done(lease)  # ended, or this token's work is done or abandoned
            return "stale"
        event: Event
        if body["kind"] == "timer":
            if body["fire_at"] > self.wall():  # a broker's early hand-out
                await self.queue.retry(lease, body["fire_at"] - self.wall())
                return "early"
            event = TimerFired(body["token"])
        else:
            keeper = asyncio.create_task(keep_lease(self.queue, lease))
            try:
                event = await self._task(ex, body)
            except WAITS as exc:
                delay = wait_backoff(lease.deliveries)
                log.info("event=workflow_task_waits execution=%s why=%s", ex.id, exc.type)
                await self.queue.retry(lease, delay)
                return "waiting"
            finally:
                keeper.cancel()
        result = await self.feed(ex.id, event)
        with contextlib.suppress(LeaseLost):  # its lease ended meanwhile: the next holder finds it stale
            await self.queue.done(lease)
        return result

    async def _task(self, ex: Any, body: dict[str, Any]) -> Event:
        token = body["token"]
        try:
            key = resource_function(body["resource"], ex.tenant)
            outcome = await self.run(key, body["input"].encode(), f"{ex.id}:{token}"[:128])
        except (FunctionNotFound, InvalidConfig) as exc:
            return TaskFailed(token, "States.TaskFailed", exc.message)
        except CumulusError as exc:
            if isinstance(exc, WAITS):
                raise
            return TaskFailed(token, exc.type, exc.message)
        if outcome.status < 400:
            try:
                return TaskSucceeded(token, json.loads(outcome.body))
            except ValueError:
                return TaskFailed(token, "States.Runtime", "the task's output is not JSON")
        try:
            error = json.loads(outcome.body)["error"]
            kind, cause = str(error.get("type") or "Error"), str(error.get("message") or "")
        except (ValueError, KeyError, TypeError, AttributeError):
            kind, cause = "Error", outcome.body.decode("utf-8", "replace")
        if kind == "FunctionTimeout":
            kind = "States.Timeout"
        return TaskFailed(token, kind, cause)

    async def feed(self, execution_id: str, event: Event) -> str:
        """Advance the execution by `event`, then put the jobs of what the step asks for; what
        came of it. The events of one execution that arrive while it is being advanced are applied
        together, in one step (one read, one compare-and-set, one put of their jobs), by one task
        of this control plane: the results of a Map's many branches neither rewrite the execution's
        state one by one nor race each other for it."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inbox.setdefault(execution_id, []).append((event, done))
        if execution_id not in self._feeders:
            self._feeders[execution_id] = asyncio.create_task(self._drain(execution_id))
        return await done

    async def _drain(self, execution_id: str) -> None:
        """Apply the execution's waiting events, batch by batch, until none waits (the feeder's
        entry goes with the last look at the inbox, in the same turn of the loop: an event put
        after it starts a feeder of its own)."""
        try:
            while batch := self._inbox.pop(execution_id, []):
                try:
                    results = await self._advance(execution_id, [event for event, _ in batch])
                except BaseException as exc:
                    for _, fut in batch + self._inbox.pop(execution_id, []):
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._feeders.pop(execution_id, None)

    async def _advance(self, execution_id: str, events: Sequence[Event]) -> list[str]:
        """Apply `events` in order in one step (compare-and-set, again while another control plane
        moves the execution on); what came of each."""
        for _ in range(MAX_ADVANCE_TRIES):
            ex = await self._db(self.store.execution, execution_id)
            if ex is None or ex.status != "RUNNING":
                return ["stale"] * len(events)
            now = self.wall()
            machine = self.machine(ex.definition)
            state, actions, history, outcome = ex.state, [], [], None
            results = []
            for event in events:
                if outcome is not None:  # ended by an earlier event of the batch
                    results.append("stale")
                    continue
                step = advance(machine, state, event, now=now)
                if step.state is state and not step.actions and not step.history:
                    results.append("duplicate")
                    continue
                state, outcome = step.state, step.done
                actions += step.actions
                history += step.history
                results.append("advanced" if outcome is None else outcome.status.lower())
            if state is ex.state and not history:
                return results
            values = {"state": state, **_ended(Step(state, actions, history, outcome), now)}
            if await self._db(self.store.advance_execution, ex.id, version=ex.version, values=values,
                              history=_history(history)):
                await self._act(ex.id, actions)
                return results
            await asyncio.sleep(random.uniform(0.0, 0.05))
        raise RuntimeError(f"execution {execution_id} kept moving under this worker")


def _ended(step: Step, now: float) -> dict[str, Any]:
    if step.done is None:
        return {}
    done = step.done
    return {"status": done.status, "output": None if done.output is None and done.status == "FAILED"
            else json.dumps(done.output), "error": done.error, "cause": done.cause, "ended_at": now}


def task_resources(node: Any) -> list[str]:
    """Every Task's Resource in a definition (branches and iterations included)."""
    out: list[str] = []
    if isinstance(node, Mapping):
        if node.get("Type") == "Task" and isinstance(node.get("Resource"), str):
            out.append(node["Resource"])
        for value in node.values():
            out.extend(task_resources(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(task_resources(value))
    return out


