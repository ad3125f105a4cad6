"""The one authorization decision, `authorize(principal, action, resource)`, as a table of cases.

Each row is a caller (user, tenant, role, grants, the token's scopes), an action, a resource and the
answer the module's docstring gives: allowed, or Forbidden with a message naming what is missing.
Pure: no store, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from control_plane.core import Forbidden, InvalidConfig
from control_plane.identity.access import (
    CLUSTER,
    Action,
    Admin,
    FunctionRef,
    Grant,
    Permission,
    Principal,
    Resource,
    Role,
    TenantRef,
    allowed,
    authorize,
)

ALL: frozenset[Action] = frozenset({*Permission, *Admin})
SCOPES = "this token's scopes do not include it"  # how a denial says the user could, the token not

ACME_ALPHA = FunctionRef("acme", "alpha")
ACME_BETA = FunctionRef("acme", "beta")
GLOBEX_ALPHA = FunctionRef("globex", "alpha")
ACME = TenantRef("acme")
GLOBEX = TenantRef("globex")


def fn(full_name: str) -> FunctionRef:
    """A function by its full name."""
    return FunctionRef.parse(full_name, "unused")


def _grant_row(text: str, tenant: str) -> Grant:
    """A grant as `principal_of` parses a grant row (`permission`, `target`)."""
    permission, _, target = text.partition(":")
    return Grant.parse(permission, target, tenant)


@dataclass(frozen=True)
class Who:
    """A caller as the store describes it: a user of a tenant, its grants, its token's scopes."""

    user: str
    tenant: str
    role: Role
    grants: tuple[str, ...] = ()  # `permission:target`, target as a grant row gives it
    scopes: tuple[str, ...] | None = None  # None: an unscoped token

    def principal(self) -> Principal:
        """A fresh principal (empty decision cache), built as `auth.principal_of` builds it."""
        grants = frozenset(_grant_row(g, self.tenant) for g in self.grants)
        scopes = None if self.scopes is None else frozenset(Grant.parse_scope(s, self.tenant)
                                                            for s in self.scopes)
        return Principal(user=self.user, tenant=self.tenant, role=self.role, token_id="t1",
                         grants=grants, scopes=scopes)

    def __str__(self) -> str:
        text = f"{self.tenant}-{self.role}"
        if self.grants:
            text += "+" + ",".join(self.grants)
        if self.scopes is not None:
            text += "[" + ",".join(self.scopes) + "]"
        return text


def admin(tenant: str = "acme", *, grants: tuple[str, ...] = (),
          scopes: tuple[str, ...] | None = None) -> Who:
    """An admin of `tenant` (of the cluster, for `default`)."""
    return Who("ada", tenant, Role.ADMIN, grants, scopes)


def developer(tenant: str = "acme", *, grants: tuple[str, ...] = (),
              scopes: tuple[str, ...] | None = None) -> Who:
    """A developer of `tenant`."""
    return Who("dev", tenant, Role.DEVELOPER, grants, scopes)


def invoker(tenant: str = "acme", *, grants: tuple[str, ...] = (),
            scopes: tuple[str, ...] | None = None) -> Who:
    """An invoker of `tenant`."""
    return Who("ivy", tenant, Role.INVOKER, grants, scopes)


def cluster_admin(*, scopes: tuple[str, ...] | None = None) -> Who:
    """An admin of the `default` tenant."""
    return Who("root", "default", Role.ADMIN, (), scopes)


def names(action: Action, resource: Resource) -> str:
    """What a denial's message must name: the missing permission (authorize's docstring)."""
    what = "see" if action == Admin.READ else str(action)
    if isinstance(resource, FunctionRef):
        return f"{what!r} on function {resource.full_name}"
    if isinstance(action, Permission) or action == Admin.READ:
        return repr(what)  # only functions have these; the denial must still say which was asked
    if action == Admin.CLUSTER or resource == CLUSTER:
        return "cluster admin"
    return f"admin of tenant {resource.name}"


@dataclass(frozen=True)
class Case:
    """One decision: `who` doing `action` on `resource`; `denied` None if allowed, else the
    substrings its Forbidden message must contain."""

    who: Who
    action: Action
    resource: Resource
    denied: tuple[str, ...] | None

    @property
    def id(self) -> str:
        """The row's name in pytest's output."""
        if isinstance(self.resource, FunctionRef):
            where = self.resource.full_name
        else:
            where = f"tenant:{self.resource.name}" if self.resource.name else "CLUSTER"
        return f"{self.who} {self.action} {where} -> {'denied' if self.denied else 'allowed'}"


def ok(who: Who, action: Action, resource: Resource) -> Case:
    """`who` may."""
    return Case(who, action, resource, None)


def no(who: Who, action: Action, resource: Resource, *also: str) -> Case:
    """`who` may not; the message names what is missing (and `also`)."""
    return Case(who, action, resource, (names(action, resource), *also))


def matrix(who: Who, resource: Resource, may: frozenset[Action] | set[Action]) -> list[Case]:
    """Every action on `resource`: those in `may` allowed, all others denied."""
    return [ok(who, a, resource) if a in may else no(who, a, resource)
            for a in sorted(ALL, key=lambda a: (isinstance(a, Admin), str(a)))]


FN_ROLE = {*Permission} - {Permission.GRANT}

CASES: list[Case] = [
    # -- roles: each role of acme, each action, on its own function, globex's, its tenant, the cluster
    *matrix(admin(), ACME_ALPHA, {*Permission, Admin.READ, Admin.USERS, Admin.TENANT}),
    *matrix(admin(), GLOBEX_ALPHA, set()),
    *matrix(admin(), ACME, {Admin.USERS, Admin.TENANT}),
    *matrix(admin(), CLUSTER, set()),
    *matrix(developer(), ACME_ALPHA, {*FN_ROLE, Admin.READ}),
    *matrix(developer(), GLOBEX_ALPHA, set()),
    *matrix(developer(), ACME, set()),
    *matrix(developer(), CLUSTER, set()),
    *matrix(invoker(), ACME_ALPHA, {Admin.READ}),  # lists its tenant's functions, nothing more
    *matrix(invoker(), GLOBEX_ALPHA, set()),
    *matrix(invoker(), ACME, set()),
    *matrix(invoker(), CLUSTER, set()),
    # an admin of another tenant is no cluster admin
    no(admin("globex"), Admin.USERS, ACME),
    ok(admin("globex"), Admin.USERS, GLOBEX),
    # -- cluster admins (admins of `default`): everything, everywhere
    *matrix(cluster_admin(), ACME_ALPHA, ALL),
    *matrix(cluster_admin(), GLOBEX, {Admin.USERS, Admin.TENANT, Admin.CLUSTER}),
    *matrix(cluster_admin(), CLUSTER, {Admin.USERS, Admin.TENANT, Admin.CLUSTER}),
    ok(cluster_admin(), Permission.DEPLOY, fn("default/hello")),
    # a developer of `default` is a developer, not a cluster admin
    ok(developer("default"), Permission.DEPLOY, fn("default/hello")),
    no(developer("default"), Permission.DEPLOY, ACME_ALPHA),
    no(developer("default"), Admin.CLUSTER, CLUSTER),
    no(developer("default"), Admin.USERS, TenantRef("default")),
    # -- grants: exact names
    ok(invoker(grants=("invoke:acme/alpha",)), Permission.INVOKE, ACME_ALPHA),
    no(invoker(grants=("invoke:acme/alpha",)), Permission.INVOKE, ACME_BETA),
    ok(invoker(grants=("invoke:alpha",)), Permission.INVOKE, ACME_ALPHA),  # bare: the user's tenant
    # one permission gives no other
    no(invoker(grants=("invoke:acme/alpha",)), Permission.LOGS, ACME_ALPHA),
    no(invoker(grants=("invoke:acme/alpha",)), Permission.DEPLOY, ACME_ALPHA),
    no(invoker(grants=("invoke:acme/alpha",)), Permission.USAGE, ACME_ALPHA),
    no(invoker(grants=("invoke:acme/alpha",)), Permission.GRANT, ACME_ALPHA),
    # patterns
    ok(invoker(grants=("invoke:acme/img-*",)), Permission.INVOKE, fn("acme/img-resize")),
    ok(invoker(grants=("invoke:acme/img-*",)), Permission.INVOKE, fn("acme/img-")),
    no(invoker(grants=("invoke:acme/img-*",)), Permission.INVOKE, fn("acme/imgx")),
    no(invoker(grants=("invoke:acme/img-*",)), Permission.INVOKE, ACME_ALPHA),
    no(invoker(grants=("invoke:acme/img-*",)), Permission.INVOKE, fn("globex/img-resize")),
    ok(invoker(grants=("invoke:acme/v?",)), Permission.INVOKE, fn("acme/v2")),
    no(invoker(grants=("invoke:acme/v?",)), Permission.INVOKE, fn("acme/v10")),
    ok(invoker(grants=("logs:acme/*",)), Permission.LOGS, ACME_ALPHA),
    ok(invoker(grants=("logs:acme/*",)), Permission.LOGS, ACME_BETA),
    no(invoker(grants=("logs:acme/*",)), Permission.INVOKE, ACME_BETA),
    no(invoker(grants=("logs:acme/*",)), Permission.LOGS, GLOBEX_ALPHA),
    # grants add to roles
    ok(developer(grants=("grant:acme/alpha",)), Permission.GRANT, ACME_ALPHA),
    no(developer(grants=("grant:acme/alpha",)), Permission.GRANT, ACME_BETA),
    # shared with a user of another tenant
    ok(invoker("globex", grants=("invoke:acme/alpha",)), Permission.INVOKE, ACME_ALPHA),
    ok(invoker("globex", grants=("invoke:acme/alpha",)), Admin.READ, ACME_ALPHA),
    no(invoker("globex", grants=("invoke:acme/alpha",)), Admin.READ, ACME_BETA),
    no(invoker("globex", grants=("invoke:acme/alpha",)), Permission.INVOKE, ACME_BETA),
    no(invoker("globex", grants=("invoke:acme/alpha",)), Permission.LOGS, ACME_ALPHA),
    ok(developer("globex", grants=("deploy:acme/img-*",)), Permission.DEPLOY, fn("acme/img-resize")),
    no(developer("globex", grants=("deploy:acme/img-*",)), Permission.INVOKE, fn("acme/img-resize")),
    no(developer("globex", grants=("deploy:acme/img-*",)), Permission.DEPLOY, ACME_ALPHA),
    ok(developer("globex", grants=("deploy:acme/img-*",)), Permission.DEPLOY, GLOBEX_ALPHA),
    # grants never give account or cluster actions
    ok(admin("globex", grants=("grant:acme/*",)), Permission.GRANT, ACME_ALPHA),
    no(admin("globex", grants=("grant:acme/*",)), Admin.USERS, ACME),
    no(admin("globex", grants=("grant:acme/*",)), Admin.TENANT, ACME),
    no(admin("globex", grants=("grant:acme/*",)), Admin.USERS, ACME_ALPHA),
    no(invoker(grants=("grant:acme/*", "usage:acme/*")), Admin.USERS, ACME),
    no(invoker(grants=("grant:acme/*", "usage:acme/*")), Admin.TENANT, ACME),
    no(invoker(grants=("grant:acme/*", "usage:acme/*")), Admin.CLUSTER, CLUSTER),
    # -- token scopes: what both the user and one of its scopes allow, and no account management
    ok(admin(scopes=("invoke:acme/resize",)), Permission.INVOKE, fn("acme/resize")),
    ok(admin(scopes=("invoke:resize",)), Permission.INVOKE, fn("acme/resize")),  # bare: user's tenant
    no(admin(scopes=("invoke:acme/resize",)), Permission.DEPLOY, fn("acme/resize"), SCOPES),
    no(admin(scopes=("invoke:acme/resize",)), Permission.INVOKE, fn("acme/other"), SCOPES),
    no(admin(scopes=("invoke:acme/resize",)), Permission.GRANT, fn("acme/resize"), SCOPES),
    ok(admin(scopes=("invoke:acme/resize",)), Admin.READ, fn("acme/resize")),
    no(admin(scopes=("invoke:acme/resize",)), Admin.READ, fn("acme/other"), SCOPES),
    no(admin(scopes=("invoke:acme/resize",)), Admin.USERS, ACME, SCOPES),
    no(admin(scopes=("invoke:acme/resize",)), Admin.TENANT, ACME, SCOPES),
    no(admin(scopes=()), Permission.INVOKE, ACME_ALPHA, SCOPES),  # no scopes: nothing
    ok(developer(scopes=("invoke:acme/*", "logs:acme/alpha")), Permission.LOGS, ACME_ALPHA),
    ok(developer(scopes=("invoke:acme/*", "logs:acme/alpha")), Permission.INVOKE, ACME_BETA),
    no(developer(scopes=("invoke:acme/*", "logs:acme/alpha")), Permission.LOGS, ACME_BETA, SCOPES),
    no(developer(scopes=("invoke:acme/*", "logs:acme/alpha")), Permission.DEPLOY, ACME_ALPHA, SCOPES),
    ok(cluster_admin(scopes=("deploy:acme/*",)), Permission.DEPLOY, ACME_ALPHA),
    no(cluster_admin(scopes=("deploy:acme/*",)), Permission.DEPLOY, GLOBEX_ALPHA, SCOPES),
    no(cluster_admin(scopes=("deploy:acme/*",)), Admin.CLUSTER, CLUSTER, SCOPES),
    no(cluster_admin(scopes=("deploy:acme/*",)), Admin.USERS, ACME, SCOPES),
    # a scope beyond the user's rights gives nothing
    no(invoker(scopes=("invoke:acme/*",)), Permission.INVOKE, ACME_ALPHA),
    no(developer(scopes=("grant:acme/*",)), Permission.GRANT, ACME_ALPHA),
    no(developer(scopes=("deploy:globex/*",)), Permission.DEPLOY, GLOBEX_ALPHA),
    ok(invoker(grants=("invoke:acme/alpha",), scopes=("invoke:acme/*",)), Permission.INVOKE, ACME_ALPHA),
    no(invoker(grants=("invoke:acme/alpha",), scopes=("invoke:acme/*",)), Permission.INVOKE, ACME_BETA),
]

table = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


@table
def test_decision(case: Case) -> None:
    p = case.who.principal()
    assert allowed(p, case.action, case.resource) is (case.denied is None)
    for _ in range(2):  # the second answer comes from the principal's cache
        if case.denied is None:
            authorize(p, case.action, case.resource)
            continue
        with pytest.raises(Forbidden) as raised:
            authorize(p, case.action, case.resource)
        assert raised.value.status == 403
        assert raised.value.extra == {"missing": str(case.action)}


@table
def test_denial_names_what_is_missing(case: Case) -> None:
    if case.denied is None:
        return  # allowed: test_decision checks it raises nothing
    with pytest.raises(Forbidden) as raised:
        authorize(case.who.principal(), case.action, case.resource)
    message = raised.value.message
    assert message.startswith(f"{case.who.user} lacks "), message
    for part in case.denied:
        assert part in message, f"{part!r} not in {message!r}"


def test_decisions_are_per_action_and_resource() -> None:
    p = invoker(grants=("invoke:acme/alpha",)).principal()
    authorize(p, Permission.INVOKE, ACME_ALPHA)
    with pytest.raises(Forbidden):
        authorize(p, Permission.LOGS, ACME_ALPHA)  # not answered from the cached invoke
    with pytest.raises(Forbidden):
        authorize(p, Permission.INVOKE, ACME_BETA)
    authorize(p, Permission.INVOKE, ACME_ALPHA)


@pytest.mark.parametrize(("held", "asked", "may"), [
    ("grant:acme/?", "acme/*", False),  # `?` matches the one character `*`: no grant on every function
    ("grant:acme/img-?", "acme/img-*", False),
    ("grant:acme/img-*", "acme/img-*", True),  # the same pattern
    ("grant:acme/*", "acme/img-*", True),
    ("usage:acme/?", "acme/*", False),  # the tenant-wide usage and bill check
    ("usage:acme/*", "acme/*", True),
])
def test_a_pattern_as_the_resource_is_covered_only_by_star_or_itself(held: str, asked: str,
                                                                    may: bool) -> None:
    """Granting `acme/img-*` or reading the whole tenant's usage asks about a pattern, not a name."""
    permission = held.partition(":")[0]
    p = invoker(grants=(held,)).principal()
    tenant, _, pattern = asked.partition("/")
    assert allowed(p, Permission(permission), FunctionRef(tenant, pattern)) is may


# -- names, grants and scopes that are refused before any decision ------------------------------------

BAD_INPUTS: list[tuple[str, str, str]] = [
    # (what is parsed, the input, what the InvalidConfig message says)
    ("function", "Alpha", "is not a function name"),
    ("function", "1alpha", "is not a function name"),
    ("function", "al_pha", "is not a function name"),
    ("function", "a" * 64, "is not a function name"),
    ("function", "", "is not a function name"),
    ("function", "acme/", "is not a function name"),
    ("function", "Acme/alpha", "is not a function name"),
    ("function", "acme/img-*", "is not a function name"),  # a pattern names no one function
    ("function", "acme/a/b", "is not a function name"),
    ("function", "/alpha", "is not a function name"),  # neither NAME nor TENANT/NAME
    ("grant", "admin acme/*", "unknown permission"),
    ("grant", "read acme/*", "unknown permission"),  # Admin actions are never granted
    ("grant", "cluster *", "unknown permission"),
    ("grant", "Invoke acme/*", "unknown permission"),
    ("grant", "invoke acme/img_*", "names no functions"),
    ("grant", "invoke acme/", "names no functions"),
    ("grant", "invoke ACME/*", "names no functions"),
    ("grant", "invoke acme/[ab]", "names no functions"),
    ("grant", "invoke /alpha", "names no functions"),  # neither PATTERN nor TENANT/PATTERN
    ("scope", "invoke acme/resize", "is not a scope"),
    ("scope", "", "is not a scope"),
    ("scope", "invoke:", "names no functions"),
    ("scope", ":acme/*", "unknown permission"),
    ("scope", "users:acme/*", "unknown permission"),  # a scope gives no account management
]


def _parse(kind: str, text: str) -> object:
    if kind == "function":
        return FunctionRef.parse(text, "acme")
    if kind == "grant":
        permission, _, target = text.partition(" ")
        return Grant.parse(permission, target, "acme")
    return Grant.parse_scope(text, "acme")


@pytest.mark.parametrize(("kind", "text", "says"), BAD_INPUTS,
                         ids=[f"{k}:{t[:20]!r}" for k, t, _ in BAD_INPUTS])
def test_bad_input_is_invalid_config(kind: str, text: str, says: str) -> None:
    with pytest.raises(InvalidConfig, match=says) as raised:
        _parse(kind, text)
    assert raised.value.status == 422


def test_parsed_names_default_to_the_callers_tenant() -> None:
    assert FunctionRef.parse("alpha", "acme") == ACME_ALPHA
    assert FunctionRef.parse("globex/alpha", "acme") == GLOBEX_ALPHA
    assert Grant.parse("invoke", "img-*", "acme") == Grant(Permission.INVOKE, "acme", "img-*")
    assert Grant.parse_scope("logs:globex/*", "acme") == Grant(Permission.LOGS, "globex", "*")
    assert Grant.parse_scope("logs:globex/*", "acme").text == "logs:globex/*"
