"""`Schedules`: add, list and remove schedules, and fire them (`run`, on every control plane).

A firing is an async call of the schedule's function (`control_plane.jobs.AsyncCalls`) whose event
is EventBridge's "Scheduled Event" with the firing's scheduled time in `time`, the schedule's data
in `detail`. Firing never happens twice, also with several control planes running `run`: the call
is enqueued under the key `schedule:<key>:<scheduled time>` (the queue takes a key once), and only
then is the schedule moved on by compare-and-set on its `next_fire_at`. A control plane that dies
between the two leaves the firing to the next tick (of any control plane), which finds the key
taken. A firing missed while no control plane ran is fired once on return, for its latest missed
time (`catch_up`), or skipped; one late by at most `grace_s` (two ticks) is simply on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from control_plane.core import ConflictError, CumulusError, InvalidConfig, NotFound
from control_plane.schedules.spec import InvalidSchedule, When

log = logging.getLogger("cumulus.schedules")

MAX_DATA_BYTES = 64 * 1024


class ScheduleStore(Protocol):
    """What schedules keep in the store (`control_plane.store.Store`)."""

    def add_schedule(self, row: dict[str, Any]) -> Any: ...
    def schedule(self, key: str) -> Any: ...
    def schedules(self, tenant: str | None = None) -> list[Any]: ...
    def delete_schedule(self, key: str) -> bool: ...
    def due_schedules(self, now: float, limit: int = 500) -> list[Any]: ...
    def advance_schedule(self, key: str, *, was: float, next_fire_at: float,
                         fired_at: float | None) -> bool: ...


class Enqueue(Protocol):
    async def __call__(self, function: str, tenant: str, event: bytes, *, source: str = "api",
                       key: str | None = None, delay_s: float = 0.0) -> str: ...


def when_of(row: Any) -> When:
    return When(cron=row.cron, tz=row.tz, rate_s=row.rate_s, anchor=row.anchor)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Schedules:
    """Schedules of every tenant, and their firing."""

    def __init__(self, store: ScheduleStore, enqueue: Enqueue, *, tick_s: float = 1.0,
                 grace_s: float | None = None, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.enqueue = enqueue
        self.tick_s = tick_s
        self.grace_s = 2 * tick_s if grace_s is None else grace_s  # late by a tick or two: on time
        self.wall = wall

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def add(self, *, key: str, tenant: str, name: str, function: str, cron: str | None,
                  rate: str | None, tz: str = "UTC", data: str = "{}", catch_up: bool = True) -> Any:
        """A new schedule (InvalidConfig for a bad cron, rate, zone or data; Conflict if the name
        is taken); its first firing is the first due after now."""
        now = self.wall()
        try:
            when = When.of(cron=cron, rate=rate, tz=tz, anchor=now)
        except InvalidSchedule as exc:
            raise InvalidConfig(str(exc)) from None
        if len(data.encode()) > MAX_DATA_BYTES:
            raise InvalidConfig(f"a schedule's data is at most {MAX_DATA_BYTES} bytes")
        try:
            json.loads(data)
        except ValueError as exc:
            raise InvalidConfig(f"a schedule's data is JSON: {exc}") from None
        first = when.anchor + when.rate_s if when.rate_s is not None else when.next_after(now)
        row = {"key": key, "tenant": tenant, "name": name, "function": function, "cron": when.cron,
               "rate_s": when.rate_s, "tz": when.tz, "anchor": when.anchor, "data": data,
               "catch_up": catch_up, "next_fire_at": first, "created_at": now}
        made = await self._db(self.store.add_schedule, row)
        if made is None:
            raise ConflictError(f"a schedule named {name!r} exists in tenant {tenant}")
        return made

    async def remove(self, key: str) -> None:
        if not await self._db(self.store.delete_schedule, key):
            raise NotFound(f"no schedule {key!r}")

    # -- firing ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Fire what is due, every `tick_s`, until `stop`."""
        failures = 0
        while not stop.is_set():
            try:
                await self.tick()
                failures = 0
            except Exception as exc:  # the database or the queue is away: next tick
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("event=schedules_tick_failed failures=%d error=%r", failures, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick_s)

    async def tick(self) -> int:
        """Fire every due schedule once; how many firings were queued."""
        fired = 0
        for row in await self._db(self.store.due_schedules, self.wall()):
            fired += await self.fire(row)
        return fired

    async def fire(self, row: Any) -> int:
        now = self.wall()
        when = when_of(row)
        first = float(row.next_fire_at)
        if row.catch_up:
            at: float | None = when.last_due(first, now)
        else:
            at = when.last_due(first, now)
            at = at if now - at <= self.grace_s else None  # missed while no control plane ran: skipped
        if at is not None:
            event = self.event(row, at)
            try:
                await self.enqueue(row.function, row.tenant, json.dumps(event).encode(),
                                   source=f"schedule:{row.name}", key=f"schedule:{row.key}:{at:.3f}")
            except CumulusError as exc:
                log.warning("event=schedule_fire_failed schedule=%s error=%s", row.key, exc.message)
                return 0  # tried again next tick: the schedule did not move on
        advanced = await self._db(self.store.advance_schedule, row.key, was=first,
                                  next_fire_at=when.next_after(max(now, at or now)), fired_at=at)
        if at is not None and advanced:
            log.info("event=schedule_fired schedule=%s at=%s", row.key, iso(at))
        elif at is None and advanced:
            log.info("event=schedule_skipped schedule=%s missed=%s", row.key, iso(first))
        return int(at is not None and advanced)

    @staticmethod
    def event(row: Any, at: float) -> dict[str, Any]:
        """EventBridge's scheduled event for a firing at `at`."""
        ident = hashlib.sha256(f"{row.key}:{at:.3f}".encode()).hexdigest()
        uid = f"{ident[:8]}-{ident[8:12]}-{ident[12:16]}-{ident[16:20]}-{ident[20:32]}"
        return {"version": "0", "id": uid,
                "detail-type": "Scheduled Event", "source": "cumulus.scheduler", "account": row.tenant,
                "time": iso(at), "region": "local", "resources": [f"schedule/{row.key}"],
                "detail": json.loads(row.data)}
