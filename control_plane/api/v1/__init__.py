"""The public REST API, version 1."""

from fastapi import APIRouter

from control_plane.api.v1 import accounts, bus, fleet, functions, schedules, usage, workflows

router = APIRouter()
router.include_router(functions.router)
router.include_router(functions.builds)
router.include_router(fleet.router)
router.include_router(accounts.router)
router.include_router(usage.router)
router.include_router(schedules.router)
router.include_router(bus.router)
router.include_router(workflows.router)

__all__ = ["router"]
