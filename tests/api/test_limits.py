"""Every bad input is a typed 4xx before anything runs: events nested too deep, handler names too
long, unknown settings (named, with the closest known one), environments with NUL bytes or too
large, and deploy bodies that are unauthenticated or too large, refused before they are read."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import Api, error

from control_plane.api import build_asgi
from control_plane.api.guards import MAX_DEPLOY_BODY
from control_plane.gateway import MAX_EVENT_DEPTH


def _invoke(api: Api, name: str, body: bytes) -> Any:
    return api.client.post(f"/v1/functions/{name}/invoke", headers=api.headers, content=body)


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b"[" * 100_000,  # and not even JSON
    b'{"x":' * (MAX_EVENT_DEPTH + 1) + b"1" + b"}" * (MAX_EVENT_DEPTH + 1),  # objects too
])
def test_an_event_nested_too_deep_is_refused_at_the_gateway(api: Api, body: bytes) -> None:
    assert api.deploy("deep").status_code == 201
    err = error(_invoke(api, "deep", body), 400, "InvalidEvent")
    assert str(MAX_EVENT_DEPTH) in err["message"] or "not valid JSON" in err["message"]


def test_an_event_with_many_brackets_but_shallow_goes_through(api: Api) -> None:
    assert api.deploy("wide").status_code == 201
    wide = json.dumps([[i, {"k": [i]}] for i in range(5000)]).encode()
    assert wide.count(b"[") > MAX_EVENT_DEPTH
    error(_invoke(api, "wide", wide), 503, "NoCapacity")  # it reached the gateway's placement
    depth_at_limit = b"[" * MAX_EVENT_DEPTH + b"]" * MAX_EVENT_DEPTH
    error(_invoke(api, "wide", depth_at_limit), 503, "NoCapacity")


def test_a_long_handler_name_is_an_invalid_config(api: Api) -> None:
    config = {"name": "long", "handler": "a." * 5000 + "b"}
    err = error(api.deploy("long", config=config), 422, "InvalidConfig")
    assert "handler" in err["message"]


def test_an_unknown_setting_is_named_with_the_closest_known_one(api: Api) -> None:
    err = error(api.deploy("typo", config={"name": "typo", "memroy_mb": 512}), 422, "InvalidConfig")
    assert "'memroy_mb'" in err["message"] and "'memory_mb'" in err["message"]
    error(api.client.get("/v1/functions/typo", headers=api.headers), 404, "FunctionNotFound")


@pytest.mark.parametrize(("env", "said"), [
    ({"X": "a\x00b"}, "NUL"),
    ({"X": "v" * 300_000}, "limit is 32768"),
    ({"A" * 200: "1"}, "at most 128 characters"),
])
def test_a_bad_environment_is_refused_at_deploy(api: Api, env: dict[str, str], said: str) -> None:
    err = error(api.deploy("env", config={"name": "env", "env": env}), 422, "InvalidConfig")
    assert said in err["message"]


MULTIPART = b"multipart/form-data; boundary=x"
PART = (b'--x\r\nContent-Disposition: form-data; name="code"; filename="code.zip"\r\n'
        b"Content-Type: application/zip\r\n\r\n")


def _asgi_call(api: Api, headers: list[tuple[bytes, bytes]], chunks: int, chunk: bytes = b"",
               ) -> tuple[int, dict[str, Any], int]:
    """POST /v1/functions straight through the ASGI app: (status, body, chunks the app read)."""
    app = build_asgi(api.platform)
    scope = {"type": "http", "method": "POST", "path": "/v1/functions", "headers": headers,
             "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 80), "root_path": "",
             "http_version": "1.1", "client": ("127.0.0.1", 1)}
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        body = (PART if read == 1 else b"") + chunk
        return {"type": "http.request", "body": body, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), read


def test_an_unauthenticated_deploy_is_refused_before_its_body_is_read(api: Api) -> None:
    for auth in ([], [(b"authorization", b"Bearer wrong")]):
        status, body, read = _asgi_call(api, [(b"content-type", MULTIPART), *auth],
                                        chunks=10_000, chunk=b"x" * 65536)
        assert (status, body["error"]["type"], read) == (401, "Unauthorized", 0)


def test_a_deploy_over_the_limit_is_refused_by_its_length_or_while_it_streams(api: Api) -> None:
    auth = (b"authorization", f"Bearer {api.token}".encode())
    too_long = (b"content-length", str(MAX_DEPLOY_BODY + 1).encode())
    status, body, read = _asgi_call(api, [auth, too_long], chunks=10_000, chunk=b"x" * 65536)
    assert (status, body["error"]["type"], read) == (413, "PayloadTooLarge", 0)
    chunk = 1024 * 1024
    status, body, read = _asgi_call(api, [auth, (b"content-type", MULTIPART)], chunks=10_000,
                                    chunk=b"x" * chunk)
    assert (status, body["error"]["type"]) == (413, "PayloadTooLarge")
    assert read == (MAX_DEPLOY_BODY - len(PART)) // chunk + 1  # at the limit, not at the end of the stream
