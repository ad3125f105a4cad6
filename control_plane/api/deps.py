"""What the routes depend on, as FastAPI dependencies (annotated aliases, overridable in tests).

`Services` is what the composition root (`control_plane.platform.Platform`) provides; the routes
reach it through `request.app.state`, never by importing the platform (it stands above this room).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Protocol

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from control_plane.api.openapi import bearer
from control_plane.cluster import Leadership
from control_plane.core import Clock, Settings
from control_plane.eventbus import EventBus
from control_plane.fleet import Fleet, Joins
from control_plane.functions import FunctionService
from control_plane.gateway import Gateway, InvokeEndpoint
from control_plane.identity import (
    CLUSTER,
    Accounts,
    Admin,
    Authenticator,
    NodeIdentity,
    NodeKeys,
    Principal,
    authorize,
)
from control_plane.jobs import AsyncCalls
from control_plane.metering import Metering
from control_plane.schedules import Schedules
from control_plane.services import Mailer
from control_plane.store import Store
from control_plane.telemetry import Telemetry
from control_plane.workflows import Workflows


class Services(Protocol):
    """The parts of one control plane the API serves."""

    settings: Settings
    clock: Clock
    id: str
    store: Store
    functions: FunctionService
    gateway: Gateway
    invoke: InvokeEndpoint
    auth: Authenticator
    accounts: Accounts
    fleet: Fleet
    joins: Joins
    leadership: Leadership
    telemetry: Telemetry
    metering: Metering
    async_calls: AsyncCalls
    schedules: Schedules
    bus: EventBus
    workflows: Workflows
    mailer: Mailer
    keys: NodeKeys

    def control_plane_urls(self) -> list[str]:
        """Where the cluster's live control planes are."""
        ...

    def runtime_rootfs(self, runtime: str) -> Path:
        """A runtime image's rootfs tarball, for nodes whose engine lacks it."""
        ...

    async def start(self) -> None:
        """Load state and start the loops (the app's startup)."""
        ...

    async def stop(self) -> None:
        """Stop the loops and close connections (the app's shutdown)."""
        ...


def services(request: Request) -> Services:
    """The control plane this app serves."""
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services)]


def _header(request: Request) -> bytes | None:
    return request.headers.get("authorization", "").encode() or None


async def current_user(request: Request, svc: ServicesDep,
                       _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
    """The authenticated caller (401 otherwise); declares the bearer scheme in the docs."""
    return await svc.auth.user(_header(request))


async def node_agent(request: Request, svc: ServicesDep) -> NodeIdentity:
    """The joined node calling an internal route with its own credential (401 otherwise)."""
    return await svc.auth.node(_header(request))


CurrentUser = Annotated[Principal, Depends(current_user)]


async def cluster_admin(user: CurrentUser) -> Principal:
    """The caller, if a cluster admin (403 otherwise)."""
    authorize(user, Admin.CLUSTER, CLUSTER)
    return user


ClusterAdmin = Annotated[Principal, Depends(cluster_admin)]
CurrentNode = Annotated[NodeIdentity, Depends(node_agent)]
NodeAgent = Depends(node_agent)


def function_url(svc: Services, name: str) -> str:
    """The invocation endpoint of a function."""
    return f"{svc.settings.url}/v1/functions/{name}/invoke"
