"""Every failure as `{"error": {"type", "message"}}` with its status: typed errors, bad requests,
unknown routes, and anything unexpected (500 `InternalError`, logged)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.core import CumulusError

log = logging.getLogger("cumulus.api")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(CumulusError)
    async def cumulus_error(request: Request, exc: CumulusError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

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
