"""`/v1/bus`: a tenant's event bus — put events, manage rules, test a pattern."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentUser, ServicesDep
from control_plane.api.openapi import errors
from control_plane.api.v1.owned import owned_row, tenant_rows
from control_plane.core import Forbidden, InvalidConfig, NotFound
from control_plane.eventbus import pattern_matches
from control_plane.identity import Admin, FunctionRef, Permission, authorize

router = APIRouter(prefix="/v1/bus", tags=["events"])

NAME = r"^([a-z][a-z0-9-]{0,62}/)?[a-z][a-z0-9-]{0,62}$"


class PutEvents(BaseModel):
    """EventBridge's PutEvents: up to 10 events, each with `source`, `detail-type` and `detail`
    (an object, or its JSON text), and optionally `id`, `time`, `resources`."""

    entries: list[dict[str, Any]] = Field(min_length=1, max_length=10)
    tenant: str | None = Field(default=None, max_length=63, description="whose bus [the caller's]")


class InvalidPatternError(InvalidConfig):
    """An event pattern or input transform that cannot be used (400, naming the fault)."""

    status, type = 400, "InvalidEventPattern"


class PutResult(BaseModel):
    id: str
    matched_rules: list[str]


class PutAnswer(BaseModel):
    entries: list[PutResult]
    failed: int = 0


class TestPattern(BaseModel):
    """EventBridge's TestEventPattern."""

    EventPattern: Any
    Event: Any


class RuleCreate(BaseModel):
    name: str = Field(pattern=NAME, description="NAME (the caller's tenant) or TENANT/NAME")
    pattern: Any = Field(description="an EventBridge event pattern (an object, or its JSON text)")
    target: str = Field(pattern=r"^(function:|workflow:)?([a-z][a-z0-9-]{0,62}/)?[a-z][a-z0-9-]{0,62}$",
                        description="the function (NAME or function:NAME, same tenant) each match calls "
                                    "(async), or workflow:NAME, started with the event as its input")
    input_paths: dict[str, str] | None = Field(default=None, description="InputPathsMap: names to paths")
    input_template: str | None = Field(default=None, max_length=8192,
                                       description="InputTemplate, with <name> placeholders")


class RulePublic(BaseModel):
    key: str
    tenant: str
    name: str
    pattern: Any
    target: str
    input_paths: dict[str, str] | None
    input_template: str | None
    created_at: float


def _public(row: Any) -> RulePublic:
    return RulePublic(key=row.key, tenant=row.tenant, name=row.name, pattern=json.loads(row.pattern),
                      target=row.target, input_paths=row.input_paths, input_template=row.input_template,
                      created_at=row.created_at)


@router.post("/events", responses=errors(400, 401, 403, 422, 503))
async def put_events(body: PutEvents, svc: ServicesDep, user: CurrentUser) -> PutAnswer:
    """Put events on a tenant's bus (the `invoke` permission on all of its functions, `TENANT/*`):
    each goes, as an async call, to the target of every rule it matches."""
    tenant = body.tenant or user.tenant
    authorize(user, Permission.INVOKE, FunctionRef(tenant, "*"))
    routed = await svc.bus.put(tenant, body.entries)
    return PutAnswer(entries=[PutResult(**r) for r in routed])


@router.post("/test-pattern", responses=errors(400, 401, 422))
async def test_event_pattern(body: TestPattern, user: CurrentUser) -> dict[str, bool]:
    """Whether the event matches the pattern; nothing is routed (400 for an invalid pattern)."""
    try:
        return {"result": pattern_matches(body.EventPattern, body.Event)}
    except InvalidConfig as exc:
        raise InvalidPatternError(exc.message) from None


@router.post("/rules", status_code=201, responses=errors(400, 401, 403, 404, 409, 422))
async def add_rule(body: RuleCreate, svc: ServicesDep, user: CurrentUser) -> RulePublic:
    """Add a rule (the `deploy` permission on its target function)."""
    ref = FunctionRef.parse(body.name, user.tenant)
    workflow = body.target.startswith("workflow:")
    fn = FunctionRef.parse(body.target.removeprefix("function:").removeprefix("workflow:"), ref.tenant)
    if fn.tenant != ref.tenant:
        raise Forbidden(f"a rule of tenant {ref.tenant} calls functions of {ref.tenant} only")
    authorize(user, Permission.DEPLOY, fn)
    if workflow:
        if await run_in_threadpool(svc.store.workflow, fn.key) is None:
            raise NotFound(f"no workflow {fn.key!r}")
    else:
        await run_in_threadpool(svc.functions.latest, fn.key)  # FunctionNotFound
    target = f"workflow:{fn.key}" if workflow else fn.key
    try:
        row = await svc.bus.add_rule(key=ref.key, tenant=ref.tenant, name=ref.name, pattern=body.pattern,
                                     target=target, input_paths=body.input_paths,
                                     input_template=body.input_template)
    except InvalidConfig as exc:
        raise InvalidPatternError(exc.message) from None
    return _public(row)


@router.get("/rules", responses=errors(401, 403))
async def list_rules(svc: ServicesDep, user: CurrentUser,
                     tenant: Annotated[str | None, Query(max_length=63, description=(
                         "whose rules (default: the caller's tenant; `*`: every tenant's, for cluster "
                         "admins)"))] = None) -> list[RulePublic]:
    """The rules of a tenant whose targets the caller may see."""
    return [_public(r) for r in await tenant_rows(user, tenant, svc.store.rules, _target)]


def _target(row: Any) -> str:
    return str(row.target).removeprefix("workflow:")


@router.get("/rules/{ref:path}", responses=errors(401, 403, 404))
async def get_rule(ref: str, svc: ServicesDep, user: CurrentUser) -> RulePublic:
    """One rule."""
    return _public(await owned_row(user, ref, Admin.READ, svc.store.rule, _target, "rule"))


@router.delete("/rules/{ref:path}", status_code=204, responses=errors(401, 403, 404))
async def delete_rule(ref: str, svc: ServicesDep, user: CurrentUser) -> Response:
    """Remove a rule (the `deploy` permission on its target)."""
    row = await owned_row(user, ref, Permission.DEPLOY, svc.store.rule, _target, "rule")
    await svc.bus.remove_rule(row.key)
    return Response(status_code=204)
