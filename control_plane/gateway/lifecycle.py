"""An instance's lifecycle through its node agent: placed on a node, started (its intent written
first), ready, retired, stopped (its intent written first, its stop tracked until confirmed).

Mixed into `Gateway`, whose state it works on: pools, fleet, occupancy, stops, agents, store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from control_plane.core import Clock, CumulusError, InstanceStartFailed, NoCapacity
from control_plane.fleet import Fleet
from control_plane.functions import FunctionCreate
from control_plane.gateway.agents import AgentCallFailed, AgentClient, AgentUnreachable
from control_plane.gateway.occupancy import Occupancy
from control_plane.gateway.pools import FunctionPool, Instance, InstanceState
from control_plane.gateway.ports import GatewayStore
from control_plane.gateway.stops import StopTracker
from node_agent import protocol as p
from placement import PlacementRequest, Resources, place

log = logging.getLogger("cumulus.gateway")

RUNTIMES_ROUTE = "/v1/internal/runtimes"  # + "/<runtime>": its rootfs, for nodes whose engine lacks it


class InstanceLifecycle:
    """Starting and stopping instances (see the module docstring)."""

    store: GatewayStore
    fleet: Fleet
    clock: Clock
    agents: AgentClient
    owner: str
    occupancy: Occupancy
    stops: StopTracker
    instance_id: Callable[[str, str], str]  # a new id for (function, node)
    spawn: Callable[[Coroutine[Any, Any, None]], None]
    runtime_images: Mapping[str, str]  # runtime name -> the image its instances run from

    @staticmethod
    def _resources(config: FunctionCreate) -> Resources:
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
        inst = Instance(id=self.instance_id(config.name, node.id), function=config.name,
                        version=pool.version.version, node_id=node.id, node_url=node.url,
                        concurrency=config.concurrency, resources=res)
        pool.instances[inst.id] = inst
        self.spawn(self._start(pool, inst))
        return inst

    async def _start(self, pool: FunctionPool, inst: Instance) -> None:
        config = pool.config
        version = pool.version
        if config.package_type == "image":
            image, image_url = config.image or "", (
                f"/v1/internal/artifacts/{version.code_digest}" if version.code_digest else "")
        else:
            image = self.runtime_images.get(config.runtime, "")
            image_url = f"{RUNTIMES_ROUTE}/{config.runtime}"
        req = p.InstanceStart(function=config.name, version=inst.version, handler=config.handler,
                              code_digest=version.code_digest,
                              code_url=f"/v1/internal/artifacts/{version.code_digest}",
                              memory_mib=config.memory_mb, cpu_millis=inst.resources.cpu_millis,
                              timeout_s=config.timeout_s, concurrency=config.concurrency,
                              env=config.environment(), owner=self.owner, package_type=config.package_type,
                              image=image, image_url=image_url,
                              image_archive=config.package_type == "image",
                              command=config.command,
                              layer_digest=version.layer_digest or "",
                              layer_url=f"/v1/internal/artifacts/{version.layer_digest}"
                              if version.layer_digest else "",
                              network=config.network or "none")
        error: CumulusError | None = None
        full = unreachable = False
        try:
            await self._intent(inst, "start")
            answer = await self.agents.start(inst, req)
            full = answer.full
            if not answer.ready:
                error = InstanceStartFailed(f"starting {config.name}: {answer.message}")
        except AgentUnreachable as exc:  # nothing was sent: not the function's fault, try elsewhere
            unreachable = True
            log.warning("event=node_unreachable node=%s instance=%s error=%s", inst.node_id, inst.id, exc)
            self.spawn(self._intent_done(inst.id, "start"))
        except AgentCallFailed as exc:
            error = InstanceStartFailed(f"starting {config.name}: {exc}")
            self.stop_in_background(inst)  # the agent may have started it: roll back
        except Exception as exc:  # the intent could not be written: nothing was asked of the agent
            error = InstanceStartFailed(f"starting {config.name}: cannot record it: {exc!r}")
        else:
            self.spawn(self._intent_done(inst.id, "start"))
        async with pool.cond:
            if full or unreachable:  # not the function's fault: place it again, elsewhere or later
                pool.instances.pop(inst.id, None)
                pool.draining.pop(inst.id, None)
                # No placements there until the node reports again (a dead one never does).
                self.occupancy.mark_full(inst.node_id, self.clock.now())
                if full:
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
                if isinstance(pool.last_start_error, InstanceStartFailed):
                    pool.last_start_error = None  # it starts again
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
        done = False
        try:
            await self._intent(inst, "stop")
            await self.agents.stop(inst)
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
        await asyncio.to_thread(lambda: self.store.open_instance_intent(
            inst.id, owner=self.owner, kind=kind, function=inst.function, node_id=inst.node_id,
            node_url=inst.node_url))

    async def _intent_done(self, instance_id: str, kind: str) -> None:
        try:
            await asyncio.to_thread(self.store.close_instance_intent, instance_id, kind)
        except Exception as exc:  # left open: replayed (idempotently) after a restart
            log.warning("event=instance_intent_close_failed instance=%s error=%r", instance_id, exc)


    def forget_instance(self, pool: FunctionPool, inst: Instance) -> None:
        """Forget an instance its node has already removed (or that is unreachable)."""
        if pool.instances.pop(inst.id, None) or pool.draining.pop(inst.id, None):
            inst.state = InstanceState.STOPPING
