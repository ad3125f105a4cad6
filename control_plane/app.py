"""The ASGI application: FastAPI for the REST API, plus a raw ASGI fast path for invocations.

`POST /v1/functions/{name}/invoke` is answered before FastAPI routing: no dependency injection, no
request model, no response model — the body goes to the gateway as bytes and the result comes back
as bytes. FastAPI's own route for it stays, for the OpenAPI docs and identical behaviour.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.api import router
from control_plane.errors import CumulusError, PayloadTooLarge
from control_plane.platform import Platform
from control_plane.settings import MAX_PAYLOAD_BYTES

log = logging.getLogger("cumulus.api")

PREFIX = "/v1/functions/"
SUFFIX = "/invoke"


def _error_response(err: CumulusError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def create_app(plat: Platform) -> FastAPI:
    """The FastAPI app serving `plat`, with its lifecycle tied to the app's."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await plat.start()
        try:
            yield
        finally:
            await plat.stop()

    app = FastAPI(title="Cumulus", version="0.1.0", lifespan=lifespan,
                  description="Self-hosted serverless functions. Every route but /healthz needs "
                              "`Authorization: Bearer <token>`.")
    app.state.platform = plat
    app.include_router(router)

    @app.exception_handler(CumulusError)
    async def cumulus_error(request: Request, exc: CumulusError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(str(x) for x in d['loc'])}: {d['msg']}" for d in details)
        return JSONResponse({"error": {"type": "InvalidRequest", "message": message, "details": details}},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return JSONResponse({"error": {"type": kind, "message": str(exc.detail)}},
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("event=internal_error path=%s", request.url.path)
        return JSONResponse({"error": {"type": "InternalError", "message": repr(exc)}}, status_code=500)

    return app


class InvokeFastPath:
    """ASGI middleware answering invocations directly from the gateway."""

    def __init__(self, app: ASGIApp, plat: Platform) -> None:
        self.app = app
        self.plat = plat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(PREFIX) and path.endswith(SUFFIX):
                name = path[len(PREFIX):-len(SUFFIX)]
                if name and "/" not in name:
                    await self._invoke(name, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _invoke(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        status, headers, body = 500, [(b"content-type", b"application/json")], b""
        try:
            auth = None
            length = 0
            for key, value in scope["headers"]:
                if key == b"authorization":
                    auth = value
                elif key == b"content-length":
                    length = int(value)
            await self.plat.auth.user(auth)
            if length > MAX_PAYLOAD_BYTES:
                raise PayloadTooLarge(f"the event is over the limit of {MAX_PAYLOAD_BYTES} bytes")
            event = await _read_body(receive)
            result = await self.plat.gateway.invoke(name, event)
            status, body = result.status, result.body
            headers = [(k.lower().encode(), v.encode()) for k, v in result.headers.items()]
        except CumulusError as err:
            status, body = err.status, json.dumps(err.body()).encode()
        except Exception as exc:  # the platform answers, whatever happened
            log.exception("event=invoke_failed function=%s", name)
            body = json.dumps({"error": {"type": "InternalError", "message": repr(exc)}}).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(f"the event is over the limit of {MAX_PAYLOAD_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def build_asgi(plat: Platform) -> ASGIApp:
    """The full ASGI app: fast path in front of FastAPI."""
    return InvokeFastPath(create_app(plat), plat)
