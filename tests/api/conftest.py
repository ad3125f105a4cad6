"""The API in-process: the full ASGI app (fast path and FastAPI) of a real `Platform` on a real
SQLite database, through Starlette's test client, one platform per test module. No node and no
Docker: what the API decides before anything runs is tested here, fast."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import make_zip
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.api import build_asgi
from control_plane.core import Settings
from control_plane.gateway import InvokeFastPath
from control_plane.platform import Platform

OK = {"main.py": "def handler(event, context):\n    return {'ok': True}\n"}


@dataclass
class Api:
    """A platform served in-process, with its admin token."""

    platform: Platform
    app: FastAPI  # behind the fast path; its dependency_overrides apply to FastAPI's routes only
    # (the fast path authenticates invocations itself)
    client: TestClient
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Admin auth header."""
        return {"Authorization": f"Bearer {self.token}"}

    def deploy(self, name: str, files: dict[str, str | bytes] | None = None, *, config: Any = None,
               **settings: Any) -> Any:
        """POST /v1/functions (the raw response); `config` replaces the JSON config entirely."""
        import json

        body = config if isinstance(config, str) else json.dumps(config or {"name": name, **settings})
        return self.client.post("/v1/functions", headers=self.headers,
                                files={"code": ("code.zip", make_zip(files or OK), "application/zip")},
                                data={"config": body})


VIA_FASTAPI = {"X-Test-Via": "fastapi"}
"""Headers that send a request past the fast path, straight to FastAPI's routes."""


class _FastPathOrFastAPI:
    """The full app, or all but its fast path for requests carrying `VIA_FASTAPI` (one event loop
    for both)."""

    def __init__(self, asgi: InvokeFastPath, app: ASGIApp) -> None:
        self.asgi = asgi
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"x-test-via", b"fastapi") in scope["headers"]:
            await self.app(scope, receive, send)
        else:
            await self.asgi(scope, receive, send)


def serve(data_dir: Path, **overrides: Any) -> Iterator[Api]:
    """A platform on a fresh SQLite database in `data_dir`, with no provider and no node."""
    settings = Settings(**{"data_dir": data_dir, "provider": "local", "min_nodes": 0, "max_nodes": 0,
                           "reconcile_interval_s": 0.2, "queue_timeout_s": 1, **overrides})
    platform = Platform(settings, use_provider=False)
    asgi = build_asgi(platform)
    assert isinstance(asgi, InvokeFastPath)
    guard = asgi.app  # the body guard, in front of FastAPI
    app = getattr(guard, "app", None)
    assert isinstance(app, FastAPI)
    with TestClient(_FastPathOrFastAPI(asgi, guard), base_url=settings.url) as client:
        yield Api(platform, app, client, platform.admin_token_path.read_text().strip())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One in-process platform shared by the tests of a module."""
    yield from serve(tmp_path_factory.mktemp("api"))


def error(resp: Any, status: int, kind: str) -> dict[str, Any]:
    """The error envelope of `resp`, asserting its status and type."""
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["type"] == kind, err
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]
