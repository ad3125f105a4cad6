"""Who may do what: tenants' names for functions, roles, grants, token scopes, and the one
`authorize(principal, action, resource)` every route, the invocation fast path and (later) the
Lambda API call. Pure: no I/O, no clock but the `now` handed in.

- A function belongs to a tenant. Its full name is `tenant/name`; a bare name means the caller's own
  tenant. Inside the control plane a function is known by its *key*: its full name, except that the
  `default` tenant's functions keep their bare names (so the functions and invoke URLs from before
  tenants keep working, and their running instances keep their labels).
- A user belongs to one tenant and has one role there. `admin` may do everything in its tenant
  (users, tokens and grants included); `developer` may deploy, invoke and read the logs and usage of
  every function of its tenant; `invoker` may list its tenant's functions and do only what grants
  give it. The admins of the `default` tenant are the cluster's admins: everything, everywhere, and
  the only ones who see nodes, fleet events and control planes.
- A grant gives one user one permission on the functions of one tenant whose names match a pattern
  (`alpha`, `img-*`, `*`); it may go to a user of another tenant (sharing a function with a team).
  Roles give defaults; grants add to them.
- A token may be scoped (`invoke:acme/resize`, `deploy:acme/*`): it then does only what both its
  user and one of its scopes allow, and no account management.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass, field

from cachetools import LRUCache

from control_plane.core import Forbidden, InvalidConfig

DEFAULT_TENANT = "default"
NAME = r"[a-z][a-z0-9-]{0,62}"
NAME_RE = re.compile(f"^{NAME}$")
PATTERN_RE = re.compile(r"^[a-z0-9*?-]{1,63}$")
# What follows a function's name in a route: no function may take one of these names.
RESERVED_NAMES = frozenset({"invoke", "logs", "usage", "grants", "invocations"})


class Permission(enum.StrEnum):
    """What a grant (or a token's scope) gives on a tenant's functions."""

    DEPLOY = "deploy"  # deploy new versions, delete
    INVOKE = "invoke"
    LOGS = "logs"  # read the invocation logs
    USAGE = "usage"  # read the usage records and bills
    GRANT = "grant"  # give and take these permissions to others


class Role(enum.StrEnum):
    """A user's role in their tenant."""

    ADMIN = "admin"
    DEVELOPER = "developer"
    INVOKER = "invoker"


class Admin(enum.StrEnum):
    """Actions on accounts and on the cluster (never given by grants or scopes)."""

    READ = "read"  # see a function exists (any member of its tenant, or a grant on it)
    USERS = "users"  # manage a tenant's users and their tokens (the tenant's admins)
    TENANT = "tenant"  # read a tenant's settings, quotas and budget (its admins)
    CLUSTER = "cluster"  # tenants, nodes, fleet events, control planes, builds (cluster admins)


Action = Permission | Admin

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.DEVELOPER: frozenset({Permission.DEPLOY, Permission.INVOKE, Permission.LOGS, Permission.USAGE}),
    Role.INVOKER: frozenset(),
}


@dataclass(frozen=True, slots=True, order=True)
class FunctionRef:
    """A function by tenant and name (it need not exist)."""

    tenant: str
    name: str

    @property
    def key(self) -> str:
        """How the control plane knows the function (its full name; the bare name in `default`)."""
        return self.name if self.tenant == DEFAULT_TENANT else f"{self.tenant}/{self.name}"

    @property
    def full_name(self) -> str:
        """`tenant/name`."""
        return f"{self.tenant}/{self.name}"

    @classmethod
    def parse(cls, ref: str, tenant: str) -> FunctionRef:
        """`name` (in `tenant`, the caller's) or `tenant/name`; InvalidConfig otherwise."""
        owner, sep, name = ref.rpartition("/")
        owner = owner if sep else tenant
        if not NAME_RE.match(owner) or not NAME_RE.match(name):
            raise InvalidConfig(f"{ref[:140]!r} is not a function name: NAME or TENANT/NAME, each lowercase "
                                "letters, digits and dashes, starting with a letter, at most 63")
        return cls(owner, name)

    @classmethod
    def of_key(cls, key: str) -> FunctionRef:
        """The function a control-plane key names."""
        owner, _, name = key.rpartition("/")
        return cls(owner or DEFAULT_TENANT, name)


@dataclass(frozen=True, slots=True)
class TenantRef:
    """A tenant, as the resource of an account action."""

    name: str


CLUSTER = TenantRef("")  # the resource of cluster-wide actions
Resource = FunctionRef | TenantRef


@dataclass(frozen=True, slots=True)
class Grant:
    """One permission on the functions of `tenant` whose names match `pattern`."""

    permission: Permission
    tenant: str
    pattern: str

    def covers(self, permission: Permission, ref: FunctionRef) -> bool:
        """Whether this grant gives `permission` on `ref`."""
        return self.permission == permission and self.touches(ref)

    def touches(self, ref: FunctionRef) -> bool:
        """Whether this grant gives anything on `ref`. `ref` may itself be a pattern (granting
        `acme/img-*`, reading the whole tenant's usage as `acme/*`): it is covered only by `*` or
        by the same pattern, never by one whose `?` would match its `*`."""
        if self.tenant != ref.tenant:
            return False
        if self.pattern == "*":
            return True
        if "*" in ref.name or "?" in ref.name:
            return self.pattern == ref.name
        return fnmatch.fnmatchcase(ref.name, self.pattern)

    @property
    def text(self) -> str:
        """`permission:tenant/pattern`, as scopes are written."""
        return f"{self.permission}:{self.tenant}/{self.pattern}"

    @classmethod
    def parse(cls, permission: str, target: str, tenant: str) -> Grant:
        """A grant of `permission` on `target` (`pattern` in `tenant`, or `tenant/pattern`);
        InvalidConfig naming what is wrong."""
        try:
            perm = Permission(permission)
        except ValueError:
            raise InvalidConfig(f"unknown permission {permission[:40]!r}; permissions: "
                                f"{', '.join(p.value for p in Permission)}") from None
        owner, sep, pattern = target.rpartition("/")
        owner = owner if sep else tenant
        if not NAME_RE.match(owner) or not PATTERN_RE.match(pattern):
            raise InvalidConfig(f"{target[:140]!r} names no functions: NAME, PATTERN (with * and ?) or "
                                "TENANT/PATTERN")
        return cls(perm, owner, pattern)

    @classmethod
    def parse_scope(cls, scope: str, tenant: str) -> Grant:
        """A token scope, `permission:target` (`invoke:acme/resize`)."""
        permission, sep, target = scope.partition(":")
        if not sep:
            raise InvalidConfig(f"{scope[:140]!r} is not a scope: PERMISSION:TENANT/PATTERN, such as "
                                "invoke:acme/resize")
        return cls.parse(permission, target, tenant)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user of a tenant through one token, with what it was given."""

    user: str
    tenant: str
    role: Role
    token_id: str = ""
    grants: frozenset[Grant] = frozenset()
    scopes: frozenset[Grant] | None = None  # None: the token does all its user may
    expires_at: float | None = None
    # its authorization decisions (dropped with it whenever accounts change)
    cache: LRUCache[object, bool] = field(default_factory=lambda: LRUCache(256), compare=False, hash=False,
                                          repr=False)

    @property
    def is_cluster_admin(self) -> bool:
        """Admins of the default tenant administer the cluster."""
        return self.role == Role.ADMIN and self.tenant == DEFAULT_TENANT

    @property
    def is_admin(self) -> bool:
        """A cluster admin with an unscoped token."""
        return self.is_cluster_admin and self.scopes is None


def _user_may(p: Principal, permission: Permission, ref: FunctionRef) -> bool:
    if p.is_cluster_admin:
        return True
    if ref.tenant == p.tenant and permission in ROLE_PERMISSIONS[p.role]:
        return True
    return any(g.covers(permission, ref) for g in p.grants)


def allowed(p: Principal, action: Action, resource: Resource) -> bool:
    """Whether `p` may do `action` on `resource`."""
    if isinstance(action, Permission):
        if not isinstance(resource, FunctionRef):
            return False
        if p.scopes is not None and not any(s.covers(action, resource) for s in p.scopes):
            return False
        return _user_may(p, action, resource)
    if action == Admin.READ:
        if not isinstance(resource, FunctionRef):
            return False
        if p.scopes is not None and not any(s.touches(resource) for s in p.scopes):
            return False
        return p.is_cluster_admin or resource.tenant == p.tenant or any(g.touches(resource) for g in p.grants)
    if p.scopes is not None:  # a scoped token manages no accounts
        return False
    if p.is_cluster_admin:
        return True
    if action == Admin.CLUSTER:
        return False
    name = resource.tenant if isinstance(resource, FunctionRef) else resource.name
    return p.role == Role.ADMIN and name == p.tenant


def _describe(action: Action, resource: Resource) -> str:
    what = "see" if action == Admin.READ else str(action)
    if isinstance(resource, FunctionRef):
        return f"permission {what!r} on function {resource.full_name}"
    if isinstance(action, Permission) or action == Admin.READ:  # only functions have these
        where = f"tenant {resource.name}" if resource.name else "the cluster"
        return f"permission {what!r} on {where}, which is no function"
    if action == Admin.CLUSTER or not resource.name:
        return "cluster admin"
    return f"admin of tenant {resource.name}"


def authorize(p: Principal, action: Action, resource: Resource) -> None:
    """Forbidden (403), naming the missing permission, unless `p` may do `action` on `resource`.

    Decided before anything is looked up, so a function of another tenant is refused alike whether
    it exists or not. Decisions are remembered on the principal (which the authenticator caches
    and drops whenever accounts change)."""
    key = (action, resource)
    ok = p.cache.get(key)
    if ok is None:
        ok = p.cache[key] = allowed(p, action, resource)
    if not ok:
        via = " (this token's scopes do not include it)" if p.scopes is not None and _user_may_any(
            p, action, resource) else ""
        raise Forbidden(f"{p.user} lacks {_describe(action, resource)}{via}", missing=str(action))


def _user_may_any(p: Principal, action: Action, resource: Resource) -> bool:
    return allowed(Principal(p.user, p.tenant, p.role, grants=p.grants), action, resource)
