"""REST routes. Thin: parse, authorize, call the store or the gateway, shape the answer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from control_plane.artifacts import build_artifact, remove_artifact
from control_plane.auth import Principal
from control_plane.errors import Forbidden, InvalidConfig, NotFound, PayloadTooLarge
from control_plane.leadership import LEASE
from control_plane.models import (
    DeployResult,
    Function,
    FunctionConfig,
    FunctionPublic,
    FunctionVersion,
    JoinRequest,
    JoinResult,
)
from control_plane.platform import Platform
from control_plane.settings import MAX_PAYLOAD_BYTES
from node_agent.protocol import Heartbeat

router = APIRouter()
log = logging.getLogger("cumulus.api")


def platform(request: Request) -> Platform:
    """The Platform this app serves."""
    return request.app.state.platform  # type: ignore[no-any-return]


PlatformDep = Annotated[Platform, Depends(platform)]


async def current_user(request: Request, plat: PlatformDep) -> Principal:
    """The authenticated caller (401 otherwise)."""
    return await plat.auth.user(request.headers.get("authorization", "").encode() or None)


async def node_agent(request: Request, plat: PlatformDep) -> None:
    """Only node agents (holding the node token) may call internal routes."""
    plat.auth.node(request.headers.get("authorization", "").encode() or None)


CurrentUser = Annotated[Principal, Depends(current_user)]


def _public(plat: Platform, fn: Function, ver: FunctionVersion) -> FunctionPublic:
    pool = plat.gateway.pools.get(fn.name)
    live = pool.live() if pool else []
    ready = sum(1 for i in live if i.is_ready)
    return FunctionPublic(name=fn.name, version=ver.version, url=function_url(plat, fn.name),
                          config=json.loads(ver.config_json), code_digest=ver.code_digest,
                          code_size=ver.code_size, created_at=fn.created_at, updated_at=fn.updated_at,
                          instances=ready, starting=len(live) - ready)


def function_url(plat: Platform, name: str) -> str:
    """The invocation endpoint of a function."""
    return f"{plat.settings.url}/v1/functions/{name}/invoke"


@router.get("/healthz", tags=["meta"])
async def healthz() -> dict[str, str]:
    """Liveness: no authentication."""
    return {"status": "ok"}


@router.post("/v1/functions", status_code=201, response_model=DeployResult, tags=["functions"])
async def deploy(plat: PlatformDep, user: CurrentUser,
                 code: Annotated[UploadFile, File(description="the function's code as a zip")],
                 config: Annotated[str, Form(description="FunctionConfig as JSON")]) -> DeployResult:
    """Deploy a new immutable version of a function (creating it if new)."""
    if not user.is_admin:
        raise Forbidden("only admins may deploy")
    try:
        cfg = FunctionConfig.model_validate_json(config)
    except ValidationError as exc:
        raise InvalidConfig(_validation_message(exc), details=_validation_details(exc)) from exc
    data = await code.read()
    digest, size = await run_in_threadpool(build_artifact, data, cfg.handler, plat.artifacts_dir)
    # In the database before the version that names it: every control plane can serve it.
    await run_in_threadpool(plat.share_artifact, digest)
    ver = await run_in_threadpool(plat.store.add_version, cfg, digest, size)
    plat.gateway.set_version(ver)
    return DeployResult(name=cfg.name, version=ver.version, url=function_url(plat, cfg.name))


@router.get("/v1/functions", response_model=list[FunctionPublic], tags=["functions"])
async def list_functions(plat: PlatformDep, user: CurrentUser) -> list[FunctionPublic]:
    """Every function with its latest version."""
    rows = await run_in_threadpool(plat.store.list_functions)
    return [_public(plat, fn, ver) for fn, ver in rows]


@router.get("/v1/functions/{name}", response_model=FunctionPublic, tags=["functions"])
async def get_function(name: str, plat: PlatformDep, user: CurrentUser) -> FunctionPublic:
    """One function."""
    fn, ver = await run_in_threadpool(plat.store.get_function, name)
    return _public(plat, fn, ver)


@router.delete("/v1/functions/{name}", status_code=204, tags=["functions"])
async def delete_function(name: str, plat: PlatformDep, user: CurrentUser) -> Response:
    """Delete a function, its versions and logs, and stop its instances."""
    if not user.is_admin:
        raise Forbidden("only admins may delete functions")
    unused = await run_in_threadpool(plat.store.delete_function, name)
    await plat.gateway.remove_function(name)
    for digest in unused:
        remove_artifact(plat.artifacts_dir, digest)
    return Response(status_code=204)


@router.post("/v1/functions/{name}/invoke", tags=["functions"],
             responses={200: {"description": "the handler's JSON result"}})
async def invoke(name: str, request: Request, plat: PlatformDep, user: CurrentUser) -> Response:
    """Invoke a function with the request body (JSON) as its event.

    Served by a raw ASGI fast path in front of FastAPI (see `control_plane.app`); this route gives
    the same behaviour and documents it. Headers `X-Cumulus-Cold-Start` and `X-Cumulus-Duration-Ms`
    tell whether the call waited for a new instance and how long the handler ran."""
    body = await request.body()
    if len(body) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"the event is over the limit of {MAX_PAYLOAD_BYTES} bytes")
    result = await plat.gateway.invoke(name, body)
    return Response(content=result.body, status_code=result.status, headers=result.headers)


@router.get("/v1/functions/{name}/logs", tags=["functions"])
async def logs(name: str, plat: PlatformDep, user: CurrentUser,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """The function's newest invocations (oldest first) with their captured stdout/stderr."""
    await run_in_threadpool(plat.store.get_function, name)
    await plat.reconciler.flush_logs()
    rows = await run_in_threadpool(plat.store.logs, name, limit)
    return [r.model_dump(exclude={"id"}) for r in rows]


@router.get("/v1/nodes", tags=["fleet"])
async def nodes(plat: PlatformDep, user: CurrentUser) -> list[dict[str, Any]]:
    """Nodes with capacity, allocation and instances."""
    allocated = plat.gateway.occupancy.allocated()
    out = []
    for node in plat.fleet.nodes.values():
        used = allocated.get(node.id)
        out.append({"id": node.id, "state": node.state.value, "provider": node.provider,
                    "node_type": node.node_type, "url": node.url,
                    "capacity": {"cpu_millis": node.capacity.cpu_millis,
                                 "memory_mib": node.capacity.memory_mib},
                    "allocated": {"cpu_millis": used.cpu_millis if used else 0,
                                  "memory_mib": used.memory_mib if used else 0},
                    "instances": len(node.instances),
                    "utilization": round(used.max_share_of(node.capacity), 3) if used else 0.0,
                    "age_s": round(plat.clock.now() - node.since, 1),
                    "last_heartbeat_s": round(plat.clock.now() - node.last_heartbeat, 1)})
    return out


@router.get("/v1/events", tags=["fleet"])
async def events(plat: PlatformDep, user: CurrentUser,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """Scaling decisions and fleet observations with their reasons, oldest first."""
    await plat.reconciler.flush_logs()
    rows = await run_in_threadpool(plat.store.events, limit)
    return [r.model_dump(exclude={"id"}) for r in rows]


@router.post("/v1/internal/heartbeat", include_in_schema=False, dependencies=[Depends(node_agent)])
async def heartbeat(beat: Heartbeat, plat: PlatformDep) -> dict[str, Any]:
    """A node agent reports in; it learns where every live control plane is."""
    await plat.fleet.heartbeat(beat)
    return {"ok": True, "control_planes": plat.control_plane_urls()}


@router.get("/v1/control-planes", tags=["fleet"])
async def control_planes(plat: PlatformDep, user: CurrentUser) -> list[dict[str, Any]]:
    """The cluster's live control planes and which one leads (runs the fleet loop)."""
    lease = await run_in_threadpool(plat.store.lease, LEASE)
    return [{"id": m.id, "url": m.url, "leader": lease is not None and lease.holder == m.id,
             "generation": lease.generation if lease is not None and lease.holder == m.id else None,
             "last_seen_s": round(max(0.0, time.time() - m.last_seen), 1), "self": m.id == plat.id}
            for m in plat.leadership.members]


@router.post("/v1/internal/join", include_in_schema=False, response_model=JoinResult)
async def join(req: JoinRequest, plat: PlatformDep) -> JoinResult:
    """A new node redeems its single-use join token for a node id and the node secret."""
    node_id = req.provider_node_id or f"node-{uuid.uuid4().hex[:10]}"
    row = await run_in_threadpool(plat.store.redeem_join_token, req.join_token, node_id)
    plat.fleet.joined[node_id] = row.request_id
    log.info("event=node_joined node=%s request=%s url=%s", node_id, row.request_id, req.url)
    return JoinResult(node_id=node_id, node_token=plat.node_token)


@router.get("/v1/agent/package/{filename}", include_in_schema=False)
async def agent_package(filename: str, plat: PlatformDep) -> FileResponse:
    """The Cumulus wheel new nodes install (public: it is this open-source package)."""
    wheel = await run_in_threadpool(plat.agent_package.wheel)
    if filename != wheel.name:
        raise NotFound(f"no package {filename}; this control plane serves {wheel.name}")
    return FileResponse(wheel, media_type="application/octet-stream", filename=wheel.name)


@router.get("/v1/internal/artifacts/{digest}", include_in_schema=False,
            dependencies=[Depends(node_agent)])
async def artifact(digest: str, plat: PlatformDep) -> FileResponse:
    """A function's code bundle, for node agents."""
    path = await asyncio.to_thread(plat.artifact_path, digest) if digest.isalnum() else None
    if path is None:
        raise NotFound(f"no artifact {digest}")
    return FileResponse(path, media_type="application/zip")


def _validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]


def _validation_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(x) for x in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()]
    return "invalid config: " + "; ".join(parts)
