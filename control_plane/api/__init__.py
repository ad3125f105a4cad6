"""The HTTP API: the FastAPI app, its dependencies and error handlers, and its routers: `v1`
(public) and `internal` (node agents). Later: `lambda`, `console`."""

from control_plane.api.app import build_asgi, create_app
from control_plane.api.deps import CurrentUser, Services, ServicesDep, current_user, node_agent, services

__all__ = ["CurrentUser", "Services", "ServicesDep", "build_asgi", "create_app", "current_user", "node_agent",
           "services"]
