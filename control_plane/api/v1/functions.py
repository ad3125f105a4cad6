"""`/v1/functions`: deploy, list, read, delete, invoke, and read the logs of functions; their async
calls and dead letters."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, Security, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentUser, Services, ServicesDep, function_url
from control_plane.api.openapi import bearer, errors
from control_plane.core import (
    ConflictError,
    CumulusError,
    InvalidCode,
    InvalidConfig,
    NotFound,
    PayloadTooLarge,
    QueueUnavailable,
    QuotaExceeded,
)
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
from control_plane.identity import (
    CLUSTER,
    Action,
    Admin,
    FunctionRef,
    Permission,
    Principal,
    Quotas,
    allowed,
    authorize,
    check_function_name,
)
from control_plane.jobs import JobQueueError
from control_plane.store import Function
from control_plane.telemetry import InvocationPublic

router = APIRouter(prefix="/v1/functions", tags=["functions"])
AsyncState = Literal["queued", "running", "retrying", "succeeded", "failed", "dead_lettered"]
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


@builds.get("/{build_id}", response_model=BuildPublic, responses=errors(401, 404))
async def get_build(build_id: str, svc: ServicesDep, user: CurrentUser) -> BuildPublic:
    """The stages of a deploy's build (named by its `X-Cumulus-Build-Id`), on the control plane
    that runs it, for an hour: for the user who deploys (and cluster admins)."""
    status = svc.functions.progress.get(build_id) if BUILD_ID.match(build_id) else None
    if status is not None and status.owner != user.user and not user.is_admin:
        status = None  # another user's build is none of the caller's business, nor its existence
    if status is None:
        raise NotFound(f"no build {build_id[:64]} on this control plane")
    return BuildPublic(id=build_id, stages=[BuildStage(at=at, message=m) for at, m in status.stages],
                       done=status.done, error=status.error)


def _public(svc: Services, fn: Function, ver: DeployedVersion, user: Principal) -> FunctionPublic:
    pool = svc.gateway.pools.get(fn.name)
    live = pool.live() if pool else []
    ready = sum(1 for i in live if i.is_ready)
    in_flight = sum(i.in_flight for i in pool.all_instances()) if pool else 0
    ref = FunctionRef.of_key(fn.name)
    config = public_config(ver, reveal_env=allowed(user, Permission.DEPLOY, ref))
    config["name"] = ref.name
    return FunctionPublic(name=ref.name, tenant=ref.tenant, version=ver.version,
                          url=function_url(svc, fn.name), config=config, code_digest=ver.code_digest,
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
    """Deploy a new immutable version of a function (creating it if new, within its tenant's quota
    of functions: 403 QuotaExceeded before anything is written)."""
    if build_id is not None and not BUILD_ID.match(build_id):
        raise InvalidConfig("X-Cumulus-Build-Id must be 8 to 64 letters, digits, '-' or '_'")
    cfg = parse_config(config)
    ref = FunctionRef.parse(cfg.name, user.tenant)
    authorize(user, Permission.DEPLOY, ref)
    check_function_name(ref)
    tenant = await run_in_threadpool(svc.store.tenant, ref.tenant)
    limits = Quotas.model_validate(tenant.quotas)
    if limits.memory_mib is not None and cfg.memory_mb > limits.memory_mib:
        raise QuotaExceeded(f"{cfg.memory_mb} MiB is over tenant {ref.tenant}'s quota 'memory_mib' of "
                            f"{limits.memory_mib} MiB per instance", quota="memory_mib", status=403)
    cfg = cfg.model_copy(update={"name": ref.key})
    quota: dict[str, Any] = {"tenant": ref.tenant, "max_functions": limits.functions}
    await run_in_threadpool(svc.functions.check_function_quota, ref.key, ref.tenant, limits.functions)
    if cfg.package_type == "image":
        if code is not None:
            raise InvalidCode("an image function has no code zip: upload its image archive as `image`")
        ver = await _deploy_image(svc, cfg, image, quota)
        svc.gateway.set_version(ver)
        return _deployed(svc, ref, ver)
    if code is None or image is not None:
        raise InvalidCode("a zip function's deploy uploads its code as `code` (an image archive as `image` "
                          "is for package_type 'image')")
    progress = svc.functions.progress
    if build_id and not progress.claim(build_id, user.user):
        raise ConflictError(f"build id {build_id} is taken: name each deploy's build anew")
    report = (lambda message: progress.stage(build_id, message)) if build_id else None
    try:
        data = await _read_zip(code)
        ver = await run_in_threadpool(lambda: svc.functions.deploy(cfg, data, report, **quota))
    except Exception as exc:
        if build_id:
            progress.finish(build_id, exc.message if isinstance(exc, CumulusError) else "internal error")
        raise
    if build_id:
        progress.finish(build_id)
    svc.gateway.set_version(ver)
    return _deployed(svc, ref, ver)


def _deployed(svc: Services, ref: FunctionRef, ver: DeployedVersion) -> DeployResult:
    return DeployResult(name=ref.name, tenant=ref.tenant, version=ver.version, url=function_url(svc, ref.key))


async def _read_zip(upload: UploadFile) -> bytes:
    """A code zip, read only up to its bound (the deploy body may be as large as an image archive)."""
    data = bytearray()
    while chunk := await upload.read(1 << 20):
        data += chunk
        if len(data) > MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(f"the zip is over {MAX_UPLOAD_BYTES // 2**20} MiB")
    return bytes(data)


async def _deploy_image(svc: Services, cfg: FunctionCreate, upload: UploadFile | None,
                        quota: dict[str, Any]) -> DeployedVersion:
    """An image function's deploy: its archive copied to a file of the build folder (never whole
    in memory), checked and stored; or no archive, for an image the nodes hold."""
    if upload is None:
        return await run_in_threadpool(lambda: svc.functions.deploy_image(cfg, None, **quota))
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
        return await run_in_threadpool(lambda: svc.functions.deploy_image(cfg, Path(out.name), **quota))


@router.get("", response_model=list[FunctionPublic], responses=errors(401, 403))
async def list_functions(svc: ServicesDep, user: CurrentUser,
                         tenant: Annotated[str | None, Query(description=(
                             "whose functions (default: the caller's tenant; `*`: every tenant's, "
                             "for cluster admins)"), max_length=63)] = None) -> list[FunctionPublic]:
    """The functions of a tenant the caller may see, with their latest versions."""
    if tenant == "*":
        authorize(user, Admin.CLUSTER, CLUSTER)
    rows = await run_in_threadpool(svc.functions.all, None if tenant == "*" else tenant or user.tenant)
    return [_public(svc, fn, ver, user) for fn, ver in rows
            if allowed(user, Admin.READ, FunctionRef.of_key(fn.name))]


async def _function(user: Principal, ref: str, action: Action) -> FunctionRef:
    """The function `ref` names, once the caller may do `action` on it (403 otherwise, whether or
    not it exists)."""
    fn = FunctionRef.parse(ref, user.tenant)
    authorize(user, action, fn)
    return fn


@router.get("/{ref:path}/logs", responses=errors(401, 403, 404, 422))
async def logs(ref: str, svc: ServicesDep, user: CurrentUser,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[InvocationPublic]:
    """The function's newest invocations (oldest first) with their captured stdout/stderr."""
    fn = await _function(user, ref, Permission.LOGS)
    await run_in_threadpool(svc.functions.latest, fn.key)
    await svc.telemetry.flush()
    rows = await run_in_threadpool(svc.store.logs, fn.key, limit)
    return [InvocationPublic.model_validate(r) for r in rows]


class AsyncCallPublic(BaseModel):
    """An async call and where it stands."""

    request_id: str
    function: str
    state: str = Field(description="queued, running, retrying, succeeded, failed or dead_lettered")
    attempts: int
    enqueued_at: float
    updated_at: float
    next_attempt_at: float | None
    source: str = Field(description="api, redrive, destination:REQUEST, schedule:NAME, rule:NAME, ...")
    error: dict[str, Any] | None
    duplicates: int = Field(description="deliveries of an attempt that may have run already (at-least-once)")


class DeadLetterPublic(BaseModel):
    """An async call that ran out of retries (or of age), with its event."""

    request_id: str
    function: str
    reason: str = Field(description="retries_exhausted, event_too_old or function_gone")
    attempts: int
    error: dict[str, Any] | None
    event: str
    dead_at: float


class Redrive(BaseModel):
    """Which dead letters to queue again (none named: all of the function's)."""

    request_ids: list[str] = Field(default_factory=list, max_length=10_000)


class Redriven(BaseModel):
    redriven: list[str]


@router.get("/{ref:path}/invocations", responses=errors(401, 403, 404, 422))
async def async_invocations(ref: str, svc: ServicesDep, user: CurrentUser,
                            state: Annotated[list[AsyncState] | None, Query()] = None,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AsyncCallPublic]:
    """The function's async calls, newest first (the `logs` permission)."""
    fn = await _function(user, ref, Permission.LOGS)
    await run_in_threadpool(svc.functions.latest, fn.key)
    rows = await run_in_threadpool(lambda: svc.store.async_calls(function=fn.key, states=state or (),
                                                                 limit=limit))
    return [AsyncCallPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/{ref:path}/dlq", responses=errors(401, 403, 404, 422))
async def dead_letters(ref: str, svc: ServicesDep, user: CurrentUser,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeadLetterPublic]:
    """The function's dead letters, newest first (the `logs` permission)."""
    fn = await _function(user, ref, Permission.LOGS)
    await run_in_threadpool(svc.functions.latest, fn.key)
    rows = await run_in_threadpool(lambda: svc.store.dead_letters(function=fn.key, limit=limit))
    return [DeadLetterPublic(request_id=r.request_id, function=r.function, reason=r.reason,
                             attempts=r.attempts, error=r.error, event=r.event.decode("utf-8", "replace"),
                             dead_at=r.dead_at) for r in rows]


@router.post("/{ref:path}/dlq/redrive", responses=errors(400, 401, 403, 404, 422, 503))
async def redrive(ref: str, svc: ServicesDep, user: CurrentUser, body: Redrive | None = None) -> Redriven:
    """Queue the function's dead letters again, as new calls from their first attempt (the
    `invoke` permission)."""
    fn = await _function(user, ref, Permission.INVOKE)
    await run_in_threadpool(svc.functions.latest, fn.key)
    try:
        done = await svc.async_calls.redrive(fn.key, (body or Redrive()).request_ids)
    except JobQueueError as exc:
        raise QueueUnavailable(f"the dead letters were not queued: {exc}") from exc
    return Redriven(redriven=done)


@router.post("/{ref:path}/invoke", dependencies=[Security(bearer)],
             responses={200: {"description": "the handler's JSON result",
                              "content": {"application/json": {"schema": {}}}},
                        202: {"description": "X-Cumulus-Invocation-Type: Event: the async call is queued "
                                             "(`{request_id, status}`)"},
                        204: {"description": "X-Cumulus-Invocation-Type: DryRun: the caller may invoke it"},
                        **errors(400, 401, 403, 404, 413, 429, 502, 503, 504)},
             openapi_extra={"requestBody": {"required": False, "description": "the event: any JSON, up "
                                            "to 6 MB, nested at most 256 levels",
                                            "content": {"application/json": {"schema": {}}}}})
async def invoke(ref: str, request: Request, svc: ServicesDep) -> Response:
    """Invoke a function (`NAME` in the caller's tenant, or `TENANT/NAME`) with the request body
    (JSON) as its event; needs `Authorization: Bearer` with the `invoke` permission on it.

    Served by a raw ASGI fast path in front of FastAPI (`control_plane.gateway.InvokeFastPath`);
    this route delegates to the same implementation and documents it. Headers `X-Cumulus-Cold-Start`
    and `X-Cumulus-Duration-Ms` tell whether the call waited for a new instance and how long the
    handler ran.

    `X-Cumulus-Invocation-Type: Event` (or Lambda's `X-Amz-Invocation-Type`) queues the call and
    answers 202 with its request id; with `Idempotency-Key: KEY` (1-128 of `A-Za-z0-9._:-`) it is
    accepted once per key and function for 6 hours: sent again (after a lost answer, say), it
    answers the same request id and queues nothing. `DryRun` answers 204 if the caller may invoke."""
    answer = await svc.invoke.answer(ref, request.headers.raw, request.receive)
    headers = {k.decode(): v.decode() for k, v in answer.headers if k != b"content-length"}
    return Response(content=answer.body, status_code=answer.status, headers=headers)


@router.get("/{ref:path}", response_model=FunctionPublic, responses=errors(401, 403, 404))
async def get_function(ref: str, svc: ServicesDep, user: CurrentUser) -> FunctionPublic:
    """One function."""
    fn_ref = await _function(user, ref, Admin.READ)
    fn, ver = await run_in_threadpool(svc.functions.latest, fn_ref.key)
    return _public(svc, fn, ver, user)


@router.delete("/{ref:path}", status_code=204, responses=errors(401, 403, 404))
async def delete_function(ref: str, svc: ServicesDep, user: CurrentUser) -> Response:
    """Delete a function, its versions and logs, and stop its instances."""
    fn = await _function(user, ref, Permission.DEPLOY)
    await run_in_threadpool(svc.functions.delete, fn.key)
    await svc.gateway.remove_function(fn.key)
    return Response(status_code=204)
