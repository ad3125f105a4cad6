"""Async invocations: accepted at once (202), run later by the workers of every control plane, with
retries, an event age limit, and on-success / on-failure destinations (another function, or the
dead-letter queue).

The flow of one call, whose request id is its job's key:

1. `enqueue` puts the job (durable once the 202 goes out), then records the call as `queued` (if
   that record is lost with a crash, the worker makes it).
2. A worker takes the job and moves the call to `running` for attempt n — a compare-and-set on
   (state, attempts), so two workers holding the same job (at-least-once) never both run it.
3. It calls the function through the same gateway, quotas and limits as a synchronous call. Attempt
   1 has the call's request id, attempt n the id `<request id>-<n>`: what a function, its logs and
   its usage records see. A delivery of an attempt that may already have run (its worker died) runs
   it again under the same id, and is counted in `duplicates`.
4. The outcome: success → `succeeded` (and the on-success destination); a function error → retried
   after `retry_base_s` x 2^(n-1) while retries are left, then the on-failure destination (`dlq`:
   a dead letter, kept with its event until redriven). Being throttled (the function at its
   `max_instances`, the tenant at a quota, no capacity) or the platform failing under the call (a
   node lost) is not an attempt: the job comes back later. An event older than `max_event_age_s`
   is dead-lettered.

Destinations get Lambda's record: `{"version", "timestamp", "requestContext": {"requestId",
"functionArn", "condition", "approximateInvokeCount"}, "requestPayload", "responseContext",
"responsePayload"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from control_plane.core import (
    BudgetExceeded,
    CumulusError,
    FunctionNotFound,
    InstanceStartFailed,
    NoCapacity,
    NodeUnavailable,
    QueueUnavailable,
    QuotaExceeded,
    Throttled,
    request_id,
)
from control_plane.jobs.queue import Job, JobQueue, JobQueueError, Lease
from control_plane.jobs.worker import keep_lease, serve_queue, wait_backoff

log = logging.getLogger("cumulus.jobs")

QUEUE = "invoke"
STATES = ("queued", "running", "retrying", "succeeded", "failed", "dead_lettered")
DELAYED = (Throttled, QuotaExceeded, BudgetExceeded, NoCapacity)  # waits, then tries again
PLATFORM = (NodeUnavailable, InstanceStartFailed)  # not the function's fault: not an attempt


@dataclass(frozen=True, slots=True)
class AsyncSettings:
    """A function's async settings (from its latest version)."""

    tenant: str
    max_retries: int = 2
    max_event_age_s: float = 21600.0
    on_success: str | None = None  # "function:NAME" or None
    on_failure: str | None = "dlq"  # "dlq", "function:NAME" or None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run of the function answered: its HTTP status and body."""

    status: int
    body: bytes


Run = Callable[[str, bytes, str], Awaitable[Outcome]]
"""Call function `key` with the event under request id `call_id` (raises CumulusError as a sync
call would: throttled, not found, node lost...)."""


class AsyncCallStore(Protocol):
    """What the async calls keep in the store (`control_plane.store.Store`)."""

    def record_async_call(self, row: dict[str, Any]) -> bool: ...
    def record_async_calls(self, rows: Sequence[dict[str, Any]]) -> int: ...
    def async_call(self, request_id: str) -> Any: ...
    def begin_attempt(self, row: dict[str, Any], *, now: float) -> tuple[str, int]: ...
    def move_async_call(self, request_id: str, *, was: tuple[str, int], to: dict[str, Any]) -> bool: ...
    def count_duplicate(self, request_id: str) -> None: ...
    def dead_letter(self, request_id: str, *, attempts: int, from_state: str, letter: dict[str, Any],
                    now: float) -> bool: ...
    def take_dead_letters(self, function: str, request_ids: Sequence[str] = (), *,
                          now: float) -> list[Any]: ...


def attempt_id(request: str, attempt: int) -> str:
    """The request id attempt `attempt` of an async call runs under."""
    return request if attempt <= 1 else f"{request}-{attempt}"


class AsyncCalls:
    """Enqueue async calls, and run them (`serve`: this control plane's workers)."""

    def __init__(self, store: AsyncCallStore, queue: JobQueue, run: Run,
                 settings_of: Callable[[str], AsyncSettings | None], *, concurrency: int = 32,
                 retry_base_s: float = 60.0, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.queue = queue
        self.run = run
        self.settings_of = settings_of
        self.concurrency = concurrency
        self.retry_base_s = retry_base_s
        self.wall = wall
        # Calls accepted and not yet put, and the task putting them (see `_accept`).
        self._accepting: list[tuple[Job, dict[str, Any], asyncio.Future[None]]] = []
        self._accepter: asyncio.Task[None] | None = None

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _move(self, rid: str, was: tuple[str, int], to: dict[str, Any]) -> bool:
        """Compare-and-set the call's state (False: another worker moved it first)."""
        return bool(await self._db(self.store.move_async_call, rid, was=was, to=to))

    # -- accepting ---------------------------------------------------------------------------------
    async def enqueue(self, function: str, tenant: str, event: bytes, *, source: str = "api",
                      key: str | None = None, delay_s: float = 0.0) -> str:
        """Accept an async call of `function`; its request id. `key` makes it idempotent (a
        schedule's firing, a rule's target): the same key is the same call, accepted once."""
        rid = key or request_id()
        now = self.wall()
        body = {"request_id": rid, "function": function, "tenant": tenant, "event": event.decode(),
                "enqueued_at": now, "source": source}
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._accepting.append((Job(QUEUE, rid, body, available_at=now + delay_s), _row(body, now), accepted))
        if self._accepter is None:
            self._accepter = asyncio.create_task(self._accept())
        await accepted
        return rid

    async def _accept(self) -> None:
        """Put the calls accepted meanwhile, together: one put of their jobs and one write of their
        records per batch (calls arriving at once, from many callers, share them), then answer
        each (QueueUnavailable to all of a batch the queue refused)."""
        try:
            await asyncio.sleep(0)  # the calls arriving in this turn of the loop join the batch
            while self._accepting:
                batch, self._accepting = self._accepting, []
                try:
                    new = await self.queue.put([job for job, _, _ in batch])
                except JobQueueError as exc:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(QueueUnavailable(f"the call was not queued: {exc}"))
                    continue
                rows = [row for (_, row, _), fresh in zip(batch, new, strict=True) if fresh]
                if rows:
                    with contextlib.suppress(Exception):  # queued: the worker records a call if this fails
                        await self._db(self.store.record_async_calls, rows)
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        except BaseException as exc:
            for _, _, fut in self._accepting:
                if not fut.done():
                    fut.set_exception(QueueUnavailable(f"the call was not queued: {exc!r}"))
            self._accepting = []
            raise
        finally:
            self._accepter = None

    async def redrive(self, function: str, request_ids: Sequence[str] = ()) -> list[str]:
        """Queue the function's dead letters again (those named, or all); their request ids."""
        now = self.wall()
        letters = await self._db(self.store.take_dead_letters, function, request_ids, now=now)
        jobs = [Job(QUEUE, f"{letter.request_id}:redrive:{now:.6f}",
                    {"request_id": letter.request_id, "function": letter.function, "tenant": letter.tenant,
                     "event": letter.event.decode(), "enqueued_at": now, "source": "redrive"})
                for letter in letters]
        if jobs:
            await self.queue.put(jobs)
        return [letter.request_id for letter in letters]

    # -- running -----------------------------------------------------------------------------------
    async def serve(self, stop: asyncio.Event) -> None:
        """Take and run jobs until `stop`, at most `concurrency` at once."""
        await serve_queue(self.queue, QUEUE, self.handle, stop, concurrency=self.concurrency)

    async def handle(self, lease: Lease) -> str:
        """Run one delivery of a job; what became of the call (for tests and logs)."""
        body = lease.body
        rid, function = str(body["request_id"]), str(body["function"])
        now = self.wall()
        settings = await self._db(self.settings_of, function)
        if settings is None:
            gone = {"type": "FunctionNotFound", "message": f"no function named {function!r}"}
            return await self._dead_unless_ended(lease, "function_gone", gone)
        if now - float(body["enqueued_at"]) > settings.max_event_age_s:
            return await self._dead_unless_ended(lease, "event_too_old",
                                                 {"type": "EventTooOld", "message": f"the event waited more "
                                                  f"than {settings.max_event_age_s:g}s"})
        # One transaction: recorded if its enqueue died first; a duplicate if it ended; the next
        # attempt (or, if its last worker died, the same one again) moved to running.
        kind, attempt = await self._db(self.store.begin_attempt, _row(body, now), now=now)
        if kind == "ended":  # a delivery after the end: nothing to do
            await self.queue.done(lease)
            return "duplicate"
        if kind == "raced":
            await self.queue.retry(lease, 0.5)  # another worker moved it: look again
            return "raced"
        keeper = asyncio.create_task(keep_lease(self.queue, lease))
        try:
            outcome = await self.run(function, body["event"].encode(), attempt_id(rid, attempt))
        except DELAYED + PLATFORM as exc:
            keeper.cancel()
            delay = wait_backoff(lease.deliveries)
            await self._move(rid, ("running", attempt),
                             {"state": "queued", "attempts": attempt - 1, "updated_at": self.wall(),
                              "next_attempt_at": self.wall() + delay, "error": _error_of(exc)})
            await self.queue.retry(lease, delay)
            return "delayed"
        except FunctionNotFound as exc:
            keeper.cancel()
            return await self._dead(lease, rid, ("running", attempt), "function_gone", _error_of(exc))
        except CumulusError as exc:
            outcome = Outcome(exc.status, json.dumps(exc.body()).encode())
        finally:
            keeper.cancel()
        return await self._settle(lease, settings, attempt, outcome)

    async def _settle(self, lease: Lease, settings: AsyncSettings, attempt: int, outcome: Outcome) -> str:
        body, now = lease.body, self.wall()
        rid = str(body["request_id"])
        if outcome.status < 400:
            if await self._move(rid, ("running", attempt), {"state": "succeeded", "updated_at": now,
                                                            "error": None}):
                await self._destination(settings.on_success, body, settings, attempt, "Success", outcome)
            await self.queue.done(lease)
            return "succeeded"
        error = _error_body(outcome)
        if attempt <= settings.max_retries:
            delay = self.retry_base_s * 2 ** (attempt - 1)
            if await self._move(rid, ("running", attempt), {"state": "retrying", "updated_at": now,
                                                            "next_attempt_at": now + delay, "error": error}):
                await self.queue.retry(lease, delay)
            else:
                await self.queue.done(lease)
            return "retrying"
        if settings.on_failure == "dlq":
            return await self._dead(lease, rid, ("running", attempt), "retries_exhausted", error)
        if await self._move(rid, ("running", attempt), {"state": "failed", "updated_at": now,
                                                        "error": error}):
            await self._destination(settings.on_failure, body, settings, attempt, "RetriesExhausted", outcome)
        await self.queue.done(lease)
        return "failed"

    async def _dead_unless_ended(self, lease: Lease, reason: str, error: dict[str, Any]) -> str:
        """Dead-letter the call before an attempt (its function gone, its event too old), unless it
        has ended (then the delivery is a duplicate)."""
        body = lease.body
        rid = str(body["request_id"])
        await self._db(self.store.record_async_call, _row(body, self.wall()))  # if its enqueue died first
        call = await self._db(self.store.async_call, rid)
        if call.state in ("succeeded", "failed", "dead_lettered"):
            await self._db(self.store.count_duplicate, rid)
            await self.queue.done(lease)
            return "duplicate"
        return await self._dead(lease, rid, (call.state, call.attempts), reason, error)

    async def _dead(self, lease: Lease, rid: str, was: tuple[str, int], reason: str,
                    error: dict[str, Any]) -> str:
        body = lease.body
        letter = {"tenant": body["tenant"], "function": body["function"], "event": body["event"].encode(),
                  "reason": reason, "error": error}
        await self._db(self.store.dead_letter, rid, attempts=was[1], from_state=was[0], letter=letter,
                       now=self.wall())
        await self.queue.done(lease)
        return "dead_lettered"

    async def _destination(self, target: str | None, body: dict[str, Any], settings: AsyncSettings,
                           attempt: int, condition: str, outcome: Outcome) -> None:
        if not target or not target.startswith("function:"):
            return
        try:
            payload: Any = json.loads(body["event"])
        except ValueError:
            payload = body["event"]
        try:
            response: Any = json.loads(outcome.body)
        except ValueError:
            response = outcome.body.decode("utf-8", "replace")
        record = {"version": "1.0", "timestamp": _iso(self.wall()),
                  "requestContext": {"requestId": body["request_id"], "functionArn": body["function"],
                                     "condition": condition, "approximateInvokeCount": attempt},
                  "requestPayload": payload,
                  "responseContext": {"statusCode": outcome.status, "executedVersion": "$LATEST"},
                  "responsePayload": response}
        tenant, _, name = target.split(":", 1)[1].rpartition("/")
        if tenant and tenant != settings.tenant:  # a destination is in the function's own tenant
            log.warning("event=destination_refused request=%s target=%s", body["request_id"], target)
            return
        key = name if settings.tenant == "default" else f"{settings.tenant}/{name}"
        await self.enqueue(key, settings.tenant, json.dumps(record).encode(),
                           source=f"destination:{body['request_id']}",
                           key=f"{body['request_id']}:{condition}")


def _row(body: dict[str, Any], now: float) -> dict[str, Any]:
    return {"request_id": body["request_id"], "tenant": body["tenant"], "function": body["function"],
            "state": "queued", "attempts": 0, "enqueued_at": float(body["enqueued_at"]), "updated_at": now,
            "source": body.get("source", "api"), "duplicates": 0}


def _error_of(exc: CumulusError) -> dict[str, Any]:
    return {"type": exc.type, "message": exc.message[:2000]}


def _error_body(outcome: Outcome) -> dict[str, Any]:
    try:
        error = json.loads(outcome.body)["error"]
        return {"type": str(error.get("type", "Error")), "message": str(error.get("message", ""))[:2000]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {"type": "Error", "message": outcome.body.decode("utf-8", "replace")[:2000]}


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
