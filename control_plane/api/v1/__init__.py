"""The public REST API, version 1."""

from fastapi import APIRouter

from control_plane.api.v1 import fleet, functions

router = APIRouter()
router.include_router(functions.router)
router.include_router(functions.builds)
router.include_router(fleet.router)

__all__ = ["router"]
