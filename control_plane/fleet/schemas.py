"""The fleet as the API shows it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ResourcesPublic(BaseModel):
    """CPU in millicores and memory in MiB."""

    cpu_millis: int
    memory_mib: int


class NodePublic(BaseModel):
    """A node with its state, capacity and what is allocated on it."""

    id: str
    state: str = Field(description="ready, not_ready, lost, draining or provisioning")
    provider: str
    node_type: str
    url: str
    capacity: ResourcesPublic
    allocated: ResourcesPublic
    instances: int = Field(description="instances its agent last reported")
    utilization: float = Field(description="the largest share of capacity allocated, 0 to 1")
    age_s: float = Field(description="seconds in its current state")
    last_heartbeat_s: float = Field(description="seconds since its agent last reported")
