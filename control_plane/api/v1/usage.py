"""`/v1/usage` and `/v1/bill`: what a tenant used, and what it owes (from the same records)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentUser, ServicesDep
from control_plane.api.openapi import errors
from control_plane.metering import Bill

router = APIRouter(prefix="/v1", tags=["usage"])
Tenant = Annotated[str | None, Query(max_length=63, description="default: the caller's")]


@router.get("/usage", responses=errors(401, 403, 422))
async def usage(svc: ServicesDep, user: CurrentUser, tenant: Tenant = None,
                since: Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD (UTC), "
                                                   "default: the first of this month")] = None,
                until: Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD, excluded "
                                                   "(default: now)")] = None,
                by: Annotated[Literal["function", "day"], Query()] = "function") -> list[dict[str, Any]]:
    """Invocations, errors, billed ms, GB-s, cold starts, init ms, instances and their idle time, per
    function or per day (calls by when they started, instances by when they ended)."""
    return await run_in_threadpool(svc.metering.usage, user, tenant, since, until, by)


@router.get("/bill", response_model=Bill, responses={
    200: {"content": {"text/csv": {}}, "description": "the bill (JSON, or CSV with format=csv)"},
    **errors(401, 403, 422)})
async def bill(svc: ServicesDep, user: CurrentUser, tenant: Tenant = None,
               month: Annotated[str | None, Query(max_length=7, description="YYYY-MM, default: this "
                                                  "month so far")] = None,
               format: Annotated[Literal["json", "csv"], Query()] = "json") -> Any:
    """A tenant's bill for a month: line items at the price sheet's prices and their total."""
    result = await run_in_threadpool(svc.metering.bill, user, tenant, month)
    if format == "json":
        return result
    filename = f"{result.tenant}-{result.month}.csv"
    return Response(bill_csv(result), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def bill_csv(result: Bill) -> str:
    """A bill as CSV: one row per line item, then the total."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["tenant", "month", "item", "quantity", "unit", "unit_price", "amount", "currency"])
    for line in result.lines:
        writer.writerow([result.tenant, result.month, line.item, format(line.quantity, "f"), line.unit,
                         format(line.unit_price, "f"), format(line.amount, "f"), result.currency])
    writer.writerow([result.tenant, result.month, "total", "", "", "", format(result.total, "f"),
                     result.currency])
    return out.getvalue()
