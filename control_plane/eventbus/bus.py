"""`EventBus`: a tenant's bus takes EventBridge-shaped events and routes each to the targets of the
rules whose patterns it matches, as async calls (so routing has the queue's guarantees: a put that
answered is never lost, retries and dead letters apply).

An event routed to a rule's target is queued under the key `bus:<event id>:<rule>`: the same
event put twice (a client retrying a put whose answer it lost) reaches each target once. Rules are
compiled once and kept per tenant; a control plane reloads them when they change (it checks the
store's mark of them every `refresh_s`, so a rule added on another control plane routes here
within that time).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from control_plane.core import ConflictError, InvalidConfig, InvalidEvent, NotFound
from control_plane.eventbus.index import RuleIndex
from control_plane.eventbus.patterns import (
    InvalidPattern,
    InvalidTransform,
    Pattern,
    Transform,
    compile_pattern,
    compile_transform,
)

MAX_ENTRIES = 10  # per put, as EventBridge's PutEvents
MAX_EVENT_BYTES = 256 * 1024
REQUIRED = ("source", "detail-type", "detail")


class RuleStore(Protocol):
    """What the bus keeps in the store (`control_plane.store.Store`)."""

    def add_rule(self, row: dict[str, Any]) -> Any: ...
    def rules(self, tenant: str | None = None) -> list[Any]: ...
    def delete_rule(self, key: str) -> bool: ...
    def rules_mark(self) -> tuple[int, float]: ...


class Enqueue(Protocol):
    async def __call__(self, function: str, tenant: str, event: bytes, *, source: str = "api",
                       key: str | None = None, delay_s: float = 0.0) -> str: ...


class StartWorkflow(Protocol):
    async def __call__(self, key: str, input: Any, *, name: str | None = None,
                       execution_id: str | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class CompiledRule:
    key: str
    name: str
    pattern: Pattern
    target: str  # the function's key, or `workflow:KEY`
    transform: Transform | None


NO_RULES: RuleIndex[CompiledRule] = RuleIndex([])


def check_rule(pattern: Any, input_paths: Mapping[str, str] | None,
               input_template: str | None) -> tuple[Pattern, Transform | None]:
    """The rule's pattern and transform, compiled (InvalidConfig naming the fault)."""
    try:
        compiled = compile_pattern(pattern if isinstance(pattern, str) else json.dumps(pattern))
    except InvalidPattern as exc:
        raise InvalidConfig(f"invalid event pattern: {exc}") from None
    transform = None
    if input_template is not None or input_paths:
        try:
            transform = compile_transform(input_paths or {}, input_template or "<aws.events.event.json>")
        except InvalidTransform as exc:
            raise InvalidConfig(f"invalid input transform: {exc}") from None
    return compiled, transform


def pattern_matches(pattern: Any, event: Any) -> bool:
    """Whether `event` matches `pattern`, as EventBridge's TestEventPattern (InvalidConfig for a bad
    pattern, InvalidEvent for an event that is not a JSON object)."""
    compiled, _ = check_rule(pattern, None, None)
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError:
            raise InvalidEvent("the event is not JSON") from None
    if not isinstance(event, Mapping):
        raise InvalidEvent("the event is a JSON object")
    return compiled.matches(event)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class EventBus:
    """Every tenant's bus: its rules, and the events put to it."""

    def __init__(self, store: RuleStore, enqueue: Enqueue, *, refresh_s: float = 2.0,
                 start_workflow: StartWorkflow | None = None, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.enqueue = enqueue
        self.start_workflow = start_workflow
        self.refresh_s = refresh_s
        self.wall = wall
        self._rules: dict[str, RuleIndex[CompiledRule]] = {}
        self._mark: tuple[int, float] | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- rules ---------------------------------------------------------------------------------------
    async def add_rule(self, *, key: str, tenant: str, name: str, pattern: Any, target: str,
                       input_paths: Mapping[str, str] | None = None,
                       input_template: str | None = None) -> Any:
        compiled, _ = check_rule(pattern, input_paths, input_template)
        row = {"key": key, "tenant": tenant, "name": name, "pattern": compiled.text, "target": target,
               "input_paths": dict(input_paths) if input_paths else None, "input_template": input_template,
               "created_at": self.wall()}
        made = await self._db(self.store.add_rule, row)
        if made is None:
            raise ConflictError(f"a rule named {name!r} exists in tenant {tenant}")
        self._mark = None  # reload at the next event
        return made

    async def remove_rule(self, key: str) -> None:
        if not await self._db(self.store.delete_rule, key):
            raise NotFound(f"no rule {key!r}")
        self._mark = None

    async def _current(self, tenant: str) -> RuleIndex[CompiledRule]:
        now = time.monotonic()
        if self._mark is None or now - self._checked >= self.refresh_s:
            async with self._lock:
                mark = await self._db(self.store.rules_mark)
                self._checked = time.monotonic()
                if mark != self._mark:
                    by_tenant: dict[str, list[CompiledRule]] = {}
                    for row in await self._db(self.store.rules):
                        pattern, transform = check_rule(row.pattern, row.input_paths, row.input_template)
                        by_tenant.setdefault(row.tenant, []).append(
                            CompiledRule(row.key, row.name, pattern, row.target, transform))
                    self._rules = {tenant: RuleIndex([(r.pattern, r) for r in rules])
                                   for tenant, rules in by_tenant.items()}
                    self._mark = mark
        return self._rules.get(tenant, NO_RULES)

    async def _start(self, rule: CompiledRule, payload: Any, key: str) -> None:
        """A workflow target: an execution, whose id is the event's and rule's (started once)."""
        if self.start_workflow is None:
            raise InvalidConfig("this control plane runs no workflows")
        execution_id = hashlib.sha256(key.encode()).hexdigest()[:32]
        with contextlib.suppress(ConflictError):  # the same event again: already started
            await self.start_workflow(rule.target.removeprefix("workflow:"), payload,
                                      name=f"{rule.name}-{execution_id[:12]}", execution_id=execution_id)

    # -- events --------------------------------------------------------------------------------------
    @staticmethod
    def normalize(entry: Any, tenant: str, now: float) -> dict[str, Any]:
        """An event as routed: the entry's fields, with `id`, `time`, `account`, `region` and
        `resources` filled in where it has none (InvalidEvent for a malformed one)."""
        if not isinstance(entry, Mapping):
            raise InvalidEvent("an event is a JSON object")
        missing = [f for f in REQUIRED if f not in entry]
        if missing:
            raise InvalidEvent(f"an event needs {', '.join(missing)}")
        if not isinstance(entry["source"], str) or not entry["source"]:
            raise InvalidEvent("an event's source is a non-empty string")
        if not isinstance(entry["detail-type"], str):
            raise InvalidEvent("an event's detail-type is a string")
        detail = entry["detail"]
        if isinstance(detail, str):  # PutEvents' Detail is a JSON string
            try:
                detail = json.loads(detail)
            except ValueError:
                raise InvalidEvent("an event's detail is JSON (an object, or its text)") from None
        if not isinstance(detail, dict):
            raise InvalidEvent("an event's detail is a JSON object")
        event = {"version": "0", "id": str(entry.get("id") or uuid.uuid4()),
                 "detail-type": entry["detail-type"],
                 "source": entry["source"], "account": tenant, "time": str(entry.get("time") or iso(now)),
                 "region": "local", "resources": list(entry.get("resources") or []), "detail": detail}
        if len(json.dumps(event)) > MAX_EVENT_BYTES:
            raise InvalidEvent(f"an event is at most {MAX_EVENT_BYTES} bytes")
        return event

    async def put(self, tenant: str, entries: Sequence[Any]) -> list[dict[str, Any]]:
        """Route the events (all checked first: a malformed one is refused and none is routed);
        per event its id and the rules it matched."""
        if not entries or len(entries) > MAX_ENTRIES:
            raise InvalidEvent(f"a put has 1 to {MAX_ENTRIES} events")
        now = self.wall()
        events = [self.normalize(e, tenant, now) for e in entries]
        rules = await self._current(tenant)
        out = []
        for event in events:
            matched = []
            for rule in rules.matching(event):
                payload = (rule.transform.apply(event, rule_name=rule.name, ingestion_time=iso(now))
                           if rule.transform is not None else event)
                key = f"bus:{event['id']}:{rule.key}"
                if rule.target.startswith("workflow:"):
                    await self._start(rule, payload, key)
                else:
                    await self.enqueue(rule.target, tenant, json.dumps(payload).encode(),
                                       source=f"rule:{rule.name}", key=key)
                matched.append(rule.name)
            out.append({"id": event["id"], "matched_rules": matched})
        return out
