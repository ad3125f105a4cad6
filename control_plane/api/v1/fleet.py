"""`/v1/nodes`, `/v1/events`, `/v1/control-planes`: the fleet, its decisions, and the control planes."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import ClusterAdmin, ServicesDep
from control_plane.api.openapi import errors
from control_plane.cluster import LEASE, ControlPlanePublic
from control_plane.fleet import NodePublic, ResourcesPublic
from control_plane.telemetry import EventPublic
from placement import Resources

router = APIRouter(prefix="/v1", tags=["fleet"])


def _resources(res: Resources) -> ResourcesPublic:
    return ResourcesPublic(cpu_millis=res.cpu_millis, memory_mib=res.memory_mib)


@router.get("/nodes", responses=errors(401, 403))
async def nodes(svc: ServicesDep, user: ClusterAdmin) -> list[NodePublic]:
    """Nodes with capacity, allocation and instances."""
    allocated = svc.gateway.allocated()
    now = svc.clock.now()
    out = []
    for node in svc.fleet.nodes.values():
        used = allocated.get(node.id, Resources.ZERO)
        out.append(NodePublic(id=node.id, state=node.state.value, provider=node.provider,
                              node_type=node.node_type, url=node.url, capacity=_resources(node.capacity),
                              allocated=_resources(used), instances=len(node.instances),
                              utilization=round(used.max_share_of(node.capacity), 3),
                              age_s=round(now - node.since, 1),
                              last_heartbeat_s=round(now - node.last_heartbeat, 1)))
    return out


@router.get("/events", responses=errors(401, 403, 422))
async def events(svc: ServicesDep, user: ClusterAdmin,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[EventPublic]:
    """Scaling decisions and fleet observations with their reasons, oldest first."""
    await svc.telemetry.flush()
    rows = await run_in_threadpool(svc.store.events, limit)
    return [EventPublic.model_validate(r) for r in rows]


@router.get("/control-planes", responses=errors(401, 403))
async def control_planes(svc: ServicesDep, user: ClusterAdmin) -> list[ControlPlanePublic]:
    """The cluster's live control planes and which one leads (runs the fleet loop)."""
    lease = await run_in_threadpool(svc.store.lease, LEASE)
    out = []
    for m in svc.leadership.members:
        leads = lease is not None and lease.holder == m.id
        out.append(ControlPlanePublic(id=m.id, url=m.url, leader=leads,
                                      generation=lease.generation if lease is not None and leads else None,
                                      last_seen_s=round(max(0.0, time.time() - m.last_seen), 1),
                                      self=m.id == svc.id))
    return out
