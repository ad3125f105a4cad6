"""What the routes of tenant-named objects that call a function (schedules, the bus's rules) share:
listing a tenant's, and finding one the caller may act on — decided on the function it calls, and
forbidden alike whether another tenant's object exists or not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from control_plane.core import NotFound
from control_plane.identity import CLUSTER, Action, Admin, FunctionRef, Principal, allowed, authorize


async def tenant_rows(user: Principal, tenant: str | None, load: Callable[[str | None], list[Any]],
                      target_of: Callable[[Any], str]) -> list[Any]:
    """The rows of `tenant` (the caller's by default; `*`: every tenant's, for cluster admins)
    whose function the caller may see."""
    if tenant == "*":
        authorize(user, Admin.CLUSTER, CLUSTER)
    rows = await run_in_threadpool(load, None if tenant == "*" else tenant or user.tenant)
    return [r for r in rows if allowed(user, Admin.READ, FunctionRef.of_key(target_of(r)))]


async def owned_row(user: Principal, ref: str, action: Action, load: Callable[[str], Any],
                    target_of: Callable[[Any], str], what: str) -> Any:
    """The row `ref` (NAME or TENANT/NAME) names, once the caller may do `action` on its function."""
    key = FunctionRef.parse(ref, user.tenant)
    row = await run_in_threadpool(load, key.key)
    authorize(user, action, FunctionRef.of_key(target_of(row)) if row is not None else key)
    if row is None:
        raise NotFound(f"no {what} {ref!r}")
    return row
