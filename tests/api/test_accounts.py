"""Tenants, users, tokens and grants through the API with real tokens: who sees and may do what,
token expiry, revocation (on this control plane at once, on another within a second, on SQLite and
on PostgreSQL), rotation with an overlap, scopes, and the function quota at deploy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import OK, Api, _FastPathOrFastAPI, error, serve
from helpers import make_zip

from control_plane.identity import auth as auth_module

Org = dict[str, dict[str, str]]  # a person of the test organisation -> their Authorization header


def _token(api: Api, headers: dict[str, str] | None = None, **body: Any) -> str:
    resp = api.client.post("/v1/tokens", headers=headers or api.headers, json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def grant(user: str, permission: str, function: str) -> dict[str, str]:
    return {"user": user, "permission": permission, "function": function}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def deploy(api: Api, name: str, headers: dict[str, str], **settings: Any) -> Any:
    import json

    config = json.dumps({"name": name, **settings})
    return api.client.post("/v1/functions", headers=headers, data={"config": config},
                           files={"code": ("code.zip", make_zip(OK), "application/zip")})


@pytest.fixture(scope="module")
def org(api: Api) -> dict[str, dict[str, str]]:
    """Tenants acme and beta; alice (developer), bob (invoker), carol (admin) of acme; eve
    (developer) of beta; a header for each."""
    for tenant, quotas in (("acme", {"functions": 3}), ("beta", {})):
        assert api.client.post("/v1/tenants", headers=api.headers,
                               json={"name": tenant, "quotas": quotas}).status_code == 201
    people = {"alice": ("acme", "developer"), "bob": ("acme", "invoker"), "carol": ("acme", "admin"),
              "eve": ("beta", "developer")}
    headers = {}
    for name, (tenant, role) in people.items():
        resp = api.client.post("/v1/users", headers=api.headers,
                               json={"name": name, "tenant": tenant, "role": role})
        assert resp.status_code == 201, resp.text
        headers[name] = bearer(_token(api, user=name, name=f"{name}'s laptop"))
    return headers


def test_whoami_and_the_admin_is_the_default_tenants(api: Api, org: Org) -> None:
    me = api.client.get("/v1/whoami", headers=api.headers).json()
    assert (me["user"], me["tenant"], me["role"], me["cluster_admin"]) == ("admin", "default", "admin", True)
    alice = api.client.get("/v1/whoami", headers=org["alice"]).json()
    assert (alice["user"], alice["tenant"], alice["cluster_admin"]) == ("alice", "acme", False)


def test_functions_are_named_within_tenants(api: Api, org: Org) -> None:
    resp = deploy(api, "resize", org["alice"])
    assert resp.status_code == 201, resp.text
    assert (resp.json()["name"], resp.json()["tenant"]) == ("resize", "acme")
    assert resp.json()["url"].endswith("/v1/functions/acme/resize/invoke")
    assert deploy(api, "resize", org["eve"]).json()["tenant"] == "beta"  # the same name, another tenant
    assert deploy(api, "beta/thumb", org["eve"]).status_code == 201
    mine = {f["name"] for f in api.client.get("/v1/functions", headers=org["alice"]).json()}
    assert mine == {"resize"}
    theirs = api.client.get("/v1/functions", headers=org["eve"]).json()
    assert {(f["tenant"], f["name"]) for f in theirs} == {("beta", "resize"), ("beta", "thumb")}
    every = api.client.get("/v1/functions?tenant=*", headers=api.headers).json()
    assert {("acme", "resize"), ("beta", "resize")} <= {(f["tenant"], f["name"]) for f in every}
    got = api.client.get("/v1/functions/acme/resize", headers=org["bob"])  # bob is of acme
    assert got.status_code == 200 and got.json()["config"]["name"] == "resize"
    assert got.json()["config"]["env"] == {}


def test_another_tenants_function_is_forbidden_whether_or_not_it_exists(api: Api, org: Org) -> None:
    assert deploy(api, "resize", org["alice"]).status_code == 201
    for path in ("/v1/functions/acme/resize", "/v1/functions/acme/ghost"):
        err = error(api.client.get(path, headers=org["eve"]), 403, "Forbidden")
        assert "eve" in err["message"]
        error(api.client.get(path + "/logs", headers=org["eve"]), 403, "Forbidden")
        error(api.client.delete(path, headers=org["eve"]), 403, "Forbidden")
        err = error(api.client.post(path + "/invoke", headers=org["eve"], json={}), 403, "Forbidden")
        assert "'invoke'" in err["message"] and "acme/" in err["message"] and err["missing"] == "invoke"
    error(deploy(api, "acme/evil", org["eve"]), 403, "Forbidden")
    # listing another tenant shows nothing of it:
    assert api.client.get("/v1/functions?tenant=acme", headers=org["eve"]).json() == []


def test_roles_and_grants(api: Api, org: Org) -> None:
    assert deploy(api, "alpha", org["alice"]).status_code == 201
    assert deploy(api, "beta-fn", org["alice"]).status_code == 201
    err = error(api.client.post("/v1/functions/alpha/invoke", headers=org["bob"], json={}), 403, "Forbidden")
    assert "'invoke'" in err["message"] and "acme/alpha" in err["message"]
    error(deploy(api, "alpha", org["bob"]), 403, "Forbidden")  # an invoker does not deploy
    error(api.client.post("/v1/grants", headers=org["alice"],  # a developer does not grant
                          json=grant("bob", "invoke", "alpha")), 403, "Forbidden")
    resp = api.client.post("/v1/grants", headers=org["carol"],
                           json={"user": "bob", "permission": "invoke", "function": "alpha"})
    assert resp.status_code == 201 and resp.json()["function"] == "acme/alpha"
    # the grant opens alpha (the call then fails for want of a node, not of a permission) and nothing else
    assert api.client.post("/v1/functions/alpha/invoke", headers=org["bob"], json={}).status_code == 503
    error(api.client.post("/v1/functions/beta-fn/invoke", headers=org["bob"], json={}), 403, "Forbidden")
    error(api.client.get("/v1/functions/alpha/logs", headers=org["bob"]), 403, "Forbidden")
    # a grant across tenants: eve of beta may invoke acme's alpha, and now sees it
    assert api.client.post("/v1/grants", headers=org["carol"],
                           json=grant("eve", "invoke", "acme/alpha")).status_code == 201
    assert api.client.post("/v1/functions/acme/alpha/invoke", headers=org["eve"], json={}).status_code == 503
    assert api.client.get("/v1/functions/acme/alpha", headers=org["eve"]).status_code == 200
    error(api.client.get("/v1/functions/acme/beta-fn", headers=org["eve"]), 403, "Forbidden")
    listed = api.client.get("/v1/grants?tenant=acme", headers=org["carol"]).json()
    assert {(g["user"], g["function"]) for g in listed} >= {("bob", "acme/alpha"), ("eve", "acme/alpha")}
    assert api.client.post("/v1/grants/revoke", headers=org["carol"],
                           json=grant("bob", "invoke", "alpha")).status_code == 204
    error(api.client.post("/v1/functions/alpha/invoke", headers=org["bob"], json={}), 403, "Forbidden")
    error(api.client.post("/v1/grants/revoke", headers=org["carol"],
                          json={"user": "bob", "permission": "invoke", "function": "alpha"}), 404, "NotFound")


def test_account_management_is_for_admins(api: Api, org: Org) -> None:
    # a tenant admin is no cluster admin
    error(api.client.get("/v1/nodes", headers=org["carol"]), 403, "Forbidden")
    error(api.client.get("/v1/events", headers=org["alice"]), 403, "Forbidden")
    error(api.client.post("/v1/tenants", headers=org["carol"], json={"name": "mine"}), 403, "Forbidden")
    error(api.client.post("/v1/users", headers=org["alice"], json={"name": "mallory", "role": "admin"}),
          403, "Forbidden")
    error(api.client.post("/v1/users", headers=org["carol"], json={"name": "mallory", "tenant": "beta"}),
          403, "Forbidden")  # not in another tenant
    resp = api.client.post("/v1/users", headers=org["carol"], json={"name": "dave", "role": "invoker"})
    assert resp.status_code == 201 and resp.json()["tenant"] == "acme"
    error(api.client.post("/v1/users", headers=org["carol"], json={"name": "dave"}), 409, "Conflict")
    error(api.client.post("/v1/users", headers=api.headers, json={"name": "x", "tenant": "nope"}),
          404, "NotFound")
    assert {u["name"] for u in api.client.get("/v1/users", headers=org["carol"]).json()} >= {"alice", "dave"}
    error(api.client.get("/v1/users?tenant=beta", headers=org["carol"]), 403, "Forbidden")
    error(api.client.delete("/v1/users/eve", headers=org["carol"]), 403, "Forbidden")
    error(api.client.delete("/v1/users/carol", headers=org["carol"]), 403, "Forbidden")  # never oneself
    assert api.client.delete("/v1/users/dave", headers=org["carol"]).status_code == 204
    tenant = api.client.get("/v1/tenants/acme", headers=org["carol"]).json()
    assert tenant["quotas"] == {"functions": 3}
    error(api.client.patch("/v1/tenants/acme", headers=org["carol"], json={"quotas": {"functions": 99}}),
          403, "Forbidden")  # a tenant does not raise its own quotas
    error(api.client.get("/v1/tenants/beta", headers=org["carol"]), 403, "Forbidden")
    error(api.client.post("/v1/tenants", headers=api.headers, json={"name": "Bad Name"}),
          422, "InvalidRequest")


def test_the_function_quota_refuses_a_deploy_before_anything_is_written(api: Api, org: Org) -> None:
    have = {f["name"] for f in api.client.get("/v1/functions", headers=org["alice"]).json()}
    for i in range(3 - len(have)):
        assert deploy(api, f"q{i}", org["alice"]).status_code == 201
    err = error(deploy(api, "one-too-many", org["alice"]), 403, "QuotaExceeded")
    assert err["quota"] == "functions" and "3" in err["message"]
    error(api.client.get("/v1/functions/one-too-many", headers=org["alice"]), 404, "FunctionNotFound")
    existing = next(iter(have or {"q0"}))
    assert deploy(api, existing, org["alice"]).status_code == 201  # a new version is no new function
    assert api.client.patch("/v1/tenants/acme", headers=api.headers,
                            json={"quotas": {"functions": None, "memory_mib": 512}}).status_code == 200
    err = error(deploy(api, "big", org["alice"], memory_mb=1024), 403, "QuotaExceeded")
    assert err["quota"] == "memory_mib"
    assert deploy(api, "big", org["alice"], memory_mb=512).status_code == 201


def test_reserved_and_bad_names(api: Api, org: Org) -> None:
    error(deploy(api, "logs", org["alice"]), 422, "InvalidConfig")
    error(api.client.get("/v1/functions/a/b/c", headers=org["alice"]), 422, "InvalidConfig")
    error(api.client.post("/v1/tokens", headers=org["alice"], json={"scopes": ["everything"]}), 422,
          "InvalidConfig")
    error(api.client.post("/v1/grants", headers=org["carol"],
                          json=grant("bob", "fly", "alpha")), 422, "InvalidRequest")


def test_tokens_expire_are_revoked_and_rotated(api: Api, org: Org,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    auth = api.platform.auth
    short = bearer(_token(api, org["alice"], expires_in_s=60))
    assert api.client.get("/v1/whoami", headers=short).status_code == 200
    later = time.time() + 61
    monkeypatch.setattr(auth, "wall", lambda: later)
    err = error(api.client.get("/v1/whoami", headers=short), 401, "Unauthorized")
    assert "expired" in err["message"]
    error(api.client.post("/v1/functions/resize/invoke", headers=short, json={}), 401, "Unauthorized")
    monkeypatch.undo()

    resp = api.client.post("/v1/tokens", headers=org["alice"], json={"name": "ci"})
    secret, token_id = bearer(resp.json()["token"]), resp.json()["id"]
    listed = api.client.get("/v1/tokens", headers=org["alice"]).json()
    assert {t["id"]: t["state"] for t in listed}[token_id] == "active"
    assert all("token" not in t and "hash" not in str(t) for t in listed)
    assert api.client.post("/v1/functions/resize/invoke", headers=secret, json={}).status_code != 401
    error(api.client.delete(f"/v1/tokens/{token_id}", headers=org["eve"]), 403, "Forbidden")
    assert api.client.delete(f"/v1/tokens/{token_id}", headers=org["alice"]).json()["state"] == "revoked"
    error(api.client.get("/v1/whoami", headers=secret), 401, "Unauthorized")  # at once, here
    error(api.client.post("/v1/functions/resize/invoke", headers=secret, json={}), 401, "Unauthorized")

    resp = api.client.post("/v1/tokens", headers=org["alice"], json={"name": "deploy bot"})
    old, token_id = bearer(resp.json()["token"]), resp.json()["id"]
    resp = api.client.post(f"/v1/tokens/{token_id}/rotate", headers=org["alice"], json={"overlap_s": 30})
    assert resp.status_code == 201, resp.text
    new = bearer(resp.json()["token"])
    assert resp.json()["name"] == "deploy bot" and resp.json()["id"] != token_id
    assert api.client.get("/v1/whoami", headers=old).status_code == 200  # during the overlap
    assert api.client.get("/v1/whoami", headers=new).status_code == 200
    later = time.time() + 31
    monkeypatch.setattr(auth, "wall", lambda: later)
    error(api.client.get("/v1/whoami", headers=old), 401, "Unauthorized")
    assert api.client.get("/v1/whoami", headers=new).status_code == 200


def test_a_scoped_token_does_only_what_its_scopes_say(api: Api, org: Org) -> None:
    assert deploy(api, "resize", org["alice"]).status_code == 201
    scoped = bearer(_token(api, org["alice"], scopes=["invoke:acme/resize"]))
    assert api.client.post("/v1/functions/resize/invoke", headers=scoped, json={}).status_code == 503
    err = error(deploy(api, "resize", scoped), 403, "Forbidden")
    assert "scope" in err["message"]
    error(api.client.get("/v1/functions/resize/logs", headers=scoped), 403, "Forbidden")
    error(api.client.post("/v1/tokens", headers=scoped, json={}), 403, "Forbidden")  # no new tokens from it
    # a scope beyond what the user may do gives nothing
    wide = bearer(_token(api, org["bob"], scopes=["deploy:acme/*"]))
    error(deploy(api, "resize", wide), 403, "Forbidden")


# -- revocation reaches every control plane within a second -------------------------------------------------
def _two_control_planes(tmp_path: Path, db_url: str) -> Iterator[tuple[Api, Any, Any]]:
    """Two control planes on one database: the first as an `Api`, the second as a test client
    and its `Platform`."""
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    for a in serve(tmp_path / "a", db=db_url, secret_key=key, lease_ttl_s=2):
        b_dir = tmp_path / "b"
        from fastapi.testclient import TestClient

        from control_plane.api import build_asgi
        from control_plane.core import Settings
        from control_plane.platform import Platform

        settings = Settings(data_dir=b_dir, db=db_url, secret_key=key, provider="local", min_nodes=0,
                            max_nodes=0, lease_ttl_s=2, port=a.platform.settings.port + 1)
        platform = Platform(settings, use_provider=False)
        asgi = build_asgi(platform)
        with TestClient(_FastPathOrFastAPI(asgi, asgi.app),  # type: ignore[arg-type,attr-defined]
                        base_url=settings.url) as b:
            yield a, b, platform


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite'}"
    return str(request.getfixturevalue("postgres_db"))


def test_a_revoked_token_is_refused_by_another_control_plane_within_a_second(tmp_path: Path,
                                                                             db_url: str) -> None:
    for a, b, _ in _two_control_planes(tmp_path, db_url):
        resp = a.client.post("/v1/tokens", headers=a.headers, json={"name": "shared"})
        secret, token_id = bearer(resp.json()["token"]), resp.json()["id"]
        for _ in range(3):  # b caches it (and the fast path answers from its cache)
            assert b.get("/v1/whoami", headers=secret).status_code == 200
            assert b.post("/v1/functions/ghost/invoke", headers=secret, json={}).status_code == 404
        assert a.client.delete(f"/v1/tokens/{token_id}", headers=a.headers).status_code == 200
        revoked = time.monotonic()
        while b.post("/v1/functions/ghost/invoke", headers=secret, json={}).status_code != 401:
            assert time.monotonic() - revoked < 1.0, "another control plane still takes a revoked token"
            time.sleep(0.02)
        assert time.monotonic() - revoked < 1.0
        assert b.get("/v1/whoami", headers=secret).status_code == 401
        # and a grant made on one control plane opens a call on the other within the same second
        assert a.client.post("/v1/tenants", headers=a.headers, json={"name": "acme"}).status_code == 201
        assert a.client.post("/v1/users", headers=a.headers,
                             json={"name": "bob", "tenant": "acme", "role": "invoker"}).status_code == 201
        bob = bearer(_token(a, user="bob"))
        assert b.post("/v1/functions/acme/alpha/invoke", headers=bob, json={}).status_code == 403
        assert a.client.post("/v1/grants", headers=a.headers,
                             json=grant("bob", "invoke", "acme/alpha")).status_code == 201
        granted = time.monotonic()
        while b.post("/v1/functions/acme/alpha/invoke", headers=bob, json={}).status_code == 403:
            assert time.monotonic() - granted < 1.0
            time.sleep(0.02)
    assert auth_module.FRESH_S + auth_module.POLL_S <= 1.0


def test_a_tenants_quotas_reach_another_control_plane_within_a_second(tmp_path: Path, db_url: str) -> None:
    """Made and changed on one control plane, with no other identity change: the other one's
    governor has them within a poll."""
    for a, _, b_platform in _two_control_planes(tmp_path, db_url):
        other = b_platform.governor
        quotas = {"rps": 5, "mail_per_min": 2}
        assert a.client.post("/v1/tenants", headers=a.headers,
                             json={"name": "quoted", "quotas": quotas}).status_code == 201
        made = time.monotonic()
        while "quoted" not in other.limits:
            assert time.monotonic() - made < 1.0, "another control plane never learned the tenant's quotas"
            time.sleep(0.02)
        assert (other.limits["quoted"].rps, other.limits["quoted"].mail_per_min) == (5, 2)
        assert a.client.patch("/v1/tenants/quoted", headers=a.headers,
                              json={"quotas": {"mail_per_min": 7}}).status_code == 200
        changed = time.monotonic()
        while other.limits["quoted"].mail_per_min != 7:
            assert time.monotonic() - changed < 1.0, "another control plane kept the old quota"
            time.sleep(0.02)
