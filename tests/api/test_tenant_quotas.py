"""Tenants' runtime quotas on the invocation path, through the fast path and FastAPI's route alike:
the rate (a token bucket) and the budget throttle answer 429 with the quota's name and Retry-After
before anything runs; quota changes and budget throttles reach the path within a poll."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import OK, VIA_FASTAPI, Api, error
from helpers import make_zip


def _developer(api: Api, tenant: str, **settings: Any) -> dict[str, str]:
    resp = api.client.post("/v1/tenants", headers=api.headers, json={"name": tenant, **settings})
    assert resp.status_code == 201, resp.text
    resp = api.client.post("/v1/users", headers=api.headers,
                           json={"name": f"dev-{tenant}", "tenant": tenant, "role": "developer"})
    assert resp.status_code == 201, resp.text
    token = api.client.post("/v1/tokens", headers=api.headers, json={"user": f"dev-{tenant}"}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    import json

    resp = api.client.post("/v1/functions", headers=headers, data={"config": json.dumps({"name": "f"})},
                           files={"code": ("code.zip", make_zip(OK), "application/zip")})
    assert resp.status_code == 201, resp.text
    return headers


def _until(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()) is not None:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("via", ["fast path", "fastapi"])
def test_over_the_rate_quota_is_429_with_the_quota_and_retry_after(api: Api, via: str) -> None:
    tenant = "slow-" + via.replace(" ", "")
    headers = _developer(api, tenant, quotas={"rps": 0.2, "burst": 1})
    extra = VIA_FASTAPI if via == "fastapi" else {}
    url = f"/v1/functions/{tenant}/f/invoke"

    def refused() -> Any:
        resp = api.client.post(url, headers={**headers, **extra}, content=b"{}")
        return resp if resp.status_code == 429 else None

    first = api.client.post(url, headers={**headers, **extra}, content=b"{}")
    error(first, 503, "NoCapacity")  # admitted (no node here): the bucket's one call
    resp = _until(refused)  # the quotas reach the path within a poll of the identity generation
    err = error(resp, 429, "QuotaExceeded")
    assert err["quota"] == "rps" and "0.2 invocations per second" in err["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 5
    # Other tenants are not bound by it.
    error(api.client.post("/v1/functions/f/invoke", headers={**api.headers, **extra}, content=b"{}"),
          404, "FunctionNotFound")


def test_a_raised_quota_applies_within_a_poll_and_a_budget_throttle_refuses_calls(api: Api) -> None:
    headers = _developer(api, "thrifty", quotas={"rps": 0.01, "burst": 1})
    url = "/v1/functions/thrifty/f/invoke"
    api.client.post(url, headers=headers, content=b"{}")
    _until(lambda: True if api.client.post(url, headers=headers, content=b"{}").status_code == 429 else None)
    resp = api.client.patch("/v1/tenants/thrifty", headers=api.headers, json={"quotas": {"rps": None}})
    assert resp.status_code == 200, resp.text
    _until(lambda: True if api.client.post(url, headers=headers, content=b"{}").status_code == 503 else None)

    # Over its budget (as the leader's budget check marks it): every call is refused, before it runs.
    assert api.platform.store.set_over_budget("thrifty", "2026-12")
    api.platform.auth.changed()
    resp = _until(lambda: r if (r := api.client.post(url, headers=headers, content=b"{}")).status_code == 429
                  else None)
    err = error(resp, 429, "BudgetExceeded")
    assert "budget for 2026-12" in err["message"] and int(resp.headers["Retry-After"]) >= 1
    # Only warned: served again (here: no node, so 503), though the fleet grows no more for it.
    assert api.client.patch("/v1/tenants/thrifty", headers=api.headers,
                            json={"budget_action": "warn"}).status_code == 200
    _until(lambda: True if api.client.post(url, headers=headers, content=b"{}").status_code == 503 else None)
    assert api.platform.governor.blocked("thrifty")
