"""The gateway: routes each invocation to a warm instance, starting instances when none is free.

Hot path: a dict lookup for the function's pool, `placement.routing.choose_instance`, one
kept-alive aiohttp request to the node agent, and an append to the in-memory log buffer. The
database is touched only on the first call of a function after start (to load its version) and by
the background log flusher.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from control_plane.clock import Clock
from control_plane.errors import (
    OUTCOME_STATUS,
    CumulusError,
    InstanceStartFailed,
    NoCapacity,
    NodeUnavailable,
    Throttled,
)
from control_plane.fleet import Fleet
from control_plane.models import FunctionConfig, FunctionVersion, InstanceIntent
from control_plane.occupancy import Occupancy
from control_plane.pools import FunctionPool, Instance, InstanceState, InvokeResult
from control_plane.stops import StopTracker
from control_plane.store import LogRow, Store
from node_agent import protocol as p
from placement import PlacementRequest, Resources, place
from placement.routing import choose_instance, instances_to_start

log = logging.getLogger("cumulus.gateway")


class Gateway:
    """Function pools, instance lifecycle through node agents, and the invocation path."""

    def __init__(self, store: Store, fleet: Fleet, clock: Clock, *, node_token: str,
                 queue_timeout_s: float, provision_wait_s: float = 600.0, owner: str = "") -> None:
        self.store = store
        self.owner = owner  # this control plane's id, on every instance it starts
        self.fleet = fleet
        self.clock = clock
        self.node_token = node_token
        self.queue_timeout_s = queue_timeout_s
        self.provision_wait_s = provision_wait_s
        self.can_grow: Callable[[], bool] = lambda: False  # set by the fleet autoscaler
        self.pools: dict[str, FunctionPool] = {}
        self.log_buffer: list[LogRow] = []
        self._auth = {"Authorization": f"Bearer {node_token}"}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.occupancy = Occupancy(self.pools, fleet, owner)  # what the nodes hold, whoever runs it
        self.stops = StopTracker(clock)  # a stopped instance is never adopted again

    async def open(self) -> None:
        """Open the kept-alive connection pool to node agents."""
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              headers=self._auth)

    async def close(self) -> None:
        """Cancel background starts and close connections."""
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- pools -------------------------------------------------------------------------------
    async def pool(self, name: str) -> FunctionPool:
        """The function's pool, loading its latest version on first use (FunctionNotFound if none)."""
        pool = self.pools.get(name)
        if pool is None:
            _, ver = await asyncio.to_thread(self.store.get_function, name)
            pool = self.pools.get(name)
            if pool is None:
                pool = self.pools[name] = FunctionPool(ver, ver.config())
        return pool

    def set_version(self, ver: FunctionVersion) -> None:
        """A new version was deployed: route new calls to it; old instances drain in `reconcile`."""
        pool = self.pools.get(ver.function)
        if pool is None:
            self.pools[ver.function] = FunctionPool(ver, ver.config())
        elif ver.version != pool.version.version:
            pool.version, pool.config = ver, ver.config()
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
        """Instances that calls are waiting for and no node has room for."""
        return [PlacementRequest(function=name, resources=self._resources(pool.config), count=pool.unplaced)
                for name, pool in self.pools.items()
                if pool.unplaced and (pool.waiting or len(pool.live()) < pool.config.min_instances)]

    def forget_node(self, node_id: str) -> None:
        """The node is gone: forget its instances (their calls fail or retry elsewhere) and the
        stops it can no longer confirm."""
        for pool in self.pools.values():
            for inst in [i for i in pool.all_instances() if i.node_id == node_id]:
                self.forget_instance(pool, inst)
        for instance_id in self.stops.forget_node(node_id):
            self.spawn(self._intent_done(instance_id, "stop"))

    def drain_node(self, node_id: str) -> None:
        """No new calls to the node's instances; the reconciler stops them once idle."""
        for pool in self.pools.values():
            for inst in [i for i in pool.instances.values() if i.node_id == node_id]:
                pool.instances.pop(inst.id, None)
                pool.draining[inst.id] = inst

    def capacity_changed(self) -> None:
        """A node became ready: wake calls waiting for room."""
        for pool in self.pools.values():
            if pool.waiting:
                self.spawn(self._wake(pool))

    @staticmethod
    async def _wake(pool: FunctionPool) -> None:
        async with pool.cond:
            pool.cond.notify_all()

    # -- instance lifecycle ------------------------------------------------------------------
    def _resources(self, config: FunctionConfig) -> Resources:
        return Resources(cpu_millis=config.effective_cpu_millis(), memory_mib=config.memory_mb)

    def start_instance(self, pool: FunctionPool) -> Instance | None:
        """Reserve a node for one more instance and start it in the background."""
        config = pool.config
        res = self._resources(config)
        decision = place(self.fleet.views(self.occupancy.allocated()),
                         [PlacementRequest(function=config.name, resources=res)])
        if not decision.assignments:
            reason = decision.unplaced[0].reason if decision.unplaced else "no nodes"
            pool.last_start_error = NoCapacity(f"no node can run an instance of {config.name}: {reason}")
            pool.unplaced += 1
            return None
        pool.unplaced = 0
        node = self.fleet.nodes[decision.assignments[0].node_id]
        inst = Instance(id=f"{config.name}-{uuid.uuid4().hex[:12]}", function=config.name,
                        version=pool.version.version, node_id=node.id, node_url=node.url,
                        concurrency=config.concurrency, resources=res)
        pool.instances[inst.id] = inst
        self.spawn(self._start(pool, inst))
        return inst

    async def _start(self, pool: FunctionPool, inst: Instance) -> None:
        assert self._session is not None
        config = pool.config
        req = p.InstanceStart(function=config.name, version=inst.version, handler=config.handler,
                              code_digest=pool.version.code_digest,
                              code_url=f"/v1/internal/artifacts/{pool.version.code_digest}",
                              memory_mib=config.memory_mb, cpu_millis=inst.resources.cpu_millis,
                              timeout_s=config.timeout_s, concurrency=config.concurrency, env=config.env,
                              owner=self.owner)
        error: CumulusError | None = None
        full = False
        try:
            await self._intent(inst, "start")
            async with self._session.put(f"{inst.node_url}/v1/instances/{inst.id}",
                                         data=req.model_dump_json(),
                                         headers={"Content-Type": "application/json"},
                                         timeout=aiohttp.ClientTimeout(total=120)) as resp:
                body = await resp.read()
                full = resp.status == 409
                if resp.status != 200:
                    detail = json.loads(body).get("error", {}).get("message", body.decode()[:500])
                    error = InstanceStartFailed(f"starting {config.name}: {detail}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = InstanceStartFailed(f"starting {config.name} on node {inst.node_id}: {exc!r}")
            self.stop_in_background(inst)  # the agent may have started it: roll back
        except Exception as exc:  # the intent could not be written: nothing was asked of the agent
            error = InstanceStartFailed(f"starting {config.name}: cannot record it: {exc!r}")
        else:
            self.spawn(self._intent_done(inst.id, "start"))
        async with pool.cond:
            if full:  # not the function's fault: place it again, elsewhere or once there is room
                pool.instances.pop(inst.id, None)
                pool.draining.pop(inst.id, None)
                self.occupancy.mark_full(inst.node_id, self.clock.now())
                log.info("event=node_full node=%s instance=%s", inst.node_id, inst.id)
                pool.cond.notify_all()
            elif error is not None:
                pool.instances.pop(inst.id, None)
                pool.draining.pop(inst.id, None)
                pool.last_start_error = error
                pool.start_failures += 1
                log.warning("event=instance_start_failed function=%s instance=%s error=%s",
                            config.name, inst.id, error.message)
                pool.cond.notify_all()
            elif inst.state is InstanceState.STARTING and inst.id in pool.draining:
                inst.state = InstanceState.READY  # a new version arrived meanwhile: drain it
                inst.last_used = self.clock.now()
            elif inst.state is InstanceState.STARTING:
                inst.state = InstanceState.READY
                inst.last_used = self.clock.now()
                pool.cond.notify(inst.concurrency)
            else:  # stopped while starting (function deleted or redeployed)
                self.stop_in_background(inst)

    def retire(self, pool: FunctionPool, inst: Instance) -> None:
        """Take an instance out of service now; its container is removed in the background (a
        slow node never holds up the caller, e.g. the reconcile loop)."""
        inst.state = InstanceState.STOPPING
        pool.instances.pop(inst.id, None)
        pool.draining.pop(inst.id, None)
        self.stop_in_background(inst)

    async def stop_instance(self, pool: FunctionPool, inst: Instance) -> None:
        """Take an instance out of service and remove its container."""
        inst.state = InstanceState.STOPPING
        pool.instances.pop(inst.id, None)
        pool.draining.pop(inst.id, None)
        await self.remove_container(inst)

    def stop_in_background(self, inst: Instance) -> None:
        """Remove the instance's container in a task; tracked as stopping from this moment, so
        a heartbeat in between never brings it back."""
        if self.stops.begin(inst):
            self.spawn(self._remove(inst))

    async def remove_container(self, inst: Instance) -> None:
        """Ask the node to remove the instance, its stop written down first; a stop the agent did
        not confirm stays open (retried when the node reports the instance, or after a restart).
        A stop of the same instance already in flight is not asked twice."""
        if self.stops.begin(inst):
            await self._remove(inst)

    async def _remove(self, inst: Instance) -> None:
        """The stop begun by the caller: ends confirmed, or else (error, cancelled) unconfirmed."""
        assert self._session is not None
        done = False
        try:
            await self._intent(inst, "stop")
            async with self._session.delete(f"{inst.node_url}/v1/instances/{inst.id}",
                                            timeout=aiohttp.ClientTimeout(total=30)) as resp:
                await resp.read()
                if resp.status >= 500:
                    raise aiohttp.ClientError(f"HTTP {resp.status}")
            done = True
        except Exception as exc:  # node unreachable, or the database refused the intent
            log.warning("event=instance_stop_failed instance=%s error=%r", inst.id, exc)
        finally:
            if done:
                self.stops.confirmed(inst.id)
            else:
                self.stops.failed(inst.id)
        if done:  # else its intent stays open: replayed after a restart
            await self._intent_done(inst.id, "stop")

    async def _intent(self, inst: Instance, kind: str) -> None:
        await asyncio.to_thread(self.store.open_instance_intent, InstanceIntent(
            instance_id=inst.id, owner=self.owner, kind=kind, function=inst.function, node_id=inst.node_id,
            node_url=inst.node_url))

    async def _intent_done(self, instance_id: str, kind: str) -> None:
        try:
            await asyncio.to_thread(self.store.close_instance_intent, instance_id, kind)
        except Exception as exc:  # left open: replayed (idempotently) after a restart
            log.warning("event=instance_intent_close_failed instance=%s error=%r", instance_id, exc)

    # -- invocation --------------------------------------------------------------------------
    async def acquire(self, pool: FunctionPool) -> tuple[Instance, bool]:
        """A slot on a warm instance, starting instances (up to max) and waiting when needed.
        Returns the instance and whether the call waited for a cold start."""
        inst = choose_instance(pool.instances.values())
        if inst is not None:
            inst.in_flight += 1
            return inst, False
        entered = self.clock.now()
        deadline = entered + self.queue_timeout_s
        seen_failures = pool.start_failures
        cold = False
        async with pool.cond:
            pool.waiting += 1
            try:
                while True:
                    inst = choose_instance(pool.instances.values())
                    if inst is not None:
                        inst.in_flight += 1
                        return inst, cold
                    live = pool.live()
                    starting = sum(1 for i in live if i.state is InstanceState.STARTING)
                    if pool.start_failures > seen_failures and starting == 0:
                        raise pool.last_start_error or InstanceStartFailed("instance start failed")
                    n = instances_to_start(waiting=pool.waiting, starting=starting, total=len(live),
                                           concurrency=pool.config.concurrency,
                                           max_instances=pool.config.max_instances)
                    pool.unplaced = 0
                    started = sum(1 for _ in range(n) if self.start_instance(pool) is not None)
                    if started < n:  # some found no room
                        if self.can_grow():
                            # A node is being added (or will be): wait for it, boot included.
                            deadline = max(deadline, entered + self.provision_wait_s)
                        elif not started and starting == 0:
                            pool.unplaced = 0
                            raise pool.last_start_error or NoCapacity("no node has room")
                    cold = cold or bool(started or starting)
                    remaining = deadline - self.clock.now()
                    if remaining <= 0:
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

    async def release(self, pool: FunctionPool, inst: Instance) -> None:
        """Give the slot back and wake one waiter."""
        inst.in_flight -= 1
        inst.last_used = self.clock.now()
        if pool.waiting:
            async with pool.cond:
                pool.cond.notify(1)

    async def invoke(self, name: str, body: bytes) -> InvokeResult:
        """Run one invocation of `name` with `body` as the event."""
        assert self._session is not None
        pool = await self.pool(name)
        request_id = uuid.uuid4().hex
        timeout_ms = int(pool.config.timeout_s * 1000)
        started = time.time()
        for attempt in range(3):
            inst, cold = await self.acquire(pool)
            try:
                async with self._session.post(
                        inst.invoke_url, data=body,
                        headers={p.REQUEST_ID_HEADER: request_id, p.TIMEOUT_HEADER: str(timeout_ms)},
                        timeout=aiohttp.ClientTimeout(total=pool.config.timeout_s + 30)) as resp:
                    payload = await resp.read()
                    headers = resp.headers
            except aiohttp.ClientConnectorError as exc:  # nothing was sent: safe to try elsewhere
                self.forget_instance(pool, inst)
                if attempt == 2:
                    raise NodeUnavailable(f"node {inst.node_id} did not answer: {exc!r}") from exc
                log.warning("event=node_unreachable node=%s instance=%s", inst.node_id, inst.id)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.forget_instance(pool, inst)
                raise NodeUnavailable(f"node {inst.node_id} did not answer: {exc!r}") from exc
            finally:
                await self.release(pool, inst)
            if headers.get(p.INSTANCE_GONE_HEADER):
                self.forget_instance(pool, inst)
            outcome = headers.get(p.OUTCOME_HEADER, p.CRASHED)
            if outcome != p.INSTANCE_NOT_FOUND:
                break
            log.info("event=instance_vanished instance=%s attempt=%d", inst.id, attempt)
        inst.served += 1
        log_bytes = int(headers.get(p.LOG_BYTES_HEADER, "0"))
        duration_ms = int(headers.get(p.DURATION_HEADER, "0")) / 1000
        out_headers = {"Content-Type": "application/json", "X-Request-Id": request_id,
                       "X-Cumulus-Cold-Start": "true" if cold else "false",
                       "X-Cumulus-Duration-Ms": f"{duration_ms:.3f}",
                       "X-Cumulus-Version": str(inst.version)}
        result = payload[log_bytes:]
        self.log_buffer.append((name, inst.version, request_id, started, duration_ms, outcome, cold,
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

    def forget_instance(self, pool: FunctionPool, inst: Instance) -> None:
        """Forget an instance its node has already removed (or that is unreachable)."""
        if pool.instances.pop(inst.id, None) or pool.draining.pop(inst.id, None):
            inst.state = InstanceState.STOPPING
