"""The fleet loop: `placement.scale_fleet` decides, a `NodeProvider` acts, every decision is an event.

Each tick, in two phases (mirror, then act):
1. Mirror the provider's listing: fleet nodes whose machine is gone are forgotten (their instances
   dropped); provisions whose node joined are done; provisions that did not join within the join
   deadline are terminated and counted as failures (exponential back-off per node type); machines of
   this cluster that nobody asked for are terminated after a grace period.
2. Decide with `scale_fleet` over nodes, booting provisions, pending demand and utilization; then
   provision (in the background, one request id per node), drain (no new placements; instances stop
   once idle) or terminate.
Provider calls run in threads and never block the event loop; a failing provider backs off.

Typed provider errors decide what happens next: a throttled call (`ThrottledError`) is retried in
place with exponential back-off and jitter (tenacity); a node type short of capacity
(`InsufficientCapacityError`) backs off and the next type that fits is tried, saying so; an account
quota (`QuotaError`) stops all additions on the provider, with one event, until a single probing
create passes again; a programming error in an adapter (`PROGRAMMING_ERRORS`) is never retried: it
is logged with its traceback and the fleet stops calling the provider until a restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from control_plane.cluster import Leadership
from control_plane.core import Background, Clock
from control_plane.core import request_id as new_request_id
from control_plane.fleet.nodes import Fleet
from control_plane.fleet.workload import Workload
from control_plane.store import Fence, LeaseLost, Store
from control_plane.telemetry import EventLog
from placement import (
    FleetNode,
    FleetPolicy,
    FleetState,
    InstanceGroup,
    NodeState,
    NodeType,
    NodeView,
    ProvisionFailure,
    Resources,
    UtilizationSample,
    scale_fleet,
)
from provisioners.base import (
    InsufficientCapacityError,
    NodeProvider,
    ProviderError,
    ProviderNode,
    QuotaError,
    ThrottledError,
)

log = logging.getLogger("cumulus.autoscaler")

T = TypeVar("T")

GONE_GRACE_S = 10.0  # a created machine missing from the listings this long is gone (listings lag)
FAILING_AFTER = 2  # failed provider calls in a row (each after its back-off) before calls stop waiting


@dataclass(eq=False)
class QuotaBlock:
    """The provider's account quota is exhausted: no additions until a probing create passes."""

    reason: str
    since: float
    next_probe_at: float
    probes: int = 0  # failed probes so far (the wait between them doubles)
    probing: str = ""  # the request id of the probe in flight


@dataclass(eq=False)
class Provision:
    """One node asked of the provider, until its agent joins (or the deadline passes)."""

    request_id: str
    node_type: str
    started_at: float
    provider_ids: list[str] = field(default_factory=list)
    calling: bool = True
    created_at: float | None = None  # when the provider call returned
    recovered: bool = False  # asked by an earlier run of the control plane (its intent replayed)


class FleetAutoscaler:
    """Grows and shrinks the fleet through one provider."""

    def __init__(self, provider: NodeProvider, fleet: Fleet, workload: Workload, store: Store, clock: Clock,
                 events: EventLog, *, node_types: Mapping[str, NodeType], policy: FleetPolicy,
                 join_deadline_s: float, orphan_grace_s: float, retry_attempts: int = 5,
                 retry_max_wait_s: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.provider = provider
        self.fleet = fleet
        self.workload = workload  # what runs on the nodes: the gateway's view
        self.clock = clock
        self.events = events
        self.node_types = dict(node_types)
        self.policy = policy
        self.join_deadline_s = join_deadline_s
        self.orphan_grace_s = orphan_grace_s
        self.provisions: dict[str, Provision] = {}
        self.failures: dict[str, ProvisionFailure] = {}
        self.samples: deque[UtilizationSample] = deque(maxlen=10_000)
        self.unknown_since: dict[str, float] = {}
        self.last_up: float | None = None
        self.last_down: float | None = None
        self._list_failures = 0
        self._next_list_at = 0.0
        self._by_request: dict[str, ProviderNode] = {}
        self._last_errors: dict[str, str] = {}  # by node type ("" for the listing)
        self.store = store
        self.tasks = Background()  # provider calls in flight
        self.leadership: Leadership | None = None  # HA: intents are fenced by its lease
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="provider")
        self.quota: QuotaBlock | None = None
        self.bug: str | None = None  # a programming error in the provider: no more calls to it
        self._short: dict[str, str] = {}  # node types short of capacity -> the provider's words
        # Throttled calls are retried on the provider thread: 1 s, 2 s, 4 s... (at most
        # `retry_max_wait_s`), each with up to 1 s of jitter, `retry_attempts` calls in all.
        self._retrying = Retrying(retry=retry_if_exception_type(ThrottledError),
                                  wait=wait_exponential_jitter(initial=1, max=retry_max_wait_s, jitter=1),
                                  stop=stop_after_attempt(retry_attempts), sleep=sleep, reraise=True,
                                  before_sleep=self._throttled)

    @staticmethod
    def _throttled(state: object) -> None:
        outcome = getattr(state, "outcome", None)
        log.info("event=provider_throttled attempt=%s error=%s", getattr(state, "attempt_number", "?"),
                 outcome.exception() if outcome is not None else "")

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run a provider call on the provider's own threads: a slow provider (a terminate may
        wait 20 s per machine) never starves the database calls of the rest of the control plane.
        A throttled call is retried there, with back-off and jitter."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: self._retrying(fn))

    def _provider_bug(self, what: str, exc: BaseException) -> None:
        """A programming error in the provider: say so once, loudly, and stop calling it (retrying
        a bug only repeats it); the message names the error, the log has the traceback."""
        log.error("event=provider_bug provider=%s call=%s", self.provider.name, what, exc_info=exc)
        if self.bug is None:
            self.bug = (f"the {self.provider.name} provider failed with a bug during {what}: "
                        f"{type(exc).__name__}: {exc} (see the control plane's log); "
                        "no more provider calls until a restart")
            self.events.record("provider_bug", self.bug)
            self.workload.room_changed()  # waiting calls learn that no node is coming

    @property
    def fence(self) -> Fence | None:
        """The lease this control plane's intent writes are fenced by (None: not fenced)."""
        return self.leadership.fence if self.leadership is not None else None

    def _lease_lost(self, exc: LeaseLost) -> None:
        """A fenced write was refused: another control plane leads now; stop acting at once."""
        if self.leadership is not None:
            self.leadership.deposed(str(exc))

    def close(self) -> None:
        """Stop waiting for provider calls in flight (a call already made finishes on its thread;
        its intent, written first, is replayed by the next leader)."""
        self.tasks.cancel()

    def reset(self) -> None:
        """Deposed: the new leader owns the provisions in flight (it replays their intents)."""
        self.provisions.clear()
        self.unknown_since.clear()
        self._by_request = {}

    async def _update_intent(self, request_id: str, state: str, provider_ids: Sequence[str] = ()) -> bool:
        """Record an intent's progress under the fence; False if the lease was lost."""
        try:
            await asyncio.to_thread(self.store.update_intent, request_id, state, provider_ids,
                                    fence=self.fence)
        except LeaseLost as exc:
            self._lease_lost(exc)
            return False
        return True

    async def recover(self) -> None:
        """Finish the provider calls a previous control plane wrote down but may not have made:
        creates are made again (idempotent by request id) and then wait for their node to join;
        terminates are made again (terminating a gone machine is success)."""
        intents = await asyncio.to_thread(self.store.open_intents, self.provider.name)
        for intent in intents:
            ids = list(intent.provider_ids)
            if intent.kind == "terminate":
                self.events.record("intent_replayed", f"terminate {ids} (request {intent.request_id[:8]})")
                self.tasks.spawn(self._terminate(ids, request_id=intent.request_id))
            elif intent.node_type in self.node_types:
                prov = Provision(intent.request_id, intent.node_type, self.clock.now(), ids,
                                 calling=intent.state == "open", recovered=True)
                self.provisions[intent.request_id] = prov
                self.events.record("intent_replayed", f"provision of {intent.node_type} "
                                   f"(request {intent.request_id[:8]}, {intent.state})")
                if prov.calling:
                    self.tasks.spawn(self._create(prov))

    def trouble(self) -> str | None:
        """Why the fleet cannot grow now, or None: the provider's last error, once its listing or
        the provisioning of every node type failed `FAILING_AFTER` times in a row."""
        if self.bug is not None:
            return self.bug
        if self.quota is not None:
            return f"{self.quota.reason}; not adding nodes until the quota allows it"
        if self._list_failures >= FAILING_AFTER:
            return self._last_errors.get("", "the provider's listing keeps failing")
        failing = [self._last_errors.get(t, "") for t in self.node_types
                   if (f := self.failures.get(t)) is not None and f.consecutive >= FAILING_AFTER]
        if self.node_types and len(failing) == len(self.node_types) and not self.provisions:
            return failing[-1] or "provisioning keeps failing"
        return None

    def can_grow(self) -> bool:
        """Whether waiting calls may expect more capacity (a node is coming or may be added, and
        the provider is not failing)."""
        if self.trouble() is not None:
            return False
        live = [n for n in self.fleet.nodes.values() if n.state is not NodeState.LOST]
        return bool(self.provisions) or len(live) < self.policy.max_nodes

    # -- mirror ------------------------------------------------------------------------------
    async def mirror(self) -> list[ProviderNode] | None:
        """Reconcile our view with the provider's listing; None when the provider failed."""
        now = self.clock.now()
        if now < self._next_list_at or self.bug is not None:
            return None
        try:
            listed = await self._call(self.provider.list_instances)
        except ProviderError as exc:
            self._list_failures += 1
            delay = min(300.0, 2.0 ** self._list_failures)
            self._next_list_at = now + delay
            self._last_errors[""] = f"listing {self.provider.name} nodes failed: {exc}"
            self.events.record("provider_error", f"{self._last_errors['']}; retrying in {delay:.0f}s")
            if self._list_failures == FAILING_AFTER:
                self.workload.room_changed()  # waiting calls learn that no node is coming
            return None
        except Exception as exc:
            self._provider_bug("list_instances", exc)
            return None
        self._list_failures = 0
        by_id = {n.id: n for n in listed}
        by_request = self._by_request = {n.request_id: n for n in listed}
        for node in list(self.fleet.nodes.values()):
            listed_now = node.id in by_id or (node.request_id and node.request_id in by_request)
            if node.provider == self.provider.name and not listed_now \
                    and node.state is not NodeState.READY:
                self.events.record("node_gone", f"{node.id} is no longer listed by {self.provider.name}",
                                   node_id=node.id)
                self.workload.forget_node(node.id)
                # Terminating a machine that is gone is success, and lets the provider clean up
                # after it (the local provider removes a dead agent's containers).
                self.tasks.spawn(self._terminate([self.provider_id(node.id)], request_id=f"gone-{node.id}"))
                await self.fleet.forget(node.id)
        for req, prov in list(self.provisions.items()):
            if prov.calling:
                continue
            found = by_request.get(req)
            if found is not None and found.id not in prov.provider_ids:
                prov.provider_ids.append(found.id)
            ready = next((n for n in self.fleet.nodes.values()
                         if n.id in prov.provider_ids or (n.request_id and n.request_id == req)), None)
            if ready is not None:
                del self.provisions[req]
                self.failures.pop(prov.node_type, None)
                self._short.pop(prov.node_type, None)
                await self._update_intent(req, "done", prov.provider_ids)
                created = prov.created_at if prov.created_at is not None else prov.started_at
                self.events.record("node_ready", f"{ready.id} ({', '.join(prov.provider_ids)}) of type "
                                   f"{prov.node_type} ready {ready.since - prov.started_at:.2f}s after the "
                                   f"decision: provider call {created - prov.started_at:.2f}s, boot and join "
                                   f"{ready.since - created:.2f}s", node_id=ready.id)
            elif prov.provider_ids and found is None and not any(i in by_id for i in prov.provider_ids) \
                    and now - (prov.created_at or prov.started_at) > GONE_GRACE_S:
                # Its machine is gone before its agent joined (the agent died, the VM was
                # reclaimed): it never will; replace it now rather than at the deadline.
                del self.provisions[req]
                why = (f"{', '.join(prov.provider_ids)} ({prov.node_type}) is gone before it joined"
                       f"{' (asked before the restart)' if prov.recovered else ''}: replacing it")
                if prov.recovered:  # not a failure of this run's provisioning: no back-off
                    self.events.record("provision_failed", why)
                else:
                    self._fail(prov.node_type, why)
                await self._update_intent(req, "failed", prov.provider_ids)
                self.tasks.spawn(self._terminate(prov.provider_ids, request_id=f"gone-{req}"))
            elif now - prov.started_at > self.join_deadline_s:
                del self.provisions[req]
                self._fail(prov.node_type, f"{prov.provider_ids or req} did not join within "
                           f"{self.join_deadline_s:.0f}s: terminated")
                await self._update_intent(req, "failed", prov.provider_ids)
                self.tasks.spawn(self._terminate(prov.provider_ids, request_id=f"deadline-{req}"))
        known = set(self.fleet.nodes) | {i for p in self.provisions.values() for i in p.provider_ids}
        known_requests = set(self.provisions) | {n.request_id for n in self.fleet.nodes.values()}
        for pnode in listed:
            if pnode.id in known or pnode.request_id in known_requests:
                self.unknown_since.pop(pnode.id, None)
                continue
            first = self.unknown_since.setdefault(pnode.id, now)
            if now - first > self.orphan_grace_s:
                self.events.record("orphan_terminated", f"{pnode.id} is tagged for this cluster but unknown "
                                   f"for {now - first:.0f}s", node_id=pnode.id)
                self.unknown_since.pop(pnode.id, None)
                self.tasks.spawn(self._terminate([pnode.id], request_id=f"orphan-{pnode.id}"))
        return listed

    def provider_id(self, node_id: str) -> str:
        """The provider's id of a fleet node: the same, or found by its provision request."""
        node = self.fleet.nodes.get(node_id)
        if node is not None and node.request_id in self._by_request:
            return self._by_request[node.request_id].id
        return node_id

    def _fail(self, node_type: str, reason: str) -> None:
        prev = self.failures.get(node_type)
        self.failures[node_type] = ProvisionFailure(node_type, (prev.consecutive if prev else 0) + 1,
                                                    self.clock.now())
        self._last_errors[node_type] = reason
        self.events.record("provision_failed", reason)
        if self.trouble() is not None:
            self.workload.room_changed()  # waiting calls learn that no node is coming

    async def _record_terminate(self, ids: list[str], request_id: str) -> bool:
        """Write a terminate intent down under the fence; False if the lease was lost."""
        try:
            await asyncio.to_thread(self.store.open_intent, request_id, "terminate", self.provider.name,
                                    provider_ids=ids, fence=self.fence)
        except LeaseLost as exc:
            self._lease_lost(exc)
            return False
        return True

    async def _terminate(self, ids: list[str], *, request_id: str, recorded: bool = False) -> None:
        """Terminate machines, writing the call down first (a crash before it is done replays it).
        Callers run it in the background: a provider may take a while, the loop must not wait."""
        if not ids or not (recorded or await self._record_terminate(ids, request_id)):
            return
        try:
            await self._call(functools.partial(self.provider.terminate, ids, request_id=request_id))
        except ProviderError as exc:  # the intent stays open: replayed
            self.events.record("provider_error", f"terminating {ids} failed: {exc}")
            return
        except Exception as exc:  # a bug: the intent stays open too, replayed after the fix
            self._provider_bug("terminate", exc)
            return
        await self._update_intent(request_id, "done", ids)

    # -- decide and act ----------------------------------------------------------------------
    def state(self) -> FleetState:
        """What `scale_fleet` looks at, built from the fleet, the workload and open provisions."""
        now = self.clock.now()
        groups = self.workload.instances_by_node()
        in_flight = self.workload.in_flight_by_node()
        allocated = self.workload.allocated()
        nodes = []
        cap_total = alloc_total = Resources.ZERO
        for node in self.fleet.nodes.values():
            view = NodeView(id=node.id, capacity=node.capacity,
                            allocated=allocated.get(node.id, Resources.ZERO), state=node.state,
                            node_type=node.node_type)
            nodes.append(FleetNode(view, tuple(InstanceGroup(f, r, c) for f, r, c in groups.get(node.id, [])),
                                   in_flight.get(node.id, 0), node.since))
            if node.state is NodeState.READY:
                cap_total += node.capacity
                alloc_total += view.allocated
        for prov in self.provisions.values():
            ntype = self.node_types[prov.node_type]
            nodes.append(FleetNode(NodeView(id=f"provisioning-{prov.request_id[:8]}",
                                            capacity=ntype.capacity,
                                            allocated=Resources.ZERO, state=NodeState.PROVISIONING,
                                            node_type=ntype.name), since=prov.started_at))
        self.samples.append(UtilizationSample(now, alloc_total, cap_total))
        horizon = now - 2 * self.policy.watermark_window_s
        while self.samples and self.samples[0].at < horizon:
            self.samples.popleft()
        pending = self.workload.pending()
        if self.leadership is not None:
            pending += self.leadership.others_pending()
        return FleetState(nodes=tuple(nodes), pending=tuple(pending),
                          utilization=tuple(self.samples), failures=tuple(self.failures.values()),
                          last_scale_up_at=self.last_up, last_scale_down_at=self.last_down)

    async def tick(self) -> None:
        """Mirror, decide, act."""
        if await self.mirror() is None and (self._list_failures or self.bug is not None):
            return
        now = self.clock.now()
        decision = scale_fleet(self.state(), list(self.node_types.values()), self.policy, now)
        for add in decision.add:
            count, reason = add.count, add.reason
            if self.quota is not None:  # only a probe, once its time has come
                if self.quota.probing or now < self.quota.next_probe_at:
                    continue
                count, reason = 1, f"{reason}; probing whether the quota allows it again"
            short = {t: why for t, why in self._short.items() if t != add.node_type}
            if short:
                reason += "; " + "; ".join(f"{t} has no capacity ({why}), trying {add.node_type} instead"
                                           for t, why in sorted(short.items()))
            self.last_up = now
            for _ in range(count):
                req = self._provision(add.node_type, reason)
                if self.quota is not None:
                    self.quota.probing = req
        for drain in decision.drain:
            self.last_down = now
            self.events.record("node_drain", drain.reason, node_id=drain.node_id)
            await self.fleet.set_state(drain.node_id, NodeState.DRAINING)
            self.workload.drain_node(drain.node_id)
        for rm in decision.remove:
            ids, request_id = [self.provider_id(rm.node_id)], f"remove-{rm.node_id}"
            if not await self._record_terminate(ids, request_id):
                return  # no longer the leader: the new one decides
            self.last_down = now
            self.events.record("node_remove", rm.reason, node_id=rm.node_id)
            self.workload.forget_node(rm.node_id)
            self.tasks.spawn(self._terminate(ids, request_id=request_id, recorded=True))
            await self.fleet.forget(rm.node_id)

    def _provision(self, node_type: str, reason: str) -> str:
        request_id = new_request_id()
        prov = Provision(request_id, node_type, self.clock.now())
        self.provisions[request_id] = prov
        self.events.record("node_add", f"{reason} (request {request_id[:8]})")
        self.tasks.spawn(self._create(prov))
        return request_id

    def _quota_hit(self, req: str, exc: QuotaError) -> None:
        """The account quota stops additions: one event when it starts, none per failed probe."""
        now = self.clock.now()
        if self.quota is None:
            wait = self.policy.failure_backoff_s
            self.quota = QuotaBlock(f"{self.provider.name} quota exceeded: {exc}", now, now + wait)
            self.events.record("quota_exceeded", f"{self.quota.reason}; not adding nodes on "
                               f"{self.provider.name} until a create passes again (next try in {wait:.0f}s)")
            self.workload.room_changed()  # waiting calls learn that no node is coming
            return
        if self.quota.probing == req:
            self.quota.probes += 1
            wait = min(self.policy.max_failure_backoff_s,
                       self.policy.failure_backoff_s * 2.0 ** self.quota.probes)
            self.quota.next_probe_at = now + wait
            self.quota.probing = ""
            log.info("event=quota_still_exceeded provider=%s next_probe_s=%.0f", self.provider.name, wait)

    def _quota_passed(self, req: str) -> None:
        if self.quota is not None and self.quota.probing == req:
            self.events.record("quota_cleared", f"{self.provider.name} accepted a create again after "
                               f"{self.clock.now() - self.quota.since:.0f}s: adding nodes as needed")
            self.quota = None

    async def _create(self, prov: Provision) -> None:
        """Write the intent, call the provider, record what it made."""
        req = prov.request_id
        try:
            try:
                await asyncio.to_thread(self.store.open_intent, req, "create", self.provider.name,
                                        node_type=prov.node_type, fence=self.fence)
            except LeaseLost as exc:  # not ours to make any more; nothing was called
                self.provisions.pop(req, None)
                self._lease_lost(exc)
                return
            node_type = self.node_types[prov.node_type]
            nodes = await self._call(functools.partial(self.provider.create, node_type, 1, request_id=req))
            prov.provider_ids.extend(n.id for n in nodes if n.id not in prov.provider_ids)
            prov.created_at = self.clock.now()
            self._quota_passed(req)
            if not await self._update_intent(req, "created", prov.provider_ids):
                return  # the new leader replays the intent: create is idempotent by request id
            self.events.record("node_created", f"{', '.join(prov.provider_ids)} created by "
                               f"{self.provider.name} in {prov.created_at - prov.started_at:.2f}s",
                               node_id=",".join(prov.provider_ids))
        except QuotaError as exc:  # the whole provider, not this node type
            self.provisions.pop(req, None)
            self._quota_hit(req, exc)
            await self._update_intent(req, "failed")
        except ProviderError as exc:
            self.provisions.pop(req, None)
            if self.quota is not None and self.quota.probing == req:  # the probe told nothing
                self.quota.probing = ""
                self.quota.next_probe_at = self.clock.now() + self.policy.failure_backoff_s
            if isinstance(exc, InsufficientCapacityError):
                self._short[prov.node_type] = str(exc)[:200]
            kind = "has no capacity" if isinstance(exc, InsufficientCapacityError) else "failed"
            self._fail(prov.node_type, f"provisioning {prov.node_type} {kind}: {exc}")
            await self._update_intent(req, "failed")
        except Exception as exc:  # a bug in the provider (or in preparing the bootstrap)
            self.provisions.pop(req, None)
            self._provider_bug("create", exc)
            await self._update_intent(req, "failed")
        finally:
            prov.calling = False
