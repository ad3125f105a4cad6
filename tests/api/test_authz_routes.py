"""Authorization of every route, generated from the route table.

Each route the FastAPI app serves, and the invocation fast path in front of it, is called as each
kind of caller: no token, a malformed header, an unknown, an expired and a revoked token, a node's
credential, the admin of another tenant, members of the right tenant with and without the needed
grant, its admin, a scoped token, and the cluster admin. 401 comes before anything else, 403 (never
404: no existence leak) for what the caller may not touch, and the entitled get past both. A route
missing from `ACCESS` fails the suite, so a new route cannot escape it.
"""

from __future__ import annotations

import enum
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from conftest import OK, VIA_FASTAPI, Api, error
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from helpers import make_zip

from control_plane.api import Services, create_app
from control_plane.identity import Permission

RouteKey = tuple[str, str]  # (method, path template); a mount is ("*", its prefix)


def route_keys(app: FastAPI) -> list[RouteKey]:
    """Every route `app` serves, included routers flattened (the HEAD Starlette adds beside a GET
    is that GET)."""
    keys = []
    for route in iter_route_contexts(app.routes):
        methods = set(route.methods or {"*"})
        if "GET" in methods:
            methods.discard("HEAD")
        keys += [(method, str(route.path)) for method in sorted(methods)]
    return keys


# Answered by `InvokeFastPath` before FastAPI sees them (FastAPI's own invoke route is in the app).
FAST_PATH: list[RouteKey] = [("POST", "/v1/functions/{tenant}/{name}/invoke"),
                             ("POST", "/v1/functions/{name}/invoke")]
# The routes are declared without any services: the app the platform serves is checked against
# these in `test_every_route_is_classified`.
ROUTES = route_keys(create_app(cast(Services, object()))) + FAST_PATH


class Who(enum.Enum):
    """Who a route lets through (the cluster admin: every route of a user)."""

    ANYONE = "anyone, whatever the header"
    USER = "any user (it answers with what is the caller's own)"
    MEMBER = "acme's members and grantees: seeing acme/alpha"
    PERMISSION = "a permission on acme's functions (role or grant)"
    OWN_TENANT = "a permission on the function of that name in the caller's own tenant"
    TENANT_ADMIN = "acme's admins"
    ANY_TENANT_ADMIN = "a tenant's admins, for their own tenant"
    CLUSTER_ADMIN = "cluster admins only"
    NODE = "joined nodes, by their node credential (no user's token)"
    JOIN_TOKEN = "a node with a join token, in the body (no header opens it)"
    BUILD_OWNER = "the user who deployed (404 to everyone else, as for no such build)"


class Outcome(enum.Enum):
    """What a caller gets."""

    ALLOWED = "past authorization"
    UNAUTHORIZED = (401, "Unauthorized")
    FORBIDDEN = (403, "Forbidden")
    HIDDEN = (404, "NotFound")


Call = Callable[["World", str], tuple[str, dict[str, Any]]]
"""The path to call and the client's other arguments, for the world and the caller."""


@dataclass(frozen=True)
class Rule:
    """Who may call a route, how the suite calls it, and what the entitled get."""

    who: Who
    call: Call
    ok: tuple[int, ...] = (200,)
    permission: Permission | None = None  # PERMISSION, OWN_TENANT: what it needs...
    pattern: str = "alpha"  # ...on which of acme's functions (what the granted caller's grant names)
    method: str | None = None  # a mount's
    variant: str = ""


# -- the callers ----------------------------------------------------------------------------------
INVALID = ("anonymous", "basic-scheme", "bearer-nothing", "bearer-unknown", "expired", "revoked")
CALLERS = (*INVALID, "node", "globex-admin", "acme-invoker", "acme-developer", "acme-admin",
           "acme-scoped", "granted", "cluster-admin")
# "granted": an invoker of acme whose one grant is exactly the rule's permission on its pattern.
# "acme-scoped": acme's admin through a token scoped to invoke:acme/alpha. The expired and revoked
# tokens are acme's admin's too: no role makes up for a dead token.
DEVELOPER_MAY = {Permission.DEPLOY, Permission.INVOKE, Permission.LOGS, Permission.USAGE}
GRANTED = {Who.PERMISSION, Who.OWN_TENANT}


def expected(rule: Rule, caller: str) -> Outcome:
    """What `caller` must get from a route of `rule`."""
    who = rule.who
    if who is Who.ANYONE:
        return Outcome.ALLOWED
    if who in (Who.NODE, Who.JOIN_TOKEN):
        return Outcome.ALLOWED if caller == "node" else Outcome.UNAUTHORIZED
    if caller in INVALID or caller == "node":  # a node's credential is no user's token
        return Outcome.UNAUTHORIZED
    if caller == "cluster-admin" or who is Who.USER:
        return Outcome.ALLOWED
    if who is Who.BUILD_OWNER:
        return Outcome.ALLOWED if caller == "acme-developer" else Outcome.HIDDEN
    if caller == "acme-scoped":  # what its scope names, and no account management
        opens = who is Who.MEMBER or (rule.permission is Permission.INVOKE and rule.pattern == "alpha")
        return Outcome.ALLOWED if opens else Outcome.FORBIDDEN
    developer = rule.permission in DEVELOPER_MAY
    allowed = {
        Who.MEMBER: caller != "globex-admin",
        Who.PERMISSION: caller in ("acme-admin", "granted") or (caller == "acme-developer" and developer),
        # a bare name is the caller's tenant's: globex's admin invokes globex/alpha
        Who.OWN_TENANT: caller in ("acme-admin", "granted", "globex-admin")
        or (caller == "acme-developer" and developer),
        Who.TENANT_ADMIN: caller == "acme-admin",
        Who.ANY_TENANT_ADMIN: caller in ("acme-admin", "globex-admin"),
        Who.CLUSTER_ADMIN: False,
    }[who]
    return Outcome.ALLOWED if allowed else Outcome.FORBIDDEN


# -- the world the routes are called on ----------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class World:
    """Tenants acme (function alpha, its build, user pat whom account routes act on) and globex, a
    joined node, and a header for each caller."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._serial = itertools.count()
        self._workflows: set[str] = set()
        self.callers: dict[str, dict[str, str]] = {
            "anonymous": {}, "basic-scheme": {"Authorization": "Basic eHl6"},
            "bearer-nothing": {"Authorization": "Bearer"},
            "bearer-unknown": bearer(f"cml_{uuid.uuid4().hex}"), "cluster-admin": api.headers}
        for tenant in ("acme", "globex"):
            self.admin("POST", "/v1/tenants", 201, json={"name": tenant})
        for name, tenant, role in (("acme-invoker", "acme", "invoker"), ("acme-admin", "acme", "admin"),
                                   ("acme-developer", "acme", "developer"), ("pat", "acme", "invoker"),
                                   ("globex-admin", "globex", "admin")):
            self.admin("POST", "/v1/users", 201, json={"name": name, "tenant": tenant, "role": role})
            self.callers[name] = bearer(self.token(name)["token"])
        for i, (permission, pattern) in enumerate(sorted({(r.permission, r.pattern) for r in all_rules()
                                                          if r.who in GRANTED}, key=str)):
            name = f"granted-{i}"
            self.admin("POST", "/v1/users", 201, json={"name": name, "tenant": "acme", "role": "invoker"})
            self.admin("POST", "/v1/grants", 201,
                       json={"user": name, "permission": permission, "function": f"acme/{pattern}"})
            self.callers[f"granted:{permission}:{pattern}"] = bearer(self.token(name)["token"])
        self.callers["acme-scoped"] = bearer(self.token("acme-admin", scopes=["invoke:acme/alpha"])["token"])
        revoked = self.token("acme-admin", name="revoked")
        self.admin("DELETE", f"/v1/tokens/{revoked['id']}", 200)
        self.callers["revoked"] = bearer(revoked["token"])
        self.callers["expired"] = bearer(self.token("acme-admin", expires_in_s=0.05)["token"])

        self.build = "authz-build-0001"  # alpha's, deployed by acme-developer
        resp = api.client.post("/v1/functions", **deploy_body("acme/alpha"),
                               headers={**self.callers["acme-developer"], "X-Cumulus-Build-Id": self.build})
        assert resp.status_code == 201, resp.text
        self.digest = self.admin("GET", "/v1/functions/acme/alpha", 200)["code_digest"]
        self.wheel = api.platform.agent_package.wheel().name
        self.node_id, self.node_url = "n-authz", "http://127.0.0.1:9"
        joined = self.admin("POST", "/v1/internal/join", 200, json={
            "join_token": self.join_token(), "url": self.node_url, "provider_node_id": self.node_id})
        self.callers["node"] = bearer(f"{self.node_id}:{joined['node_secret']}")

        deadline = time.monotonic() + 2
        while api.client.get("/v1/whoami", headers=self.callers["expired"]).status_code != 401:
            assert time.monotonic() < deadline, "a token of 50 ms still works after 2 s"
            time.sleep(0.02)

    def admin(self, method: str, path: str, status: int, **request: Any) -> Any:
        """A call by the cluster admin that must answer `status`; its JSON."""
        resp = self.api.client.request(method, path, headers=self.api.headers, **request)
        assert resp.status_code == status, resp.text
        return resp.json() if resp.content else None

    def token(self, user: str, **body: Any) -> dict[str, str]:
        """A new token of `user`'s (its id and secret)."""
        return self.admin("POST", "/v1/tokens", 201, json={"user": user, **body})  # type: ignore[no-any-return]

    def header(self, rule: Rule, caller: str) -> dict[str, str]:
        """The Authorization header `caller` sends to a route of `rule`."""
        if caller == "granted":
            return self.callers[f"granted:{rule.permission}:{rule.pattern}"]
        return self.callers[caller]

    def fresh(self, prefix: str) -> str:
        """A name no object has yet."""
        return f"{prefix}-{next(self._serial)}"

    def fresh_user(self) -> str:
        """A new invoker of acme, for a route to delete."""
        name = self.fresh("doomed")
        self.admin("POST", "/v1/users", 201, json={"name": name, "tenant": "acme", "role": "invoker"})
        return name

    def fresh_token(self) -> str:
        """A new token of pat's, for a route to revoke or rotate."""
        return self.token("pat", name=self.fresh("doomed"))["id"]

    def fresh_function(self) -> str:
        """A new function of acme's, for a route to delete."""
        ref = self.fresh("acme/doomed")
        self.admin("POST", "/v1/functions", 201, **deploy_body(ref))
        return ref

    def schedule(self) -> str:
        """A new schedule of acme's (calling alpha), for a route to read or delete."""
        ref = self.fresh("acme/sched")
        self.admin("POST", "/v1/schedules", 201, json={"name": ref, "function": "acme/alpha", "rate": "1d"})
        return ref

    def bus_rule(self) -> str:
        """A new rule of acme's bus (calling alpha), for a route to read or delete."""
        ref = self.fresh("acme/route")
        self.admin("POST", "/v1/bus/rules", 201, json={"name": ref, "pattern": {"source": ["x"]},
                                                       "target": "acme/alpha"})
        return ref

    def workflow(self, ref: str = "acme/alpha") -> str:
        """A workflow of acme's (a Pass state only), deployed if it is not yet."""
        if ref not in self._workflows:
            self.admin("POST", "/v1/workflows", 201, json={"name": ref, "definition": PASS_ONLY})
            self._workflows.add(ref)
        return ref

    def execution(self) -> str:
        """An execution of acme/alpha's workflow."""
        return str(self.admin("POST", f"/v1/workflows/{self.workflow()}/executions", 201, json={})["id"])

    def join_token(self) -> str:
        return self.api.platform.store.issue_join_token(f"req-{uuid.uuid4().hex}", "test", "t", ttl_s=60)


def deploy_body(ref: str) -> dict[str, Any]:
    return {"data": {"config": json.dumps({"name": ref})},
            "files": {"code": ("code.zip", make_zip(OK), "application/zip")}}


# -- the table: every route, who may call it, and how ----------------------------------------------
def at(path: str, **request: Any) -> Call:
    """`path`, its `{fields}` filled from the world, with these client arguments."""
    return lambda w, _: (path.format_map(vars(w)), request)


def invoke(ref: str, *, fastapi: bool) -> Call:
    """Invoking `ref` on the fast path, or past it on FastAPI's route."""
    headers = VIA_FASTAPI if fastapi else {}
    return lambda w, _: (f"/v1/functions/{ref}/invoke", {"json": {}, "headers": headers})


def join(w: World, caller: str) -> tuple[str, dict[str, Any]]:
    token = w.join_token() if caller == "node" else "cmlj_bogus"
    return "/v1/internal/join", {"json": {"join_token": token, "url": w.node_url,
                                          "provider_node_id": w.fresh("n-join")}}


def heartbeat(w: World, _: str) -> tuple[str, dict[str, Any]]:
    # a node too small for any function: invocations keep failing at once with NoCapacity
    return "/v1/internal/heartbeat", {"json": {"node_id": w.node_id, "url": w.node_url, "cpu_millis": 1,
                                               "memory_mib": 1}}


P, ANY_ACME = Permission, "*"
PASS_ONLY = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
ACCESS: dict[RouteKey, Rule | tuple[Rule, ...]] = {
    ("GET", "/healthz"): Rule(Who.ANYONE, at("/healthz")),
    ("GET", "/openapi.json"): Rule(Who.ANYONE, at("/openapi.json")),
    ("GET", "/docs"): Rule(Who.ANYONE, at("/docs")),
    ("*", "/docs/assets"): Rule(Who.ANYONE, at("/docs/assets/swagger-ui.css"), method="GET"),
    ("GET", "/v1/agent/package/{filename}"): Rule(Who.ANYONE, at("/v1/agent/package/{wheel}")),
    # functions
    ("POST", "/v1/functions"): Rule(Who.PERMISSION, lambda w, _: ("/v1/functions", deploy_body("acme/alpha")),
                                    (201,), P.DEPLOY),
    ("GET", "/v1/functions"): Rule(Who.USER, at("/v1/functions?tenant=acme")),
    ("GET", "/v1/functions/{ref:path}/logs"): Rule(Who.PERMISSION, at("/v1/functions/acme/alpha/logs"),
                                                   permission=P.LOGS),
    ("GET", "/v1/functions/{ref:path}/invocations"): Rule(
        Who.PERMISSION, at("/v1/functions/acme/alpha/invocations"), permission=P.LOGS),
    ("GET", "/v1/functions/{ref:path}/dlq"): Rule(Who.PERMISSION, at("/v1/functions/acme/alpha/dlq"),
                                                  permission=P.LOGS),
    ("POST", "/v1/functions/{ref:path}/dlq/redrive"): Rule(
        Who.PERMISSION, at("/v1/functions/acme/alpha/dlq/redrive", json={}), permission=P.INVOKE),
    ("POST", "/v1/functions/{ref:path}/invoke"): (
        Rule(Who.PERMISSION, invoke("acme/alpha", fastapi=True), (503,), P.INVOKE, variant="tenant/name"),
        Rule(Who.OWN_TENANT, invoke("alpha", fastapi=True), (503, 404), P.INVOKE, variant="bare")),
    ("POST", "/v1/functions/{tenant}/{name}/invoke"): Rule(
        Who.PERMISSION, invoke("acme/alpha", fastapi=False), (503,), P.INVOKE),
    ("POST", "/v1/functions/{name}/invoke"): Rule(Who.OWN_TENANT, invoke("alpha", fastapi=False), (503, 404),
                                                  P.INVOKE),
    ("GET", "/v1/functions/{ref:path}"): Rule(Who.MEMBER, at("/v1/functions/acme/alpha")),
    ("DELETE", "/v1/functions/{ref:path}"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/functions/{w.fresh_function()}", {}), (204,), P.DEPLOY,
        pattern="doomed-*"),
    # schedules
    ("POST", "/v1/schedules"): Rule(Who.PERMISSION, lambda w, _: ("/v1/schedules", {"json": {
        "name": f"acme/{w.fresh('tick')}", "function": "acme/alpha", "rate": "1d"}}), (201,), P.DEPLOY),
    ("GET", "/v1/schedules"): Rule(Who.USER, at("/v1/schedules?tenant=acme")),
    ("GET", "/v1/schedules/{ref:path}"): Rule(Who.MEMBER, lambda w, _: (f"/v1/schedules/{w.schedule()}", {})),
    ("DELETE", "/v1/schedules/{ref:path}"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/schedules/{w.schedule()}", {}), (204,), P.DEPLOY),
    # the event bus
    ("POST", "/v1/bus/events"): Rule(Who.PERMISSION, at("/v1/bus/events", json={"tenant": "acme", "entries": [
        {"source": "test", "detail-type": "t", "detail": {}}]}), permission=P.INVOKE, pattern="*"),
    ("POST", "/v1/bus/test-pattern"): Rule(Who.USER, at("/v1/bus/test-pattern", json={
        "EventPattern": {"source": ["x"]}, "Event": {"source": "x"}})),
    ("POST", "/v1/bus/rules"): Rule(Who.PERMISSION, lambda w, _: ("/v1/bus/rules", {"json": {
        "name": f"acme/{w.fresh('route')}", "pattern": {"source": ["x"]}, "target": "acme/alpha"}}),
        (201,), P.DEPLOY),
    ("GET", "/v1/bus/rules"): Rule(Who.USER, at("/v1/bus/rules?tenant=acme")),
    ("GET", "/v1/bus/rules/{ref:path}"): Rule(Who.MEMBER, lambda w, _: (f"/v1/bus/rules/{w.bus_rule()}", {})),
    ("DELETE", "/v1/bus/rules/{ref:path}"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/bus/rules/{w.bus_rule()}", {}), (204,), P.DEPLOY),
    # workflows
    ("POST", "/v1/workflows"): Rule(Who.PERMISSION, at("/v1/workflows", json={"name": "acme/alpha",
                                                                           "definition": PASS_ONLY}),
                                    (201,), P.DEPLOY),
    ("GET", "/v1/workflows"): Rule(Who.USER, at("/v1/workflows")),
    ("GET", "/v1/workflows/{ref:path}"): Rule(Who.MEMBER, lambda w, _: (f"/v1/workflows/{w.workflow()}", {})),
    ("DELETE", "/v1/workflows/{ref:path}"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/workflows/{w.workflow(w.fresh('acme/doomed'))}", {}), (204,),
        P.DEPLOY, pattern="doomed-*"),
    ("GET", "/v1/workflows/{ref:path}/executions"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/workflows/{w.workflow()}/executions", {}), permission=P.LOGS),
    ("POST", "/v1/workflows/{ref:path}/executions"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/workflows/{w.workflow()}/executions", {"json": {}}), (201,),
        P.INVOKE),
    ("GET", "/v1/executions/{execution_id}"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/executions/{w.execution()}", {}), permission=P.LOGS),
    ("GET", "/v1/executions/{execution_id}/history"): Rule(
        Who.PERMISSION, lambda w, _: (f"/v1/executions/{w.execution()}/history", {}), permission=P.LOGS),
    ("GET", "/v1/builds/{build_id}"): Rule(Who.BUILD_OWNER, at("/v1/builds/{build}")),
    # the fleet
    ("GET", "/v1/nodes"): Rule(Who.CLUSTER_ADMIN, at("/v1/nodes")),
    ("GET", "/v1/events"): Rule(Who.CLUSTER_ADMIN, at("/v1/events")),
    ("GET", "/v1/control-planes"): Rule(Who.CLUSTER_ADMIN, at("/v1/control-planes")),
    # accounts
    ("GET", "/v1/whoami"): Rule(Who.USER, at("/v1/whoami")),
    ("POST", "/v1/tenants"): Rule(Who.CLUSTER_ADMIN, lambda w, _: (
        "/v1/tenants", {"json": {"name": w.fresh("initech")}}), (201,)),
    ("GET", "/v1/tenants"): Rule(Who.ANY_TENANT_ADMIN, at("/v1/tenants")),
    ("GET", "/v1/tenants/{name}"): Rule(Who.TENANT_ADMIN, at("/v1/tenants/acme")),
    ("PATCH", "/v1/tenants/{name}"): Rule(Who.CLUSTER_ADMIN, at("/v1/tenants/acme", json={})),
    ("POST", "/v1/users"): Rule(Who.TENANT_ADMIN, lambda w, _: ("/v1/users", {"json": {
        "name": w.fresh("newcomer"), "tenant": "acme", "role": "invoker"}}), (201,)),
    ("GET", "/v1/users"): Rule(Who.TENANT_ADMIN, at("/v1/users?tenant=acme")),
    ("PATCH", "/v1/users/{name}"): Rule(Who.TENANT_ADMIN, at("/v1/users/pat", json={"role": "invoker"})),
    ("DELETE", "/v1/users/{name}"): Rule(Who.TENANT_ADMIN, lambda w, _: (f"/v1/users/{w.fresh_user()}", {}),
                                         (204,)),
    ("POST", "/v1/tokens"): Rule(Who.TENANT_ADMIN, at("/v1/tokens", json={"user": "pat"}), (201,)),
    ("GET", "/v1/tokens"): Rule(Who.TENANT_ADMIN, at("/v1/tokens?tenant=acme")),
    ("DELETE", "/v1/tokens/{token_id}"): Rule(Who.TENANT_ADMIN,
                                              lambda w, _: (f"/v1/tokens/{w.fresh_token()}", {})),
    ("POST", "/v1/tokens/{token_id}/rotate"): Rule(Who.TENANT_ADMIN, lambda w, _: (
        f"/v1/tokens/{w.fresh_token()}/rotate", {"json": {"overlap_s": 0}}), (201,)),
    ("POST", "/v1/grants"): Rule(Who.PERMISSION, at("/v1/grants", json={
        "user": "pat", "permission": "invoke", "function": "acme/alpha"}), (201,), P.GRANT),
    ("POST", "/v1/grants/revoke"): Rule(Who.PERMISSION, at("/v1/grants/revoke", json={
        "user": "pat", "permission": "invoke", "function": "acme/alpha"}), (204, 404), P.GRANT),
    ("GET", "/v1/grants"): Rule(Who.TENANT_ADMIN, at("/v1/grants?tenant=acme")),
    # usage: /v1/usage shows the functions the caller may read the usage of; a bill needs them all
    ("GET", "/v1/usage"): Rule(Who.PERMISSION, at("/v1/usage?tenant=acme"), permission=P.USAGE),
    ("GET", "/v1/bill"): Rule(Who.PERMISSION, at("/v1/bill?tenant=acme"), permission=P.USAGE,
                              pattern=ANY_ACME),
    # node agents
    ("POST", "/v1/internal/join"): Rule(Who.JOIN_TOKEN, join),
    ("POST", "/v1/internal/heartbeat"): Rule(Who.NODE, heartbeat),
    ("POST", "/v1/internal/usage"): Rule(Who.NODE, lambda w, _: ("/v1/internal/usage", {"json": {
        "node_id": w.node_id, "records": []}})),
    # (no instance named: refused once past the credential, before any mail)
    ("POST", "/v1/internal/services/mail"): Rule(Who.NODE, at("/v1/internal/services/mail", json={}), (400,)),
    ("GET", "/v1/internal/artifacts/{digest}"): Rule(Who.NODE, at("/v1/internal/artifacts/{digest}")),
    ("GET", "/v1/internal/runtimes/{runtime}"): Rule(Who.NODE, at("/v1/internal/runtimes/no-such-runtime"),
                                                     (404,)),  # a real one would be built: slow
}


def rules_of(key: RouteKey) -> tuple[Rule, ...]:
    found = ACCESS[key]
    return found if isinstance(found, tuple) else (found,)


def all_rules() -> Iterator[Rule]:
    for key in ACCESS:
        yield from rules_of(key)


def label(key: RouteKey, rule: Rule | None) -> str:
    """A case's readable id."""
    return f"{key[0]} {key[1]}" + (f" ({rule.variant})" if rule is not None and rule.variant else "")


def _cases() -> Iterator[Any]:
    for key in ROUTES:
        if key not in ACCESS:  # fails in the test, loudly
            yield pytest.param(key, 0, "anonymous", id=f"{label(key, None)} UNCLASSIFIED")
            continue
        for i, rule in enumerate(rules_of(key)):
            for caller in CALLERS:
                if caller != "granted" or rule.who in GRANTED:
                    yield pytest.param(key, i, caller, id=f"{label(key, rule)} as {caller}")


@pytest.fixture(scope="module")
def world(api: Api) -> World:
    """The objects and callers, made once for the module."""
    return World(api)


def call(world: World, key: RouteKey, rule: Rule, caller: str) -> Any:
    """The answer to `caller` calling the route `key` as `rule` says."""
    path, request = rule.call(world, caller)
    request = dict(request)
    headers = {**request.pop("headers", {}), **world.header(rule, caller)}
    return world.api.client.request(rule.method or key[0], path, headers=headers, **request)


def test_every_route_is_classified(api: Api) -> None:
    """Every route served has a row in ACCESS, and every row a route."""
    served = route_keys(api.app) + FAST_PATH
    unclassified = [k for k in served if k not in ACCESS]
    assert not unclassified, f"routes in no row of ACCESS (say who may call them): {unclassified}"
    assert not [k for k in ACCESS if k not in served], "rows of ACCESS for routes no longer served"
    assert sorted(served) == sorted(ROUTES), "the app served is not the app the cases were made from"


@pytest.mark.parametrize(("key", "variant", "caller"), list(_cases()))
def test_each_route_answers_each_caller(world: World, key: RouteKey, variant: int, caller: str) -> None:
    """401 for a dead or missing credential, 403 (or 404 for a build) for who may not, past both for
    who may."""
    if key not in ACCESS:
        pytest.fail(f"{label(key, None)} is in no row of ACCESS: say who may call it")
    rule = rules_of(key)[variant]
    resp = call(world, key, rule, caller)
    outcome = expected(rule, caller)
    if outcome is Outcome.ALLOWED:
        assert resp.status_code in rule.ok, f"{caller} ({rule.who.value}): {resp.status_code} {resp.text}"
    else:
        status, kind = outcome.value
        error(resp, status, kind)


def _function_routes() -> Iterator[Any]:
    for key in ACCESS:
        for i, rule in enumerate(rules_of(key)):
            named = rule.who in (Who.PERMISSION, Who.MEMBER) and rule.variant != "bare"
            if named and key[1].startswith("/v1/functions"):
                yield pytest.param(key, i, id=label(key, rule))


@pytest.mark.parametrize(("key", "variant"), list(_function_routes()))
def test_another_tenants_function_is_forbidden_whether_or_not_it_exists(world: World, key: RouteKey,
                                                                       variant: int) -> None:
    """What is refused on acme/alpha is refused alike on acme/ghost: no existence leak."""
    rule = rules_of(key)[variant]
    ghostly = Rule(rule.who, lambda w, who: _haunted(*rule.call(w, who)), method=rule.method)
    err = error(call(world, key, ghostly, "globex-admin"), 403, "Forbidden")
    assert "globex-admin" in err["message"]


def _haunted(path: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The same call, on acme's function ghost, which does not exist."""
    if "data" in request:  # a deploy names its function in its config
        return path, deploy_body("acme/ghost")
    return re.sub(r"^/v1/functions/acme/[^/]+", "/v1/functions/acme/ghost", path), request


def _bodied() -> Iterator[Any]:
    for key in ACCESS:
        for i, rule in enumerate(rules_of(key)):
            if key[0] in ("POST", "PATCH", "PUT") and rule.who not in (Who.ANYONE, Who.JOIN_TOKEN):
                for body in (b"{}", b"{not json"):
                    yield pytest.param(key, i, body, id=f"{label(key, rule)} {body.decode()}")


@pytest.mark.parametrize(("key", "variant", "body"), list(_bodied()))
def test_authentication_comes_before_the_body(world: World, key: RouteKey, variant: int, body: bytes) -> None:
    """An anonymous caller is refused for want of a credential, not for its body."""
    rule = rules_of(key)[variant]
    path, request = rule.call(world, "anonymous")
    headers = {**request.get("headers", {}), "Content-Type": "application/json"}
    error(world.api.client.request(key[0], path, headers=headers, content=body), 401, "Unauthorized")
