"""`/v1/tenants`, `/v1/users`, `/v1/tokens`, `/v1/grants`, `/v1/whoami`: accounts and who may do
what. Each route hands the caller to `control_plane.identity.Accounts`, which authorizes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentUser, ServicesDep
from control_plane.api.openapi import errors
from control_plane.core import NotFound
from control_plane.identity import (
    GrantCreate,
    GrantPublic,
    TenantCreate,
    TenantPublic,
    TenantUpdate,
    TokenCreate,
    TokenPublic,
    TokenRotate,
    TokenSecret,
    UserCreate,
    UserPublic,
    UserUpdate,
    WhoAmI,
)

router = APIRouter(prefix="/v1", tags=["accounts"])
Name = Annotated[str, Query(max_length=63)]


@router.get("/whoami", responses=errors(401))
async def whoami(user: CurrentUser) -> WhoAmI:
    """The caller, as its token makes it."""
    return WhoAmI(user=user.user, tenant=user.tenant, role=user.role.value, token_id=user.token_id,
                  cluster_admin=user.is_cluster_admin,
                  scopes=None if user.scopes is None else sorted(s.text for s in user.scopes),
                  expires_at=user.expires_at)


# -- tenants -------------------------------------------------------------------------------------------
@router.post("/tenants", status_code=201, responses=errors(400, 401, 403, 409, 422))
async def create_tenant(req: TenantCreate, svc: ServicesDep, user: CurrentUser) -> TenantPublic:
    """A new tenant, with its quotas and budget (cluster admins)."""
    return await run_in_threadpool(svc.accounts.create_tenant, user, req)


@router.get("/tenants", responses=errors(401, 403))
async def list_tenants(svc: ServicesDep, user: CurrentUser) -> list[TenantPublic]:
    """Every tenant (cluster admins), or the caller's (its admins)."""
    return await run_in_threadpool(svc.accounts.tenants, user)


@router.get("/tenants/{name}", responses=errors(401, 403, 404))
async def get_tenant(name: str, svc: ServicesDep, user: CurrentUser) -> TenantPublic:
    """One tenant (its admins, cluster admins)."""
    return await run_in_threadpool(svc.accounts.tenant, user, name)


@router.patch("/tenants/{name}", responses=errors(400, 401, 403, 404, 422))
async def update_tenant(name: str, req: TenantUpdate, svc: ServicesDep, user: CurrentUser) -> TenantPublic:
    """Change a tenant's quotas (merged; null removes one) or budget (cluster admins)."""
    return await run_in_threadpool(svc.accounts.update_tenant, user, name, req)


# -- users ---------------------------------------------------------------------------------------------
@router.post("/users", status_code=201, responses=errors(400, 401, 403, 404, 409, 422))
async def create_user(req: UserCreate, svc: ServicesDep, user: CurrentUser) -> UserPublic:
    """A new user of a tenant (its admins); then `POST /v1/tokens` with `user` gives them a token."""
    return await run_in_threadpool(svc.accounts.create_user, user, req)


@router.get("/users", responses=errors(401, 403))
async def list_users(svc: ServicesDep, user: CurrentUser, tenant: Name | None = None) -> list[UserPublic]:
    """The users of a tenant (default: the caller's; `*`: all, for cluster admins)."""
    return await run_in_threadpool(svc.accounts.users, user, tenant)


@router.patch("/users/{name}", responses=errors(400, 401, 403, 404, 422))
async def update_user(name: str, req: UserUpdate, svc: ServicesDep, user: CurrentUser) -> UserPublic:
    """Change a user's role (its tenant's admins)."""
    return await run_in_threadpool(svc.accounts.set_role, user, name, req.role.value)


@router.delete("/users/{name}", status_code=204, responses=errors(401, 403, 404))
async def delete_user(name: str, svc: ServicesDep, user: CurrentUser) -> Response:
    """Delete a user with their tokens and grants (its tenant's admins)."""
    await run_in_threadpool(svc.accounts.delete_user, user, name)
    return Response(status_code=204)


# -- tokens --------------------------------------------------------------------------------------------
@router.post("/tokens", status_code=201, responses=errors(400, 401, 403, 404, 422))
async def create_token(req: TokenCreate, svc: ServicesDep, user: CurrentUser) -> TokenSecret:
    """A new token (its secret is in this answer only)."""
    return await run_in_threadpool(svc.accounts.create_token, user, req)


@router.get("/tokens", responses=errors(401, 403, 404))
async def list_tokens(svc: ServicesDep, user: CurrentUser, of_user: Annotated[str | None, Query(
        alias="user", max_length=63)] = None, tenant: Name | None = None) -> list[TokenPublic]:
    """The caller's tokens, or a user's, or a tenant's users' (admins): never their secrets."""
    return await run_in_threadpool(lambda: svc.accounts.tokens(user, user=of_user, tenant=tenant))


@router.delete("/tokens/{token_id}", responses=errors(401, 403, 404))
async def revoke_token(token_id: str, svc: ServicesDep, user: CurrentUser) -> TokenPublic:
    """Revoke a token: every control plane refuses it within a second."""
    return await run_in_threadpool(svc.accounts.revoke_token, user, token_id)


@router.post("/tokens/{token_id}/rotate", status_code=201, responses=errors(400, 401, 403, 404, 422))
async def rotate_token(token_id: str, req: TokenRotate, svc: ServicesDep, user: CurrentUser) -> TokenSecret:
    """A new secret for a token; the old one keeps working for `overlap_s`."""
    return await run_in_threadpool(svc.accounts.rotate_token, user, token_id, req)


# -- grants --------------------------------------------------------------------------------------------
@router.post("/grants", status_code=201, responses=errors(400, 401, 403, 404, 422))
async def add_grant(req: GrantCreate, svc: ServicesDep, user: CurrentUser) -> GrantPublic:
    """Give a user a permission on functions (whoever holds `grant` on them)."""
    return await run_in_threadpool(svc.accounts.add_grant, user, req)


@router.post("/grants/revoke", status_code=204, responses=errors(400, 401, 403, 404, 422))
async def remove_grant(req: GrantCreate, svc: ServicesDep, user: CurrentUser) -> Response:
    """Take a grant back (404 if there was none)."""
    if not await run_in_threadpool(svc.accounts.remove_grant, user, req):
        raise NotFound(f"{req.user} has no grant {req.permission.value} on {req.function}")
    return Response(status_code=204)


@router.get("/grants", responses=errors(401, 403, 404))
async def list_grants(svc: ServicesDep, user: CurrentUser, of_user: Annotated[str | None, Query(
        alias="user", max_length=63)] = None, tenant: Name | None = None) -> list[GrantPublic]:
    """The caller's grants, a user's, or those on a tenant's functions (admins)."""
    return await run_in_threadpool(lambda: svc.accounts.grants(user, user=of_user, tenant=tenant))
