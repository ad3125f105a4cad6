"""`/v1/functions`: deploy, list, read, delete, invoke, and read the logs of functions."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, Security, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentUser, Services, ServicesDep, function_url
from control_plane.api.openapi import bearer, errors
from control_plane.core import CumulusError, Forbidden, InvalidCode, InvalidConfig, NotFound, PayloadTooLarge
from control_plane.functions import (
    BUILD_ID,
    MAX_ARCHIVE_BYTES,
    MAX_UPLOAD_BYTES,
    DeployedVersion,
    DeployResult,
    FunctionCreate,
    FunctionPublic,
    parse_config,
    public_config,
)
from control_plane.identity import Principal
from control_plane.store import Function
from control_plane.telemetry import InvocationPublic

router = APIRouter(prefix="/v1/functions", tags=["functions"])
builds = APIRouter(prefix="/v1/builds", tags=["functions"])


class BuildStage(BaseModel):
    """One stage a build went through."""

    at: float
    message: str


class BuildPublic(BaseModel):
    """What a named deploy's build has done so far."""

    id: str
    stages: list[BuildStage]
    done: bool
    error: str = ""


@builds.get("/{build_id}", response_model=BuildPublic, responses=errors(401, 403, 404))
async def get_build(build_id: str, svc: ServicesDep, user: CurrentUser) -> BuildPublic:
    """The stages of a deploy's build (named by its `X-Cumulus-Build-Id`), on the control plane
    that runs it, for an hour."""
    if not user.is_admin:
        raise Forbidden("only admins may read builds")
    status = svc.functions.progress.get(build_id) if BUILD_ID.match(build_id) else None
    if status is None:
        raise NotFound(f"no build {build_id[:64]} on this control plane")
    return BuildPublic(id=build_id, stages=[BuildStage(at=at, message=m) for at, m in status.stages],
                       done=status.done, error=status.error)


def _public(svc: Services, fn: Function, ver: DeployedVersion, user: Principal) -> FunctionPublic:
    pool = svc.gateway.pools.get(fn.name)
    live = pool.live() if pool else []
    ready = sum(1 for i in live if i.is_ready)
    in_flight = sum(i.in_flight for i in pool.all_instances()) if pool else 0
    return FunctionPublic(name=fn.name, version=ver.version, url=function_url(svc, fn.name),
                          config=public_config(ver, reveal_env=user.is_admin), code_digest=ver.code_digest,
                          code_size=ver.code_size,
                          created_at=fn.created_at, updated_at=fn.updated_at, instances=ready,
                          starting=len(live) - ready, in_flight=in_flight)


@router.post("", status_code=201, response_model=DeployResult,
             responses=errors(400, 401, 403, 409, 413, 422, 503))
async def deploy(svc: ServicesDep, user: CurrentUser,
                 config: Annotated[str, Form(description="FunctionCreate as JSON")],
                 code: Annotated[UploadFile | None, File(description="a zip function's code")] = None,
                 image: Annotated[UploadFile | None, File(description=(
                     "an image function's `docker save` archive (or none: `image` in the config names one "
                     "the nodes hold)"))] = None,
                 build_id: Annotated[str | None, Header(alias="X-Cumulus-Build-Id", description=(
                     "names this deploy's build: `GET /v1/builds/{id}` shows its stages meanwhile"))] = None,
                 ) -> DeployResult:
    """Deploy a new immutable version of a function (creating it if new)."""
    if not user.is_admin:
        raise Forbidden("only admins may deploy")
    if build_id is not None and not BUILD_ID.match(build_id):
        raise InvalidConfig("X-Cumulus-Build-Id must be 8 to 64 letters, digits, '-' or '_'")
    cfg = parse_config(config)
    if cfg.package_type == "image":
        if code is not None:
            raise InvalidCode("an image function has no code zip: upload its image archive as `image`")
        ver = await _deploy_image(svc, cfg, image)
        svc.gateway.set_version(ver)
        return DeployResult(name=cfg.name, version=ver.version, url=function_url(svc, cfg.name))
    if code is None or image is not None:
        raise InvalidCode("a zip function's deploy uploads its code as `code` (an image archive as `image` "
                          "is for package_type 'image')")
    progress = svc.functions.progress
    report = (lambda message: progress.stage(build_id, message)) if build_id else None
    try:
        ver = await run_in_threadpool(svc.functions.deploy, cfg, await _read_zip(code), report)
    except Exception as exc:
        if build_id:
            progress.finish(build_id, exc.message if isinstance(exc, CumulusError) else "internal error")
        raise
    if build_id:
        progress.finish(build_id)
    svc.gateway.set_version(ver)
    return DeployResult(name=cfg.name, version=ver.version, url=function_url(svc, cfg.name))


async def _read_zip(upload: UploadFile) -> bytes:
    """A code zip, read only up to its bound (the deploy body may be as large as an image archive)."""
    data = bytearray()
    while chunk := await upload.read(1 << 20):
        data += chunk
        if len(data) > MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(f"the zip is over {MAX_UPLOAD_BYTES // 2**20} MiB")
    return bytes(data)


async def _deploy_image(svc: Services, cfg: FunctionCreate, upload: UploadFile | None) -> DeployedVersion:
    """An image function's deploy: its archive copied to a file of the build folder (never whole
    in memory), checked and stored; or no archive, for an image the nodes hold."""
    if upload is None:
        return await run_in_threadpool(svc.functions.deploy_image, cfg, None)
    folder = svc.functions.artifacts_dir.parent / "build"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix="image-", suffix=".tar") as out:
        size = 0
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > MAX_ARCHIVE_BYTES:
                raise PayloadTooLarge(f"the image archive is over {MAX_ARCHIVE_BYTES // 2**20} MiB")
            out.write(chunk)
        out.flush()
        return await run_in_threadpool(svc.functions.deploy_image, cfg, Path(out.name))


@router.get("", response_model=list[FunctionPublic], responses=errors(401))
async def list_functions(svc: ServicesDep, user: CurrentUser) -> list[FunctionPublic]:
    """Every function with its latest version."""
    rows = await run_in_threadpool(svc.functions.all)
    return [_public(svc, fn, ver, user) for fn, ver in rows]


@router.get("/{name}", response_model=FunctionPublic, responses=errors(401, 404))
async def get_function(name: str, svc: ServicesDep, user: CurrentUser) -> FunctionPublic:
    """One function."""
    fn, ver = await run_in_threadpool(svc.functions.latest, name)
    return _public(svc, fn, ver, user)


@router.delete("/{name}", status_code=204, responses=errors(401, 403, 404))
async def delete_function(name: str, svc: ServicesDep, user: CurrentUser) -> Response:
    """Delete a function, its versions and logs, and stop its instances."""
    if not user.is_admin:
        raise Forbidden("only admins may delete functions")
    await run_in_threadpool(svc.functions.delete, name)
    await svc.gateway.remove_function(name)
    return Response(status_code=204)


@router.post("/{name}/invoke", dependencies=[Security(bearer)],
             responses={200: {"description": "the handler's JSON result",
                              "content": {"application/json": {"schema": {}}}},
                        **errors(400, 401, 404, 413, 429, 502, 503, 504)},
             openapi_extra={"requestBody": {"required": False, "description": "the event: any JSON, up "
                                            "to 6 MB, nested at most 256 levels",
                                            "content": {"application/json": {"schema": {}}}}})
async def invoke(name: str, request: Request, svc: ServicesDep) -> Response:
    """Invoke a function with the request body (JSON) as its event; needs `Authorization: Bearer`.

    Served by a raw ASGI fast path in front of FastAPI (`control_plane.gateway.InvokeFastPath`);
    this route delegates to the same implementation and documents it. Headers `X-Cumulus-Cold-Start`
    and `X-Cumulus-Duration-Ms` tell whether the call waited for a new instance and how long the
    handler ran."""
    answer = await svc.invoke.answer(name, request.headers.raw, request.receive)
    headers = {k.decode(): v.decode() for k, v in answer.headers if k != b"content-length"}
    return Response(content=answer.body, status_code=answer.status, headers=headers)


@router.get("/{name}/logs", responses=errors(401, 404, 422))
async def logs(name: str, svc: ServicesDep, user: CurrentUser,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[InvocationPublic]:
    """The function's newest invocations (oldest first) with their captured stdout/stderr."""
    await run_in_threadpool(svc.functions.latest, name)
    await svc.telemetry.flush()
    rows = await run_in_threadpool(svc.store.logs, name, limit)
    return [InvocationPublic.model_validate(r) for r in rows]
