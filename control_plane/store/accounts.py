"""Accounts: tenants, users, their tokens (stored as SHA-256 only: the plain token is shown once,
never kept) and grants. Every change bumps the `identity` generation in its own transaction, so each
control plane drops what it cached (`control_plane.identity.Authenticator`)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, func, select

from control_plane.core import ConflictError, NotFound
from control_plane.store.tables import AccessGrant, ApiToken, Function, Generation, Tenant, UserAccount
from control_plane.store.unit import Repository

IDENTITY = "identity"
DEFAULT_TENANT = "default"
ADMIN_USER = "admin"


def hash_token(token: str) -> str:
    """Tokens are stored and compared as SHA-256 hex digests."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh user token (256 random bits)."""
    return "cmls_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """A token with its user and that user's grants, read in one transaction."""

    token: ApiToken
    user: UserAccount
    grants: list[AccessGrant]


def _bump(s: Session) -> None:
    row = s.exec(select(Generation).where(Generation.name == IDENTITY).with_for_update()).first()
    if row is None:
        row = Generation(name=IDENTITY, value=0)
    row.value += 1
    s.add(row)


def _user(s: Session, name: str) -> UserAccount:
    row = s.get(UserAccount, name)
    if row is None:
        raise NotFound(f"no user named {name!r}")
    return row


def _token(s: Session, public_id: str) -> ApiToken:
    row = s.exec(select(ApiToken).where(ApiToken.public_id == public_id)).first()
    if row is None:
        raise NotFound(f"no token {public_id[:64]!r}")
    return row


class AccountRepository(Repository):
    """Tenants, users, tokens and grants."""

    # -- the first start -------------------------------------------------------------------------
    def ensure_admin_token(self) -> str | None:
        """Make the default tenant, its admin user and the admin token on first start: returns the
        token then; None when the admin holds a live token already."""
        now = time.time()
        with self.session() as s:
            if s.get(Tenant, DEFAULT_TENANT) is None:
                s.add(Tenant(name=DEFAULT_TENANT))
            if s.get(UserAccount, ADMIN_USER) is None:
                s.add(UserAccount(name=ADMIN_USER, tenant=DEFAULT_TENANT, role="admin"))
            live = s.exec(select(ApiToken).where(ApiToken.username == ADMIN_USER,
                                                 col(ApiToken.revoked_at).is_(None))).all()
            # (`scopes` is tested here, not in SQL: an unscoped token's column holds JSON null.)
            if any(t.scopes is None and (t.expires_at is None or t.expires_at > now) for t in live):
                return None
            token = new_token()
            s.add(ApiToken(public_id=_public_id(), token_hash=hash_token(token), username=ADMIN_USER,
                           name="admin"))
            _bump(s)
            return token

    def identity_generation(self) -> int:
        """Grows with every change of tenants, users, tokens and grants."""
        with self.session() as s:
            row = s.get(Generation, IDENTITY)
            return row.value if row is not None else 0

    # -- tenants ----------------------------------------------------------------------------------
    def create_tenant(self, name: str, quotas: dict[str, Any], budget: float | None,
                      budget_action: str) -> Tenant:
        """A new tenant; Conflict if the name is taken."""
        try:
            with self.session() as s:
                if s.get(Tenant, name) is not None:
                    raise ConflictError(f"tenant {name!r} exists")
                row = Tenant(name=name, quotas=quotas, budget=budget, budget_action=budget_action)
                s.add(row)
                _bump(s)  # every control plane reloads the tenants' quotas with the generation
                return row
        except IntegrityError:
            raise ConflictError(f"tenant {name!r} exists") from None

    def update_tenant(self, name: str, *, quotas: dict[str, Any] | None = None,
                      budget: float | None = None, clear_budget: bool = False,
                      budget_action: str | None = None) -> Tenant:
        """Change a tenant's quotas (merged: a value of None removes that quota) or budget."""
        with self.session() as s:
            row = self._tenant(s, name)
            if quotas is not None:
                merged = {**row.quotas, **quotas}
                row.quotas = {k: v for k, v in merged.items() if v is not None}
            if budget is not None or clear_budget:
                row.budget = budget
            if budget_action is not None:
                row.budget_action = budget_action
            s.add(row)
            _bump(s)
            return row

    @staticmethod
    def _tenant(s: Session, name: str) -> Tenant:
        row = s.get(Tenant, name)
        if row is None:
            raise NotFound(f"no tenant named {name!r}")
        return row

    def tenant(self, name: str) -> Tenant:
        """A tenant; NotFound if unknown."""
        with self.session() as s:
            return self._tenant(s, name)

    def tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        with self.session() as s:
            return list(s.exec(select(Tenant).order_by(col(Tenant.name))).all())

    def function_count(self, tenant: str) -> int:
        """How many functions `tenant` has."""
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(Function)
                              .where(Function.tenant == tenant)).one())

    # -- users -------------------------------------------------------------------------------------
    def create_user(self, name: str, tenant: str, role: str) -> UserAccount:
        """A new user of an existing tenant; Conflict if the name is taken (user names are unique
        in the cluster)."""
        try:
            with self.session() as s:
                self._tenant(s, tenant)
                if s.get(UserAccount, name) is not None:
                    raise ConflictError(f"user {name!r} exists")
                row = UserAccount(name=name, tenant=tenant, role=role)
                s.add(row)
                _bump(s)
                return row
        except IntegrityError:
            raise ConflictError(f"user {name!r} exists") from None

    def user(self, name: str) -> UserAccount:
        """A user; NotFound if unknown."""
        with self.session() as s:
            return _user(s, name)

    def users(self, tenant: str | None = None) -> list[UserAccount]:
        """The users of `tenant` (of every tenant with None), by name."""
        with self.session() as s:
            query = select(UserAccount).order_by(col(UserAccount.name))
            if tenant is not None:
                query = query.where(UserAccount.tenant == tenant)
            return list(s.exec(query).all())

    def set_role(self, name: str, role: str) -> UserAccount:
        """Change a user's role."""
        with self.session() as s:
            row = _user(s, name)
            row.role = role
            s.add(row)
            _bump(s)
            return row

    def delete_user(self, name: str) -> None:
        """Delete a user with its tokens and grants."""
        with self.session() as s:
            s.delete(_user(s, name))
            s.exec(delete(ApiToken).where(col(ApiToken.username) == name))
            s.exec(delete(AccessGrant).where(col(AccessGrant.username) == name))
            _bump(s)

    # -- tokens ------------------------------------------------------------------------------------
    def create_token(self, user: str, *, name: str = "", scopes: list[str] | None = None,
                     expires_at: float | None = None) -> tuple[ApiToken, str]:
        """A new token of `user`: its row and the plain token (shown once, never stored)."""
        token = new_token()
        with self.session() as s:
            _user(s, user)
            row = ApiToken(public_id=_public_id(), token_hash=hash_token(token), username=user, name=name,
                           scopes=scopes, expires_at=expires_at)
            s.add(row)
            _bump(s)
            return row, token

    def tokens(self, *, user: str | None = None, tenant: str | None = None) -> list[ApiToken]:
        """Tokens of one user, or of the users of one tenant, or all; oldest first."""
        with self.session() as s:
            query = select(ApiToken).order_by(col(ApiToken.id))
            if user is not None:
                query = query.where(ApiToken.username == user)
            if tenant is not None:
                names = select(UserAccount.name).where(UserAccount.tenant == tenant)
                query = query.where(col(ApiToken.username).in_(names))
            return list(s.exec(query).all())

    def token(self, public_id: str) -> ApiToken:
        """A token by its public id; NotFound if unknown."""
        with self.session() as s:
            return _token(s, public_id)

    def revoke_token(self, public_id: str, now: float) -> ApiToken:
        """Revoke a token from `now` on (revoking twice keeps the first time)."""
        with self.session() as s:
            row = _token(s, public_id)
            if row.revoked_at is None:
                row.revoked_at = now
                s.add(row)
                _bump(s)
            return row

    def rotate_token(self, public_id: str, *, now: float, overlap_s: float,
                     expires_at: float | None) -> tuple[ApiToken, str]:
        """A new secret for a token: a new token with the same user, name and scopes; the old one
        stays valid for `overlap_s` more (it never gains time)."""
        token = new_token()
        with self.session() as s:
            old = _token(s, public_id)
            new = ApiToken(public_id=_public_id(), token_hash=hash_token(token), username=old.username,
                           name=old.name, scopes=old.scopes, expires_at=expires_at)
            end = now + overlap_s
            old.expires_at = end if old.expires_at is None else min(old.expires_at, end)
            old.rotated_to = new.public_id
            s.add(old)
            s.add(new)
            _bump(s)
            return new, token

    def token_holder(self, token_hash: str) -> TokenHolder | None:
        """The token with this hash, its user and the user's grants (None if no such token, or its
        user is gone)."""
        with self.session() as s:
            token = s.exec(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
            if token is None:
                return None
            user = s.get(UserAccount, token.username)
            if user is None:
                return None
            grants = list(s.exec(select(AccessGrant).where(AccessGrant.username == user.name)).all())
            return TokenHolder(token, user, grants)

    # -- grants ------------------------------------------------------------------------------------
    def add_grant(self, user: str, permission: str, tenant: str, pattern: str) -> AccessGrant:
        """Give a grant (giving it again is a no-op that returns the existing one)."""
        for _ in range(3):
            try:
                with self.session() as s:
                    _user(s, user)
                    self._tenant(s, tenant)
                    found = s.exec(select(AccessGrant).where(
                        AccessGrant.username == user, AccessGrant.permission == permission,
                        AccessGrant.tenant == tenant, AccessGrant.pattern == pattern)).first()
                    if found is not None:
                        return found
                    row = AccessGrant(username=user, permission=permission, tenant=tenant, pattern=pattern)
                    s.add(row)
                    _bump(s)
                    return row
            except IntegrityError:
                continue
        raise ConflictError("the grant changed concurrently; try again")

    def remove_grant(self, user: str, permission: str, tenant: str, pattern: str) -> bool:
        """Take a grant back; whether there was one."""
        with self.session() as s:
            found = s.exec(select(AccessGrant).where(
                AccessGrant.username == user, AccessGrant.permission == permission,
                AccessGrant.tenant == tenant, AccessGrant.pattern == pattern)).first()
            if found is None:
                return False
            s.delete(found)
            _bump(s)
            return True

    def grants(self, *, user: str | None = None, tenant: str | None = None) -> list[AccessGrant]:
        """The grants of one user, or on one tenant's functions, or all."""
        with self.session() as s:
            query = select(AccessGrant).order_by(col(AccessGrant.id))
            if user is not None:
                query = query.where(AccessGrant.username == user)
            if tenant is not None:
                query = query.where(AccessGrant.tenant == tenant)
            return list(s.exec(query).all())


def _public_id() -> str:
    return "tok_" + secrets.token_hex(8)
