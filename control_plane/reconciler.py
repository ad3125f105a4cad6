"""Level-triggered loops: read desired and observed state, decide with `placement`, act.

Each tick is safe to run at any time and twice: it looks, then acts on what it saw.
1. Mirror: age nodes by heartbeat; drop instances of Lost nodes; adopt or remove instances that
   agents report but the gateway does not know (after a control-plane restart).
2. Act: per function, drain instances of old versions, stop instances idle past the keep-alive,
   start instances up to `min_instances`; keep the local fleet at its size; flush invocation logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from control_plane.clock import Clock
from control_plane.fleet import Fleet
from control_plane.gateway import FunctionPool, Gateway, Instance, InstanceState
from control_plane.store import Store
from placement import NodeState, Resources
from placement.routing import idle_to_stop
from provisioners.base import NodeProvider, NodeType, ProviderError

log = logging.getLogger("cumulus.reconciler")


class Reconciler:
    """Keeps instances and nodes converging to what is wanted."""

    def __init__(self, gateway: Gateway, fleet: Fleet, store: Store, clock: Clock, *,
                 provider: NodeProvider | None, node_type: NodeType, nodes: int,
                 log_retention: int) -> None:
        self.gateway = gateway
        self.fleet = fleet
        self.store = store
        self.clock = clock
        self.provider = provider
        self.node_type = node_type
        self.nodes_wanted = nodes
        self.log_retention = log_retention
        self._stopping: set[str] = set()

    async def load_functions(self) -> None:
        """Make a pool for every stored function, so `min_instances` holds from the start."""
        for _fn, ver in await asyncio.to_thread(self.store.list_functions):
            self.gateway.set_version(ver)

    async def tick(self) -> None:
        """One pass of mirror-then-act."""
        await self.mirror()
        await self.act()
        await self.flush_logs()

    # -- mirror ------------------------------------------------------------------------------
    async def mirror(self) -> None:
        """Bring the gateway's view in line with what nodes report."""
        for node in await self.fleet.check():
            self._forget_instances_on(node.id)
        known = {i.id for pool in self.gateway.pools.values() for i in pool.all_instances()}
        for node in self.fleet.nodes.values():
            if node.state is not NodeState.READY:
                continue
            for rep in node.instances:
                if rep.instance_id in known or rep.instance_id in self._stopping:
                    continue
                owner = self.gateway.pools.get(rep.function)
                if owner is not None and rep.version == owner.version.version and rep.state == "ready":
                    owner.instances[rep.instance_id] = Instance(
                        id=rep.instance_id, function=rep.function, version=rep.version, node_id=node.id,
                        node_url=node.url, concurrency=rep.concurrency,
                        resources=Resources(rep.cpu_millis, rep.memory_mib), state=InstanceState.READY,
                        last_used=self.clock.now())
                    log.info("event=instance_adopted instance=%s node=%s", rep.instance_id, node.id)
                elif rep.state == "ready":
                    log.info("event=orphan_instance_removed instance=%s node=%s", rep.instance_id, node.id)
                    orphan = Instance(id=rep.instance_id, function=rep.function, version=rep.version,
                                      node_id=node.id, node_url=node.url, concurrency=rep.concurrency,
                                      resources=Resources.ZERO)
                    self._stop_in_background(orphan)

    def _forget_instances_on(self, node_id: str) -> None:
        for pool in self.gateway.pools.values():
            for inst in [i for i in pool.all_instances() if i.node_id == node_id]:
                self.gateway.forget_instance(pool, inst)
                log.warning("event=instance_lost instance=%s node=%s", inst.id, node_id)

    def _stop_in_background(self, inst: Instance) -> None:
        self._stopping.add(inst.id)

        async def run() -> None:
            try:
                await self.gateway.remove_container(inst)
            finally:
                self._stopping.discard(inst.id)

        self.gateway.spawn(run())

    # -- act ---------------------------------------------------------------------------------
    async def act(self) -> None:
        """Drain, reclaim and pre-warm instances; keep the fleet at size."""
        now = self.clock.now()
        for pool in list(self.gateway.pools.values()):
            await self._reconcile_pool(pool, now)
        await self.ensure_fleet()

    async def _reconcile_pool(self, pool: FunctionPool, now: float) -> None:
        for inst in list(pool.draining.values()):
            if inst.is_ready and inst.in_flight == 0:
                log.info("event=instance_drained instance=%s reason=old_version", inst.id)
                await self.gateway.stop_instance(pool, inst)
        live = pool.live()
        reclaim = idle_to_stop(live, now=now, keep_alive_s=pool.config.keep_alive_s,
                               min_instances=pool.config.min_instances)
        for inst_id in reclaim.instance_ids:
            idle = pool.instances.get(inst_id)
            if idle is not None and idle.in_flight == 0:
                log.info("event=instance_reclaimed instance=%s reason=%r", inst_id, reclaim.reason)
                await self.gateway.stop_instance(pool, idle)
        deficit = pool.config.min_instances - len(pool.live())
        for _ in range(max(0, deficit)):
            if self.gateway.start_instance(pool) is None:
                break

    async def ensure_fleet(self) -> None:
        """Keep the provider's node count at the configured size, replacing dead nodes."""
        if self.provider is None:
            return
        provider = self.provider
        try:
            nodes = await asyncio.to_thread(provider.list_instances)
        except ProviderError as exc:
            log.warning("event=provider_list_failed error=%s", exc)
            return
        alive = {n.id for n in nodes}
        for node in list(self.fleet.nodes.values()):
            if node.id not in alive and node.provider == provider.name and node.state is not NodeState.READY:
                log.warning("event=node_gone node=%s", node.id)
                self._forget_instances_on(node.id)
                await asyncio.to_thread(provider.terminate, [node.id], request_id=uuid.uuid4().hex)
                await self.fleet.forget(node.id)
        missing = self.nodes_wanted - len(nodes)
        if missing > 0:
            request_id = uuid.uuid4().hex
            log.info("event=nodes_create count=%d type=%s request=%s", missing, self.node_type.name,
                     request_id)
            try:
                await asyncio.to_thread(provider.create, self.node_type, missing, request_id=request_id)
            except ProviderError as exc:
                log.warning("event=nodes_create_failed error=%s", exc)

    async def flush_logs(self) -> None:
        """Write buffered invocation records in one transaction."""
        if not self.gateway.log_buffer:
            return
        batch, self.gateway.log_buffer = self.gateway.log_buffer, []
        try:
            await asyncio.to_thread(self.store.add_logs, batch, self.log_retention)
        except Exception as exc:  # a log write must never stop the loop
            log.warning("event=log_flush_failed records=%d error=%r", len(batch), exc)

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Tick every `interval_s` until `stop` is set; a failing tick is logged and retried."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("event=reconcile_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
