"""`/v1/schedules`: cron or rate schedules that fire async calls of a function."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentUser, ServicesDep
from control_plane.api.openapi import errors
from control_plane.api.v1.owned import owned_row, tenant_rows
from control_plane.core import Forbidden
from control_plane.identity import Admin, FunctionRef, Permission, authorize
from control_plane.schedules import iso

router = APIRouter(prefix="/v1/schedules", tags=["events"])

NAME = r"^([a-z][a-z0-9-]{0,62}/)?[a-z][a-z0-9-]{0,62}$"


class ScheduleCreate(BaseModel):
    """A schedule: exactly one of `cron` (five fields, in `tz`) and `rate` (`30s`, `5m`, `1h`, `1d`)."""

    name: str = Field(pattern=NAME, description="NAME (the caller's tenant) or TENANT/NAME")
    function: str = Field(pattern=NAME, description="the function each firing calls, in the same tenant")
    cron: str | None = Field(default=None, max_length=200, examples=["0 3 * * *"])
    rate: str | None = Field(default=None, max_length=20, examples=["5m"])
    tz: str = Field(default="UTC", max_length=64, description="an IANA time zone, as Europe/Berlin")
    data: Any = Field(default_factory=dict, description="the firing event's `detail` (any JSON)")
    catch_up: bool = Field(default=True, description="a firing missed while no control plane ran: fired "
                           "once when one is back (true) or skipped (false)")


class SchedulePublic(BaseModel):
    key: str
    tenant: str
    name: str
    function: str
    cron: str | None
    rate_s: float | None
    tz: str
    data: Any
    catch_up: bool
    next_fire_at: float
    next_fire: str
    last_fired_at: float | None
    fired: int


def _public(row: Any) -> SchedulePublic:
    return SchedulePublic(key=row.key, tenant=row.tenant, name=row.name, function=row.function, cron=row.cron,
                          rate_s=row.rate_s, tz=row.tz, data=json.loads(row.data), catch_up=row.catch_up,
                          next_fire_at=row.next_fire_at, next_fire=iso(row.next_fire_at),
                          last_fired_at=row.last_fired_at, fired=row.fired)


@router.post("", status_code=201, responses=errors(400, 401, 403, 404, 409, 422))
async def add_schedule(body: ScheduleCreate, svc: ServicesDep, user: CurrentUser) -> SchedulePublic:
    """Add a schedule (the `deploy` permission on its function)."""
    ref = FunctionRef.parse(body.name, user.tenant)
    fn = FunctionRef.parse(body.function, ref.tenant)
    if fn.tenant != ref.tenant:
        raise Forbidden(f"a schedule of tenant {ref.tenant} calls functions of {ref.tenant} only")
    authorize(user, Permission.DEPLOY, fn)
    await run_in_threadpool(svc.functions.latest, fn.key)  # FunctionNotFound
    data = json.dumps(body.data)
    row = await svc.schedules.add(key=ref.key, tenant=ref.tenant, name=ref.name, function=fn.key,
                                  cron=body.cron, rate=body.rate, tz=body.tz, data=data,
                                  catch_up=body.catch_up)
    return _public(row)


@router.get("", responses=errors(401, 403))
async def list_schedules(svc: ServicesDep, user: CurrentUser,
                         tenant: Annotated[str | None, Query(max_length=63, description=(
                             "whose schedules (default: the caller's tenant; `*`: every tenant's, for "
                             "cluster admins)"))] = None) -> list[SchedulePublic]:
    """The schedules of a tenant whose functions the caller may see."""
    return [_public(r) for r in await tenant_rows(user, tenant, svc.store.schedules, _function)]


def _function(row: Any) -> str:
    return str(row.function)


@router.get("/{ref:path}", responses=errors(401, 403, 404))
async def get_schedule(ref: str, svc: ServicesDep, user: CurrentUser) -> SchedulePublic:
    """One schedule."""
    return _public(await owned_row(user, ref, Admin.READ, svc.store.schedule, _function, "schedule"))


@router.delete("/{ref:path}", status_code=204, responses=errors(401, 403, 404))
async def delete_schedule(ref: str, svc: ServicesDep, user: CurrentUser) -> Response:
    """Remove a schedule (the `deploy` permission on its function); firings already queued still run."""
    row = await owned_row(user, ref, Permission.DEPLOY, svc.store.schedule, _function, "schedule")
    await svc.schedules.remove(row.key)
    return Response(status_code=204)
