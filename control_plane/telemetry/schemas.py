"""Events and invocation records as the API shows them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EventPublic(BaseModel):
    """A scaling decision or fleet observation, with its reason."""

    model_config = ConfigDict(from_attributes=True)

    at: float
    kind: str
    reason: str
    node_id: str = ""


class InvocationPublic(BaseModel):
    """One invocation's outcome, duration and captured stdout/stderr."""

    model_config = ConfigDict(from_attributes=True)

    function: str
    version: int
    request_id: str
    started_at: float
    duration_ms: float
    outcome: str
    cold_start: bool
    logs: str
