"""Authentication everywhere but /healthz, node-only internal routes, the private admin token file,
the OpenAPI docs, and one invoke implementation behind both the fast path and FastAPI's route."""

from __future__ import annotations

import pytest
from conftest import VIA_FASTAPI, Api, error


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
def test_auth_is_required_everywhere_but_healthz(api: Api, headers: dict[str, str]) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    for method, path in [("GET", "/v1/functions"), ("GET", "/v1/nodes"), ("POST", "/v1/functions/x/invoke"),
                         ("GET", "/v1/functions/x/logs"), ("DELETE", "/v1/functions/x"),
                         ("GET", "/v1/events"), ("GET", "/v1/control-planes"), ("GET", "/v1/functions/x")]:
        error(api.client.request(method, path, headers=headers), 401, "Unauthorized")


def test_node_routes_refuse_user_tokens(api: Api) -> None:
    error(api.client.post("/v1/internal/heartbeat", headers=api.headers, json={}), 401, "Unauthorized")
    error(api.client.get("/v1/internal/artifacts/abc", headers=api.headers), 401, "Unauthorized")


def test_admin_token_file_is_private(api: Api) -> None:
    assert api.platform.admin_token_path.stat().st_mode & 0o777 == 0o600


def test_openapi_docs_are_served_without_the_internal_routes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/v1/functions/{ref}/invoke" in paths and "/v1/nodes" in paths
    assert not [p for p in paths if "internal" in p or "agent" in p]
    assert api.client.get("/docs").status_code == 200


def test_unknown_routes_and_methods_are_typed(api: Api) -> None:
    error(api.client.get("/v1/nope", headers=api.headers), 404, "NotFound")
    error(api.client.put("/v1/functions", headers=api.headers), 405, "MethodNotAllowed")


def test_the_fastapi_route_and_the_fast_path_answer_alike(api: Api) -> None:
    """FastAPI's invoke route delegates to the fast path's implementation: same answers."""
    assert api.deploy("alike").status_code == 201
    for headers, body in [({}, b"{}"), (api.headers, b"{}"), (api.headers, b"x" * (7 * 1024 * 1024))]:
        for path in ("/v1/functions/alike/invoke", "/v1/functions/ghost/invoke"):
            fast = api.client.post(path, headers=headers, content=body)
            routed = api.client.post(path, headers={**headers, **VIA_FASTAPI}, content=body)
            assert (routed.status_code, routed.json()["error"]) == (fast.status_code, fast.json()["error"])
            assert routed.headers["content-type"] == fast.headers["content-type"] == "application/json"
            assert routed.headers["content-length"] == fast.headers["content-length"]
