"""Routes for node agents only."""

from control_plane.api.internal.agents import router

__all__ = ["router"]
