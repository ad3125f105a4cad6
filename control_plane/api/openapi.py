"""The OpenAPI document, made to tell the truth: every error is `{"error": {"type", "message"}}`
(FastAPI's own validation shape replaced by ours), each route lists the statuses it can answer, the
bearer scheme is declared (the docs page's "Authorize" works), and the docs page's assets come from
an installed package (swagger-ui-bundle), not from a CDN."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`: the admin token "
                                                  "`cumulus up` writes to <data dir>/admin.token")


class ErrorDetail(BaseModel):
    """What went wrong: a stable type and a readable message (some types carry more, e.g. a
    handler's `traceback` or a bad config's `details`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["FunctionNotFound"])
    message: str = Field(examples=["no function named 'ghost'"])


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail


WHY = {
    400: "the code or the event is invalid",
    401: "no or wrong bearer token",
    403: "the caller may not do this",
    404: "no such function",
    409: "a conflicting change happened at the same time",
    413: "the body is over its limit",
    422: "invalid settings, parameters or body",
    429: "every instance stayed busy (Throttled)",
    500: "the function failed (HandlerError, FunctionInitError, ResultNotSerializable) or, "
         "type InternalError, the platform did",
    502: "the function's instance died, ran out of memory or answered too much; or its node failed",
    503: "no node has room (NoCapacity), an instance could not start, or (deploys with "
         "requirements) the build sandbox has no engine (BuildUnavailable)",
    504: "the function ran past its timeout",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for these error statuses (500 is added: any route can fail)."""
    return {status: {"model": ErrorBody, "description": WHY[status]}
            for status in sorted({*statuses, 500})}


def install_openapi(app: FastAPI) -> None:
    """Our document at /openapi.json and its docs page at /docs, with local assets."""
    import swagger_ui_bundle

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            app.openapi_schema = _our_errors(doc)
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def _our_errors(doc: dict[str, Any]) -> dict[str, Any]:
    """Replace FastAPI's validation error shape (answered by our handler in ours) everywhere."""
    ours = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["content"] = {"application/json": {"schema": ours}}
                answer["description"] = WHY[422]
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc
