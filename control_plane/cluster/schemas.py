"""The control planes as the API shows them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ControlPlanePublic(BaseModel):
    """A live control plane of the cluster."""

    id: str
    url: str
    leader: bool = Field(description="holds the leader lease: runs the fleet loop")
    generation: int | None = Field(description="the lease's generation, when it leads")
    last_seen_s: float
    self: bool = Field(description="the control plane that answered")
