"""Tenants, users, tokens and grants: who may change which, and the changes (synchronous: the
routes call it on a thread). Every decision goes through `authorize`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from control_plane.core import Forbidden, InvalidConfig
from control_plane.identity.access import (
    CLUSTER,
    RESERVED_NAMES,
    Admin,
    FunctionRef,
    Grant,
    Permission,
    Principal,
    TenantRef,
    authorize,
)
from control_plane.identity.schemas import (
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
)
from control_plane.store import AccessGrant, ApiToken, Store, Tenant, UserAccount


def token_public(row: ApiToken, now: float) -> TokenPublic:
    """A token as the API lists it."""
    state: Literal["active", "expired", "revoked"] = (
        "revoked" if row.revoked_at is not None
        else "expired" if row.expires_at is not None and row.expires_at <= now else "active")
    return TokenPublic(id=row.public_id, user=row.username, name=row.name, scopes=row.scopes, state=state,
                       created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
                       rotated_to=row.rotated_to)


def _grant_public(row: AccessGrant) -> GrantPublic:
    return GrantPublic(user=row.username, permission=row.permission, function=f"{row.tenant}/{row.pattern}",
                       created_at=row.created_at)


def _user_public(row: UserAccount) -> UserPublic:
    return UserPublic(name=row.name, tenant=row.tenant, role=row.role, created_at=row.created_at)


class Accounts:
    """The account routes' unit of work; `changed` is told after each change (the caller's cache)."""

    def __init__(self, store: Store, *, wall: Callable[[], float] = time.time,
                 changed: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.wall = wall
        self.changed = changed

    # -- tenants ---------------------------------------------------------------------------------------
    def _tenant_public(self, row: Tenant) -> TenantPublic:
        return TenantPublic(name=row.name, quotas=row.quotas, budget=row.budget,
                            budget_action=row.budget_action, functions=self.store.function_count(row.name),
                            users=len(self.store.users(row.name)), created_at=row.created_at)

    def create_tenant(self, p: Principal, req: TenantCreate) -> TenantPublic:
        """A new tenant (cluster admins)."""
        authorize(p, Admin.CLUSTER, CLUSTER)
        quotas = req.quotas.model_dump(exclude_none=True)
        return self._tenant_public(self.store.create_tenant(req.name, quotas, req.budget, req.budget_action))

    def tenants(self, p: Principal) -> list[TenantPublic]:
        """Every tenant (cluster admins), or the caller's own (its admins)."""
        if p.is_cluster_admin and p.scopes is None:
            return [self._tenant_public(t) for t in self.store.tenants()]
        authorize(p, Admin.TENANT, TenantRef(p.tenant))
        return [self._tenant_public(self.store.tenant(p.tenant))]

    def tenant(self, p: Principal, name: str) -> TenantPublic:
        """One tenant (its admins, cluster admins)."""
        authorize(p, Admin.TENANT, TenantRef(name))
        return self._tenant_public(self.store.tenant(name))

    def update_tenant(self, p: Principal, name: str, req: TenantUpdate) -> TenantPublic:
        """Change a tenant's quotas or budget (cluster admins: a tenant does not raise its own)."""
        authorize(p, Admin.CLUSTER, CLUSTER)
        row = self.store.update_tenant(name, quotas=req.quotas, budget=req.budget,
                                       clear_budget=req.clear_budget, budget_action=req.budget_action)
        self.changed()
        return self._tenant_public(row)

    # -- users -------------------------------------------------------------------------------------------
    def create_user(self, p: Principal, req: UserCreate) -> UserPublic:
        """A new user of a tenant (its admins)."""
        tenant = req.tenant or p.tenant
        authorize(p, Admin.USERS, TenantRef(tenant))
        row = self.store.create_user(req.name, tenant, req.role.value)
        self.changed()
        return _user_public(row)

    def users(self, p: Principal, tenant: str | None) -> list[UserPublic]:
        """The users of a tenant (the caller's by default; its admins), or of all (cluster admins,
        `tenant="*"`)."""
        if tenant == "*":
            authorize(p, Admin.CLUSTER, CLUSTER)
            return [_user_public(u) for u in self.store.users()]
        tenant = tenant or p.tenant
        authorize(p, Admin.USERS, TenantRef(tenant))
        return [_user_public(u) for u in self.store.users(tenant)]

    def _managed_user(self, p: Principal, name: str) -> UserAccount:
        """A user the caller administers (403 before saying whether it exists, unless the caller
        administers some tenant; then 404 for an unknown name)."""
        if not p.is_cluster_admin:
            authorize(p, Admin.USERS, TenantRef(p.tenant))
        row = self.store.user(name)
        authorize(p, Admin.USERS, TenantRef(row.tenant))
        return row

    def set_role(self, p: Principal, name: str, role: str) -> UserPublic:
        """Change a user's role (its tenant's admins)."""
        self._managed_user(p, name)
        if name == p.user:
            raise Forbidden("a user does not change their own role")
        row = self.store.set_role(name, role)
        self.changed()
        return _user_public(row)

    def delete_user(self, p: Principal, name: str) -> None:
        """Delete a user, their tokens and grants (its tenant's admins; never oneself)."""
        self._managed_user(p, name)
        if name == p.user:
            raise Forbidden("a user does not delete themselves")
        self.store.delete_user(name)
        self.changed()

    # -- tokens ------------------------------------------------------------------------------------------
    def _may_manage_tokens_of(self, p: Principal, user: str) -> None:
        if user == p.user and p.scopes is None:
            return
        if p.scopes is not None:
            raise Forbidden(f"{p.user} lacks an unscoped token: a scoped token manages no tokens",
                            missing=str(Admin.USERS))
        self._managed_user(p, user)

    def create_token(self, p: Principal, req: TokenCreate) -> TokenSecret:
        """A new token for the caller, or (its tenant's admins) for another user."""
        user = req.user or p.user
        self._may_manage_tokens_of(p, user)
        tenant = self.store.user(user).tenant
        scopes = None
        if req.scopes is not None:
            if not req.scopes:
                raise InvalidConfig("scopes, when given, name at least one PERMISSION:TENANT/PATTERN")
            scopes = sorted({Grant.parse_scope(s, tenant).text for s in req.scopes})
        now = self.wall()
        expires = None if req.expires_in_s is None else now + req.expires_in_s
        row, secret = self.store.create_token(user, name=req.name, scopes=scopes, expires_at=expires)
        self.changed()
        return TokenSecret(**token_public(row, now).model_dump(), token=secret)

    def tokens(self, p: Principal, *, user: str | None, tenant: str | None) -> list[TokenPublic]:
        """The caller's tokens; with `user` or `tenant`, theirs (admins)."""
        now = self.wall()
        if tenant is not None:
            authorize(p, Admin.USERS, TenantRef(tenant))
            rows = self.store.tokens(tenant=tenant)
        else:
            target = user or p.user
            self._may_manage_tokens_of(p, target)
            rows = self.store.tokens(user=target)
        return [token_public(r, now) for r in rows]

    def _managed_token(self, p: Principal, public_id: str) -> ApiToken:
        if p.scopes is not None and public_id != p.token_id:
            raise Forbidden("a scoped token manages no other token", missing=str(Admin.USERS))
        if not p.is_cluster_admin and public_id != p.token_id:
            mine = {t.public_id for t in self.store.tokens(user=p.user)}
            if public_id not in mine:
                authorize(p, Admin.USERS, TenantRef(p.tenant))
        row = self.store.token(public_id)
        if row.username != p.user:
            self._managed_user(p, row.username)
        return row

    def revoke_token(self, p: Principal, public_id: str) -> TokenPublic:
        """Revoke a token (one's own, or one of a user the caller administers)."""
        self._managed_token(p, public_id)
        row = self.store.revoke_token(public_id, self.wall())
        self.changed()
        return token_public(row, self.wall())

    def rotate_token(self, p: Principal, public_id: str, req: TokenRotate) -> TokenSecret:
        """A new secret for a token; the old one is valid `overlap_s` more."""
        old = self._managed_token(p, public_id)
        if old.revoked_at is not None:
            raise InvalidConfig(f"token {public_id} is revoked: create a new one")
        now = self.wall()
        expires = None if req.expires_in_s is None else now + req.expires_in_s
        row, secret = self.store.rotate_token(public_id, now=now, overlap_s=req.overlap_s, expires_at=expires)
        self.changed()
        return TokenSecret(**token_public(row, now).model_dump(), token=secret)

    # -- grants ------------------------------------------------------------------------------------------
    def _grant(self, p: Principal, req: GrantCreate) -> Grant:
        grant = Grant.parse(req.permission.value, req.function, p.tenant)
        if grant.pattern in RESERVED_NAMES:
            raise InvalidConfig(f"{grant.pattern!r} is no function's name")
        authorize(p, Permission.GRANT, FunctionRef(grant.tenant, grant.pattern))
        return grant

    def add_grant(self, p: Principal, req: GrantCreate) -> GrantPublic:
        """Give a user a permission on a tenant's functions (whoever holds `grant` on them)."""
        grant = self._grant(p, req)
        row = self.store.add_grant(req.user, grant.permission.value, grant.tenant, grant.pattern)
        self.changed()
        return _grant_public(row)

    def remove_grant(self, p: Principal, req: GrantCreate) -> bool:
        """Take a grant back (whoever could give it); whether there was one."""
        grant = self._grant(p, req)
        removed = self.store.remove_grant(req.user, grant.permission.value, grant.tenant, grant.pattern)
        self.changed()
        return removed

    def grants(self, p: Principal, *, user: str | None, tenant: str | None) -> list[GrantPublic]:
        """The caller's grants; a user's (its tenant's admins); those on a tenant's functions (its
        admins)."""
        if tenant is not None:
            authorize(p, Admin.USERS, TenantRef(tenant))
            return [_grant_public(g) for g in self.store.grants(tenant=tenant)]
        target = user or p.user
        if target != p.user:
            self._managed_user(p, target)
        return [_grant_public(g) for g in self.store.grants(user=target)]


def check_function_name(ref: FunctionRef) -> None:
    """A function may not take a name routes use for what follows a function."""
    if ref.name in RESERVED_NAMES:
        raise InvalidConfig(f"{ref.name!r} is reserved (routes use it); reserved: "
                            f"{', '.join(sorted(RESERVED_NAMES))}")

