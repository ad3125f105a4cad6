"""Level-triggered loops: read desired and observed state, decide with `placement`, act.

Each tick is safe to run at any time and twice: it looks, then acts on what it saw.
1. Mirror: age nodes by heartbeat; drop instances of Lost nodes; adopt or remove instances of
   this control plane that agents report but the gateway does not know (after a restart); follow
   what other control planes wrote (deploys, deletes, nodes drained or removed by the leader).
2. Act: per function, drain instances of old versions, stop instances idle past the keep-alive;
   the leader also starts instances up to `min_instances`, runs the fleet loop and removes
   instances left on nodes by control planes that died. Flush invocation logs and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from control_plane.cluster import Leadership
from control_plane.core import Clock, InstanceStartFailed
from control_plane.fleet import Fleet, FleetAutoscaler
from control_plane.functions import FunctionCreate, FunctionService
from control_plane.gateway import FunctionPool, Gateway, Instance, InstanceState
from control_plane.store import REMOVED, Store
from control_plane.telemetry import Telemetry
from placement import NodeState, Resources, ScalingPolicy
from placement.brain import FunctionBrain, baseline_s
from placement.routing import idle_to_stop

log = logging.getLogger("cumulus.reconciler")

STABLE_WINDOW_S = 60.0  # Knative's stable window: instances for the average concurrency over it


def scaling_policy(config: FunctionCreate, *, leader: bool) -> ScalingPolicy:
    """A function's autoscaling, from its settings: `concurrency` calls per instance, its min and
    max (the minimum is the leader's to keep), and a stable window of 60 s, or its keep-alive when
    shorter (a function kept alive 5 s does not keep a burst's instances for a minute)."""
    window = max(2.0, min(STABLE_WINDOW_S, baseline_s(config.keep_alive_policy())))
    return ScalingPolicy(target_concurrency=float(config.concurrency),
                         min_instances=config.min_instances if leader else 0,
                         max_instances=config.max_instances, stable_window_s=window,
                         panic_window_s=window / 10)


def _settled(brain: FunctionBrain, now: float) -> bool:
    """Whether a function with no instance and no call is past its keep-alive window for good."""
    last = brain.state.last_request_at
    return last is None or now - last > brain.window().loaded_until_s + brain.scaling.stable_window_s


class Reconciler:
    """Keeps instances and nodes converging to what is wanted."""

    def __init__(self, gateway: Gateway, fleet: Fleet, store: Store, functions: FunctionService,
                 clock: Clock, *, autoscaler: FleetAutoscaler | None, telemetry: Telemetry,
                 leadership: Leadership | None = None, shared_sync_s: float = 2.0) -> None:
        self.gateway = gateway
        self.leadership = leadership  # None: the only control plane, always leading
        self.shared_sync_s = shared_sync_s
        self._synced_at = float("-inf")
        self._functions_marker: tuple[int, float] | None = None
        self.fleet = fleet
        self.store = store
        self.functions = functions
        self.clock = clock
        self.autoscaler = autoscaler
        self.telemetry = telemetry
        self.events = telemetry.events
        self.brains: dict[str, FunctionBrain] = {}  # by function
        self._brain_of: dict[str, tuple[int, bool]] = {}  # the version and leadership it was set up for

    @property
    def is_leader(self) -> bool:
        """Whether this control plane runs the fleet loop and keeps `min_instances` warm."""
        return self.leadership is None or self.leadership.is_leader

    async def load_functions(self) -> None:
        """Make a pool for every stored function, so `min_instances` holds from the start; forget
        pools of functions deleted through another control plane."""
        self._functions_marker = await asyncio.to_thread(self.functions.marker)
        rows = await asyncio.to_thread(self.functions.all)
        for _fn, ver in rows:
            self.gateway.set_version(ver)
        stored = {fn.name for fn, _ in rows}
        for name in [n for n in self.gateway.pools if n not in stored]:
            log.info("event=function_removed_elsewhere function=%s", name)
            await self.gateway.remove_function(name)

    async def sync_shared(self) -> None:
        """Follow what other control planes wrote: deploys and deletes (when the functions'
        marker moved), nodes the leader drains or removed. Every `shared_sync_s`."""
        now = self.clock.now()
        if now - self._synced_at < self.shared_sync_s:
            return
        self._synced_at = now
        if await asyncio.to_thread(self.functions.marker) != self._functions_marker:
            await self.load_functions()
        for rec in await asyncio.to_thread(self.store.list_nodes, removed=True):
            node = self.fleet.nodes.get(rec.id)
            if node is None:
                if rec.state == REMOVED:
                    self.fleet.retired.add(rec.id)
                continue
            if rec.state == REMOVED:
                log.info("event=node_removed_elsewhere node=%s", rec.id)  # the leader recorded why
                self.gateway.forget_node(rec.id)
                self.fleet.forget_local(rec.id)
            elif rec.state == NodeState.DRAINING.value and node.state is NodeState.READY:
                node.state = NodeState.DRAINING
                node.since = now
                self.gateway.drain_node(rec.id)

    async def tick(self) -> None:
        """One pass of mirror-then-act."""
        await self.sync_shared()
        await self.mirror()
        await self.act()
        await self.telemetry.flush()

    # -- mirror ------------------------------------------------------------------------------
    async def mirror(self) -> None:
        """Bring the gateway's view in line with what nodes report."""
        for node in await self.fleet.check():
            if self.is_leader:  # one event per loss, not one per control plane
                self.events.record("node_lost", f"{node.id} missed heartbeats for "
                                   f"{self.fleet.lost_after_s:.0f}s", node_id=node.id)
            self.gateway.forget_node(node.id)
            self.gateway.room_changed()  # calls waiting for it to report learn that it will not
        self.adopt()

    def adopt(self) -> None:
        """Take in the instances nodes report: adopt this control plane's own (after a restart),
        leave other live control planes' alone, stop what nobody placed or whose owner died. Also
        run the moment a node reports ready, so that a call waiting for that node (right after a
        restart) finds the warm instance it had instead of starting another."""
        known = {i.id for pool in self.gateway.pools.values() for i in pool.all_instances()}
        live_owners = self.leadership.live_ids() if self.leadership is not None else {self.gateway.owner}
        for node in self.fleet.nodes.values():
            if node.state is not NodeState.READY:
                continue
            for rep in node.unknown:  # no control plane of the cluster placed it there: it goes
                settling = self.gateway.stops.settling(rep.instance_id)
                if self.is_leader and rep.state == "ready" and not settling:
                    log.warning("event=unplaced_instance_removed instance=%s node=%s", rep.instance_id,
                                node.id)
                    self.gateway.stop_in_background(Instance(
                        id=rep.instance_id, function=rep.function, version=rep.version, node_id=node.id,
                        node_url=node.url, concurrency=rep.concurrency, resources=Resources.ZERO))
            for rep in node.instances:
                if rep.instance_id in known or self.gateway.stops.settling(rep.instance_id):
                    continue
                if rep.owner != self.gateway.owner:
                    # Another control plane's: its business while it lives; the leader cleans up
                    # after one that died.
                    if self.is_leader and rep.owner not in live_owners and rep.state == "ready":
                        log.info("event=dead_owner_instance_removed instance=%s owner=%s node=%s",
                                 rep.instance_id, rep.owner, node.id)
                        self.gateway.stop_in_background(Instance(
                            id=rep.instance_id, function=rep.function, version=rep.version, node_id=node.id,
                            node_url=node.url, concurrency=rep.concurrency, resources=Resources.ZERO))
                    continue
                unstopped = self.gateway.stops.unconfirmed(rep.instance_id)
                if unstopped is not None:  # its stop was never confirmed: stop it, never adopt it
                    self.gateway.stop_in_background(unstopped)
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
                    self.gateway.stop_in_background(orphan)

    async def recover_instances(self) -> None:
        """After a restart: instance starts and stops a previous run of this control plane wrote
        down but never saw answered are settled, by stopping those instances (a start is rolled
        back, a stop finished; the agent's stop is idempotent). Those on nodes that are gone are
        simply closed."""
        intents = await asyncio.to_thread(self.store.instance_intents, self.gateway.owner)
        for intent in intents:
            inst = Instance(id=intent.instance_id, function=intent.function, version=0,
                            node_id=intent.node_id, node_url=intent.node_url, concurrency=1,
                            resources=Resources.ZERO)
            log.info("event=instance_intent_replayed instance=%s kind=%s node=%s", inst.id, intent.kind,
                     inst.node_id)
            if intent.node_id in self.fleet.nodes:
                self.gateway.stop_in_background(inst)
            else:
                await asyncio.to_thread(self.store.close_instance_intent, inst.id, intent.kind)

    # -- act ---------------------------------------------------------------------------------
    async def act(self) -> None:
        """Drain, reclaim and pre-warm instances; keep the fleet at size."""
        now = self.clock.now()
        for pool in list(self.gateway.pools.values()):
            await self._reconcile_pool(pool, now)
        for name in [n for n in self.brains if n not in self.gateway.pools]:
            del self.brains[name]  # the function was deleted
            self._brain_of.pop(name, None)
        await self.ensure_fleet()

    def brain(self, pool: FunctionPool) -> FunctionBrain:
        """The function's decision object (`placement.brain`, the one the simulator replays), set
        up from its current settings."""
        config, leader, version = pool.config, self.is_leader, pool.version.version
        brain = self.brains.get(config.name)
        if brain is not None and self._brain_of.get(config.name) == (version, leader):
            return brain  # the same version and leadership as last tick: nothing to parse again
        self._brain_of[config.name] = (version, leader)
        scaling, policy = scaling_policy(config, leader=leader), config.keep_alive_policy()
        if brain is None:
            brain = self.brains[config.name] = FunctionBrain(config.name, scaling, policy)
        else:
            brain.reconfigure(scaling, policy)
        return brain

    async def _reconcile_pool(self, pool: FunctionPool, now: float) -> None:
        for inst in list(pool.draining.values()):
            if inst.is_ready and inst.in_flight == 0:
                log.info("event=instance_drained instance=%s reason=old_version", inst.id)
                self.gateway.retire(pool, inst)
        live = pool.live()
        brain = self.brain(pool)
        for idle_s in pool.idle_periods:
            brain.idle_ended(idle_s)
        pool.idle_periods.clear()
        peak = pool.take_peak()
        if peak:  # the latest call ends now, or ended when the function last went idle
            last: float | None = now if pool.in_flight or pool.idle_since is None else pool.idle_since
        elif brain.state.last_request_at is None:  # adopted after a restart: idle since adopted
            last = max((i.last_used for i in live), default=None)
        else:
            last = None
        if not live and not peak and not brain.scaling.min_instances and _settled(brain, now):
            return  # unloaded for good until its next call: nothing to decide
        brain.observe(now, peak, last_request_at=last)
        decision = brain.decide(now, len(live))
        if decision.desired < len(live):
            reclaim = idle_to_stop(live, now=now, keep_alive_s=0.0, min_instances=decision.desired)
            for inst_id in reclaim.instance_ids:
                idle = pool.instances.get(inst_id)
                if idle is not None and idle.in_flight == 0:
                    log.info("event=instance_reclaimed instance=%s reason=%r", inst_id, decision.reason)
                    self.gateway.retire(pool, idle)
        # Until every stored node has reported since the start, their instances are not adopted
        # yet: starting more now would run the function twice over.
        wanted = decision.desired
        if isinstance(pool.last_start_error, InstanceStartFailed):
            # Its last start failed: only `min_instances` are retried here (each tick); beyond that,
            # the next call tries again, so a function that cannot start is not restarted in a loop.
            wanted = min(wanted, brain.scaling.min_instances)
        deficit = 0 if self.fleet.unheard else wanted - len(pool.live())
        started = 0
        for i in range(max(0, deficit)):
            if self.gateway.start_instance(pool) is None:
                pool.unplaced = deficit - i  # pending demand, when it is for min_instances
                break
            started += 1
        if started:
            log.info("event=instances_started function=%s count=%d reason=%r", pool.config.name, started,
                     decision.reason)

    async def ensure_fleet(self) -> None:
        """One tick of the fleet autoscaler (when a provider is configured)."""
        if self.autoscaler is not None and self.is_leader:
            await self.autoscaler.tick()

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Tick every `interval_s` until `stop` is set; a failing tick is logged and retried."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("event=reconcile_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
