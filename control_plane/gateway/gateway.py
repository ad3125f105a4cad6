"""The gateway: routes each invocation to a warm instance, starting instances when none is free.

Hot path: a dict lookup for the function's pool, `placement.routing.choose_instance`, one
kept-alive request to the node agent (`AgentClient`), and an append to the invocation buffer. The
database is touched only through `GatewayStore`: on the first call of a function after a start (to
load its version) and to write down instance starts and stops (intents) before agents are asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from control_plane.core import (
    OUTCOME_STATUS,
    Background,
    Clock,
    InstanceStartFailed,
    NoCapacity,
    NodeUnavailable,
    QuotaExceeded,
    Throttled,
    id_prefix,
    new_id,
    request_id,
)
from control_plane.fleet import Fleet
from control_plane.functions import DeployedVersion
from control_plane.gateway.agents import AgentCallFailed, AgentClient, AgentUnreachable
from control_plane.gateway.ledger import Answered, AnsweredCalls
from control_plane.gateway.lifecycle import InstanceLifecycle
from control_plane.gateway.occupancy import Occupancy
from control_plane.gateway.pools import FunctionPool, Instance, InstanceState, InvokeResult
from control_plane.gateway.ports import GatewayStore, InvocationSink
from control_plane.gateway.stops import StopTracker
from control_plane.identity import FunctionRef, Governor
from control_plane.telemetry import InvocationRecord
from node_agent import protocol as p
from placement import NodeState, PlacementRequest, Resources
from placement.routing import choose_instance, instances_to_start

log = logging.getLogger("cumulus.gateway")


class Gateway(InstanceLifecycle):
    """Function pools, the invocation path, and (from `InstanceLifecycle`) instances' lifecycle."""

    def __init__(self, store: GatewayStore, fleet: Fleet, clock: Clock, *, agents: AgentClient,
                 records: InvocationSink, queue_timeout_s: float, provision_wait_s: float = 600.0,
                 owner: str = "", instance_id: Callable[[str, str], str] | None = None,
                 runtime_images: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.runtime_images = dict(runtime_images or {})
        self.owner = owner  # this control plane's id, on every instance it starts
        self.fleet = fleet
        self.clock = clock
        self.agents = agents
        self.records = records
        # New instance ids, per (function, node): minted with the cluster's key, so that nodes
        # cannot report instances of their own making (`identity.NodeKeys.instance_id`).
        self.instance_id = instance_id or (lambda function, node_id: new_id(id_prefix(function)))
        self.queue_timeout_s = queue_timeout_s
        self.provision_wait_s = provision_wait_s
        self.can_grow: Callable[[], bool] = lambda: False  # set by the fleet autoscaler
        self.trouble: Callable[[], str | None] = lambda: None  # why the fleet cannot grow, if it cannot
        self.pools: dict[str, FunctionPool] = {}
        self.tasks = Background()  # instance starts and stops in flight
        self.occupancy = Occupancy(self.pools, fleet, owner)  # what the nodes hold, whoever runs it
        self.stops = StopTracker(clock)  # a stopped instance is never adopted again
        self.governor: Governor | None = None  # tenants' instances quotas and budgets, if any
        # Answered calls, until their node's usage record is stored here (`ledger`); a forgotten
        # node's are handed to `usage_witnessed` (metering), which stores those still missing.
        self.answered = AnsweredCalls(clock, keep_s=fleet.lost_after_s + 60)
        self.usage_witnessed: Callable[[str, list[dict[str, Any]]], object] | None = None

    async def open(self) -> None:
        """Open the kept-alive connections to node agents."""
        await self.agents.open()

    async def close(self) -> None:
        """Cancel background starts and close connections."""
        self.tasks.cancel()
        await self.agents.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, owned by the gateway."""
        self.tasks.spawn(coro)

    # -- the fleet loop's view (`control_plane.fleet.Workload`) ------------------------------
    def allocated(self) -> dict[str, Resources]:
        """Resources held per node by live instances, whoever runs them."""
        return self.occupancy.allocated()

    def instances_by_node(self) -> dict[str, list[tuple[str, Resources, int]]]:
        """Per node: (function, resources of one instance, count)."""
        return self.occupancy.instances_by_node()

    def in_flight_by_node(self) -> dict[str, int]:
        """Calls in flight per node."""
        return self.occupancy.in_flight_by_node()

    # -- pools -------------------------------------------------------------------------------
    async def pool(self, name: str) -> FunctionPool:
        """The function's pool, loading its latest version on first use (FunctionNotFound if none)."""
        pool = self.pools.get(name)
        if pool is None:
            ver = await asyncio.to_thread(self.store.latest_version, name)
            pool = self.pools.get(name)
            if pool is None:
                pool = self.pools[name] = FunctionPool(ver)
        return pool

    def set_version(self, ver: DeployedVersion) -> None:
        """A new version was deployed: route new calls to it; old instances drain in `reconcile`."""
        pool = self.pools.get(ver.function)
        if pool is None:
            self.pools[ver.function] = FunctionPool(ver)
        elif ver.version != pool.version.version:
            pool.version = ver
            pool.last_start_error = None
            pool.draining.update(pool.instances)
            pool.instances = {}

    async def remove_function(self, name: str) -> None:
        """Forget a function and stop all its instances."""
        pool = self.pools.pop(name, None)
        if pool is None:
            return
        await asyncio.gather(*(self.stop_instance(pool, i) for i in pool.all_instances()),
                             return_exceptions=True)
        async with pool.cond:
            pool.cond.notify_all()

    def pending(self) -> list[PlacementRequest]:
        """Instances that calls are waiting for and no node has room for (none while a stored node
        has not reported since the start: it may hold them, or have room for them)."""
        if self.fleet.unheard:
            return []
        out = []
        for name, pool in self.pools.items():
            if not pool.unplaced or not (pool.waiting or len(pool.live()) < pool.config.min_instances):
                continue
            count = pool.unplaced
            if self.governor is not None:  # no growth for a tenant over budget or its instances quota
                tenant = FunctionRef.of_key(name).tenant
                if self.governor.blocked(tenant):
                    continue
                count = min(count, self._instance_room(tenant))
            if count > 0:
                out.append(PlacementRequest(function=name, resources=self._resources(pool.config),
                                            count=count))
        return out

    def _instance_room(self, tenant: str) -> int:
        """How many more instances the tenant's quota allows on the fleet (a large number if none)."""
        quota = self.governor.instance_quota(tenant) if self.governor is not None else None
        if quota is None:
            return 1 << 30
        return max(0, quota - self.occupancy.tenant_instances(tenant))

    def forget_node(self, node_id: str) -> None:
        """The node is gone: forget its instances (their calls fail or retry elsewhere) and the
        stops it can no longer confirm."""
        for pool in self.pools.values():
            for inst in [i for i in pool.all_instances() if i.node_id == node_id]:
                self.forget_instance(pool, inst)
        for instance_id in self.stops.forget_node(node_id):
            self.spawn(self._intent_done(instance_id, "stop"))
        calls = self.answered.take_node(node_id)
        if calls and self.usage_witnessed is not None:  # what it ran and may not have sent
            self.spawn(self._store_witnessed(node_id, calls))

    async def _store_witnessed(self, node_id: str, calls: list[dict[str, Any]]) -> None:
        assert self.usage_witnessed is not None
        try:
            await asyncio.to_thread(self.usage_witnessed, node_id, calls)
        except Exception as exc:  # the database is away: those calls go unbilled, said loudly
            log.error("event=witnessed_usage_lost node=%s calls=%d error=%r", node_id, len(calls), exc)

    def drain_node(self, node_id: str) -> None:
        """No new calls to the node's instances; the reconciler stops them once idle."""
        for pool in self.pools.values():
            for inst in [i for i in pool.instances.values() if i.node_id == node_id]:
                pool.instances.pop(inst.id, None)
                pool.draining[inst.id] = inst

    def room_changed(self) -> None:
        """A node became ready, or none will come: wake calls waiting for room."""
        for pool in self.pools.values():
            if pool.waiting:
                self.spawn(self._wake(pool))

    @staticmethod
    async def _wake(pool: FunctionPool) -> None:
        async with pool.cond:
            pool.cond.notify_all()

    # -- invocation --------------------------------------------------------------------------
    async def acquire(self, pool: FunctionPool) -> tuple[Instance, bool]:
        """A slot on a warm instance, starting instances (up to max) and waiting when needed.
        Returns the instance and whether the call waited for a cold start."""
        if pool.idle_since is not None:  # a call after an idle period: the brain learns its length
            if len(pool.idle_periods) < 1000:
                pool.idle_periods.append(self.clock.now() - pool.idle_since)
            pool.idle_since = None
        inst = choose_instance(pool.instances.values())
        if inst is not None:
            self._took(pool, inst)
            return inst, False
        entered = self.clock.now()
        deadline = entered + self.queue_timeout_s
        seen_failures = pool.start_failures
        cold = growing = capped = False
        tenant = FunctionRef.of_key(pool.version.function).tenant
        async with pool.cond:
            pool.waiting += 1
            try:
                while True:
                    inst = choose_instance(pool.instances.values())
                    if inst is not None:
                        self._took(pool, inst)
                        return inst, cold
                    pool.peak = max(pool.peak, pool.in_flight + pool.waiting)
                    live = pool.live()
                    starting = sum(1 for i in live if i.state is InstanceState.STARTING)
                    if pool.start_failures > seen_failures and starting == 0:
                        raise pool.last_start_error or InstanceStartFailed("instance start failed")
                    n = instances_to_start(waiting=pool.waiting, starting=starting, total=len(live),
                                           concurrency=pool.config.concurrency,
                                           max_instances=pool.config.max_instances)
                    if n and self.governor is not None:  # the tenant's instances quota, fleet-wide
                        room = self._instance_room(tenant)
                        if room < n:
                            n, capped = room, True
                            if not live and n == 0:  # none to wait for either
                                raise self._over_instances(tenant)
                    pool.unplaced = 0
                    started = sum(1 for _ in range(n) if self.start_instance(pool) is not None)
                    if started < n:  # some found no room
                        if self.can_grow():
                            # A node is being added (or will be): wait for it, boot included.
                            deadline = max(deadline, entered + self.provision_wait_s)
                            growing = True
                        elif self._silent_nodes():
                            # A known node has not reported yet (right after a restart): wait for
                            # it, until it reports or is declared lost (which wakes this call).
                            deadline = max(deadline, entered + self.fleet.lost_after_s)
                            growing = True
                        elif not started and starting == 0:
                            pool.unplaced = 0
                            raise self._no_room(pool)
                    cold = cold or bool(started or starting)
                    remaining = deadline - self.clock.now()
                    if remaining <= 0:
                        if growing and not live:  # it waited for a node, not for a busy slot
                            pool.unplaced = 0
                            why = f"no node became ready within {deadline - entered:g}s"
                            raise self._no_room(pool, why)
                        if capped:
                            raise self._over_instances(tenant)
                        raise Throttled(f"{pool.config.name} is at its limit of "
                                        f"{pool.config.max_instances} instance(s) x "
                                        f"{pool.config.concurrency} concurrent call(s); "
                                        f"no slot freed within {self.queue_timeout_s:g}s")
                    try:
                        await asyncio.wait_for(pool.cond.wait(), remaining)
                    except TimeoutError:
                        continue
            finally:
                pool.waiting -= 1

    def _over_instances(self, tenant: str) -> QuotaExceeded:
        quota = self.governor.instance_quota(tenant) if self.governor is not None else None
        return QuotaExceeded(f"tenant {tenant} has {self.occupancy.tenant_instances(tenant)} instance(s), "
                             f"its instances quota of {quota}, and none of them has a free slot",
                             quota="instances", retry_after_s=1)

    def _silent_nodes(self) -> bool:
        """Whether a known node is NotReady: silent for a few beats, or not yet heard from since
        this control plane started, and not yet lost."""
        return any(n.state is NodeState.NOT_READY for n in self.fleet.nodes.values())

    def _no_room(self, pool: FunctionPool, why: str = "") -> NoCapacity:
        """NoCapacity for a call no node has room for, with the provider's trouble if it has any."""
        parts = [pool.last_start_error.message if pool.last_start_error else "no node has room", why]
        trouble = self.trouble()
        if trouble:
            parts.append(f"the fleet cannot grow: {trouble}")
        return NoCapacity("; ".join(p for p in parts if p))

    @staticmethod
    def _took(pool: FunctionPool, inst: Instance) -> None:
        inst.in_flight += 1
        pool.in_flight += 1
        if pool.in_flight > pool.peak:
            pool.peak = pool.in_flight

    async def release(self, pool: FunctionPool, inst: Instance) -> None:
        """Give the slot back and wake one waiter."""
        inst.in_flight -= 1
        pool.in_flight -= 1
        inst.last_used = self.clock.now()
        if pool.in_flight == 0 and not pool.waiting:
            pool.idle_since = inst.last_used
        if pool.waiting:
            async with pool.cond:
                pool.cond.notify(1)

    async def invoke(self, name: str, body: bytes, call_id: str | None = None) -> InvokeResult:
        """Run one invocation of `name` with `body` as the event (under `call_id`, if given: an
        async call's attempt)."""
        pool = await self.pool(name)
        call_id = call_id or request_id()
        started = time.time()
        for attempt in range(3):
            inst, cold = await self.acquire(pool)
            try:
                headers, payload = await self.agents.invoke(inst, body, request_id=call_id,
                                                            timeout_s=pool.config.timeout_s, cold=cold)
            except AgentUnreachable as exc:  # nothing was sent: safe to try elsewhere
                self.forget_instance(pool, inst)
                if attempt == 2:
                    raise NodeUnavailable(str(exc)) from exc
                log.warning("event=node_unreachable node=%s instance=%s", inst.node_id, inst.id)
                continue
            except AgentCallFailed as exc:
                self.forget_instance(pool, inst)
                raise NodeUnavailable(str(exc)) from exc
            finally:
                await self.release(pool, inst)
            if headers.get(p.INSTANCE_GONE_HEADER):
                self.forget_instance(pool, inst)
            if headers.get(p.OUTCOME_HEADER, p.CRASHED) != p.INSTANCE_NOT_FOUND:
                break
            log.info("event=instance_vanished instance=%s attempt=%d", inst.id, attempt)
        inst.served += 1
        return self._answer(name, inst, call_id, started, cold, headers, payload)

    def _answer(self, name: str, inst: Instance, call_id: str, started: float, cold: bool,
                headers: Mapping[str, str], payload: bytes) -> InvokeResult:
        """The caller's answer from the agent's, and the invocation's record."""
        outcome = headers.get(p.OUTCOME_HEADER, p.CRASHED)
        log_bytes = int(headers.get(p.LOG_BYTES_HEADER, "0"))
        duration_ms = int(headers.get(p.DURATION_HEADER, "0")) / 1000
        out_headers = {"Content-Type": "application/json", "X-Request-Id": call_id,
                       "X-Cumulus-Cold-Start": "true" if cold else "false",
                       "X-Cumulus-Duration-Ms": f"{duration_ms:.3f}",
                       "X-Cumulus-Version": str(inst.version)}
        result = payload[log_bytes:]
        if outcome != p.INSTANCE_NOT_FOUND:  # it ran there: its node meters it, and so do we, until then
            self.answered.add(call_id, Answered(self.clock.now(), inst.node_id, inst.id, inst.function,
                                                inst.version, inst.resources.memory_mib, started,
                                                int(headers.get(p.DURATION_HEADER, "0") or 0), outcome))
        self.records.append(InvocationRecord(name, inst.version, call_id, started, duration_ms, outcome, cold,
                                             payload[:log_bytes].decode("utf-8", "replace")))
        if outcome == p.OK:
            return InvokeResult(200, out_headers, result)
        try:
            error = json.loads(result)
        except ValueError:
            error = {"type": outcome, "message": result.decode("utf-8", "replace")[:2000]}
        error["type"] = outcome
        status = OUTCOME_STATUS.get(outcome, 502)
        return InvokeResult(status, out_headers, json.dumps({"error": error}).encode())
