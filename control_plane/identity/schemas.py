"""The API shapes of tenants, users, tokens and grants."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from control_plane.identity.access import NAME, Permission, Role

QUOTAS: dict[str, str] = {
    "functions": "functions the tenant may have",
    "concurrency": "calls of the tenant's functions running at once",
    "memory_mib": "memory of one instance, in MiB",
    "instances": "instances of the tenant's functions at once",
    "rps": "invocations per second (a token bucket, with `burst` calls of credit)",
    "burst": "calls the invocation bucket holds (default: rps, at least 1)",
    "mail_per_min": "messages its functions may send a minute (default: the cluster's mail_per_min)",
}


class Quotas(BaseModel):
    """A tenant's quotas; a missing one is unbounded."""

    model_config = {"extra": "forbid"}
    functions: int | None = Field(default=None, ge=0, description=QUOTAS["functions"])
    concurrency: int | None = Field(default=None, ge=0, description=QUOTAS["concurrency"])
    memory_mib: int | None = Field(default=None, ge=1, description=QUOTAS["memory_mib"])
    instances: int | None = Field(default=None, ge=0, description=QUOTAS["instances"])
    rps: float | None = Field(default=None, gt=0, le=1e6, description=QUOTAS["rps"])
    burst: int | None = Field(default=None, ge=1, le=10**7, description=QUOTAS["burst"])
    mail_per_min: int | None = Field(default=None, ge=0, le=10**6, description=QUOTAS["mail_per_min"])


class TenantCreate(BaseModel):
    """A new tenant."""

    model_config = {"extra": "forbid"}
    name: str = Field(pattern=f"^{NAME}$", description="lowercase letters, digits and dashes")
    quotas: Quotas = Field(default_factory=Quotas)
    budget: float | None = Field(default=None, ge=0, description="per calendar month, in the price sheet's "
                                                                   "currency")
    budget_action: Literal["throttle", "warn"] = "throttle"


class TenantUpdate(BaseModel):
    """Changed quotas (merged into the tenant's; a quota set to null is removed) or budget."""

    model_config = {"extra": "forbid"}
    quotas: dict[str, float | None] | None = None
    budget: float | None = Field(default=None, ge=0)
    clear_budget: bool = False
    budget_action: Literal["throttle", "warn"] | None = None

    @field_validator("quotas")
    @classmethod
    def _known(cls, quotas: dict[str, float | None] | None) -> dict[str, float | None] | None:
        if quotas is None:
            return None
        unknown = sorted(set(quotas) - set(QUOTAS))
        if unknown:
            raise ValueError(f"unknown quota {unknown[0][:40]!r}; quotas: {', '.join(QUOTAS)}")
        Quotas.model_validate({k: v for k, v in quotas.items() if v is not None})
        return quotas


class TenantPublic(BaseModel):
    """A tenant as the API shows it."""

    name: str
    quotas: dict[str, float]
    budget: float | None
    budget_action: str
    functions: int
    users: int
    created_at: float


class UserCreate(BaseModel):
    """A new user of a tenant (the caller's, by default)."""

    model_config = {"extra": "forbid"}
    name: str = Field(pattern=f"^{NAME}$", description="unique in the cluster")
    tenant: str | None = Field(default=None, pattern=f"^{NAME}$")
    role: Role = Role.DEVELOPER


class UserUpdate(BaseModel):
    """A user's new role."""

    model_config = {"extra": "forbid"}
    role: Role


class UserPublic(BaseModel):
    """A user as the API shows it."""

    name: str
    tenant: str
    role: str
    created_at: float


class TokenCreate(BaseModel):
    """A new token, for the caller (or, by an admin of their tenant, for `user`)."""

    model_config = {"extra": "forbid"}
    user: str | None = Field(default=None, pattern=f"^{NAME}$")
    name: str = Field(default="", max_length=200, description="what it is for")
    expires_in_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400,
                                       description="lifetime in seconds (none: until revoked)")
    scopes: list[str] | None = Field(default=None, max_length=100, description=(
        "what the token may do, each PERMISSION:TENANT/PATTERN (none: all its user may)"))


class TokenRotate(BaseModel):
    """A rotation: the old secret stays valid `overlap_s` more."""

    model_config = {"extra": "forbid"}
    overlap_s: float = Field(default=3600, ge=0, le=30 * 86400)
    expires_in_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)


class TokenPublic(BaseModel):
    """A token as the API lists it (never its secret)."""

    id: str
    user: str
    name: str
    scopes: list[str] | None
    state: Literal["active", "expired", "revoked"]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    rotated_to: str | None


class TokenSecret(TokenPublic):
    """A new token, with its secret: shown this once."""

    token: str


class GrantCreate(BaseModel):
    """A permission for a user on a tenant's functions: `function` is NAME, PATTERN or
    TENANT/PATTERN (bare: the caller's tenant)."""

    model_config = {"extra": "forbid"}
    user: str = Field(pattern=f"^{NAME}$")
    permission: Permission
    function: str = Field(max_length=140)


class GrantPublic(BaseModel):
    """A grant as the API shows it."""

    user: str
    permission: str
    function: str  # TENANT/PATTERN
    created_at: float


class WhoAmI(BaseModel):
    """The caller, as its token makes it."""

    user: str
    tenant: str
    role: str
    token_id: str
    cluster_admin: bool
    scopes: list[str] | None
    expires_at: float | None
