"""Routes for node agents, not public API (kept out of the OpenAPI docs): joining, heartbeats, code
artifacts, and the agent package new nodes install."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentNode, NodeAgent, ServicesDep
from control_plane.core import Forbidden, InvalidRequest, NotFound, id_prefix
from control_plane.fleet import AGENT_PACKAGE_ROUTE
from control_plane.gateway import RUNTIMES_ROUTE
from control_plane.identity import FunctionRef
from node_agent.protocol import (
    FUNCTION_HEADER,
    INSTANCE_HEADER,
    MAIL_ROUTE,
    REQUEST_ID_HEADER,
    USAGE_ROUTE,
    Heartbeat,
    HeartbeatReply,
    JoinRequest,
    JoinResult,
    UsageBatch,
)

router = APIRouter(include_in_schema=False)


@router.post("/v1/internal/heartbeat")
async def heartbeat(beat: Heartbeat, svc: ServicesDep, node: CurrentNode) -> HeartbeatReply:
    """A node agent reports in, for its own node only and from the URL it joined with (a node moves
    by joining again); it learns where every live control plane is."""
    if beat.node_id != node.node_id:
        raise Forbidden(f"node {node.node_id} may not report for node {beat.node_id[:128]}")
    if beat.url != node.url:
        raise Forbidden(f"node {node.node_id} joined from {node.url}, not {beat.url[:256]}: a node "
                        "moves only by joining again")
    await svc.fleet.heartbeat(beat)
    return HeartbeatReply(control_planes=svc.control_plane_urls())


@router.post(USAGE_ROUTE)
async def usage(batch: UsageBatch, svc: ServicesDep, node: CurrentNode) -> dict[str, int]:
    """A node's usage records: stored (the new ones) before the answer, which lets it drop them."""
    if batch.node_id != node.node_id:
        raise Forbidden(f"node {node.node_id} may not report usage for node {batch.node_id[:128]}")
    stored = await run_in_threadpool(svc.metering.ingest, node.node_id, batch)
    svc.gateway.answered.stored(node.node_id, (r.request_id for r in batch.records if r.request_id))
    return {"stored": stored, "received": len(batch.records)}


@router.post(MAIL_ROUTE, status_code=202)
async def mail(request: Request, svc: ServicesDep, node: CurrentNode) -> dict[str, Any]:
    """A function's message (`context.services.mail.send`), forwarded by its node's agent: sent as
    the tenant of the instance's function, once the instance is one placed on that node."""
    instance = request.headers.get(INSTANCE_HEADER, "")
    function = request.headers.get(FUNCTION_HEADER, "")
    if not instance or not function:
        raise InvalidRequest(f"a service request names its instance ({INSTANCE_HEADER}) and function "
                             f"({FUNCTION_HEADER})")
    if instance.rpartition("-")[0] != id_prefix(function) or not svc.keys.placed_on(instance, node.node_id):
        raise Forbidden(f"node {node.node_id} runs no instance {instance[:128]} of {function[:128]}")
    tenant = FunctionRef.of_key(function).tenant
    return await svc.mailer.send(await request.body(), tenant=tenant, function=function,
                                 request_id=request.headers.get(REQUEST_ID_HEADER, "")[:128])


@router.post("/v1/internal/join", response_model=JoinResult)
async def join(req: JoinRequest, svc: ServicesDep) -> JoinResult:
    """A new node redeems its single-use join token for a node id and the node secret."""
    return await svc.joins.join(req)


@router.get(AGENT_PACKAGE_ROUTE + "/{filename}")
async def agent_package(filename: str, svc: ServicesDep) -> FileResponse:
    """The Cumulus wheel new nodes install (no token: it is this open-source package)."""
    wheel = await run_in_threadpool(svc.joins.package, filename)
    return FileResponse(wheel, media_type="application/octet-stream", filename=wheel.name)


@router.get("/v1/internal/artifacts/{digest}", dependencies=[NodeAgent])
async def artifact(digest: str, svc: ServicesDep) -> FileResponse:
    """A function's code bundle, for node agents."""
    path = await asyncio.to_thread(svc.functions.artifact_path, digest) if digest.isalnum() else None
    if path is None:
        raise NotFound(f"no artifact {digest}")
    return FileResponse(path, media_type="application/zip")


@router.get(RUNTIMES_ROUTE + "/{runtime}", dependencies=[NodeAgent])
async def runtime_image(runtime: str, svc: ServicesDep) -> FileResponse:
    """A runtime image's rootfs, for node agents whose engine lacks it."""
    path = await asyncio.to_thread(svc.runtime_rootfs, runtime)
    return FileResponse(path, media_type="application/x-tar")
