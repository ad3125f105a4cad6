"""The ASGI application: FastAPI for the REST API, with the invocation fast path in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp

from control_plane.api import internal, v1
from control_plane.api.deps import Services
from control_plane.api.errors import install_error_handlers
from control_plane.api.guards import BodyGuard
from control_plane.api.openapi import install_openapi
from control_plane.gateway import InvokeFastPath

meta = APIRouter(tags=["meta"])


@meta.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: no authentication."""
    return {"status": "ok"}


def create_app(services: Services, *, version: str = "0.1.0") -> FastAPI:
    """The FastAPI app serving `services`, whose start and stop follow the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(title="Cumulus", version=version, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Self-hosted serverless functions. Every route but /healthz needs "
                              "`Authorization: Bearer <token>`. Every error is "
                              '`{"error": {"type": ..., "message": ...}}`.')
    app.state.services = services
    app.include_router(meta)
    app.include_router(v1.router)
    app.include_router(internal.router)
    install_error_handlers(app)
    install_openapi(app)
    return app


def build_asgi(services: Services) -> ASGIApp:
    """The full ASGI app: the invocation fast path in front of the body guard in front of FastAPI."""
    guarded = BodyGuard(create_app(services), services.auth.user, services.auth.node)
    return InvokeFastPath(guarded, services.invoke)
