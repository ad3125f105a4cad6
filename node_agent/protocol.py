"""Wire messages between the control plane and node agents (JSON over HTTP).

The invocation itself does not use these models: it is proxied as raw bytes, with its outcome in
headers (see `OUTCOME_HEADER`), so no hop parses or re-encodes a payload.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

OUTCOME_HEADER = "X-Cumulus-Outcome"
LOG_BYTES_HEADER = "X-Cumulus-Log-Bytes"
DURATION_HEADER = "X-Cumulus-Duration-Us"
TIMEOUT_HEADER = "X-Cumulus-Timeout-Ms"
REQUEST_ID_HEADER = "X-Request-Id"
INSTANCE_GONE_HEADER = "X-Cumulus-Instance-Gone"

# Outcomes of one invocation. The shim reports the first five; the agent adds the rest.
OK = "ok"
HANDLER_ERROR = "HandlerError"
NOT_SERIALIZABLE = "ResultNotSerializable"
INVALID_EVENT = "InvalidEvent"
INIT_ERROR = "FunctionInitError"
TIMEOUT = "FunctionTimeout"
OUT_OF_MEMORY = "FunctionOutOfMemory"
CRASHED = "FunctionCrashed"
INSTANCE_NOT_FOUND = "InstanceNotFound"


class InstanceStart(BaseModel):
    """Ask an agent to run one instance of a function version."""

    function: str
    version: int
    handler: str = "main.handler"
    code_digest: str
    code_url: str  # a path on the control plane (the agent knows how it reaches it), or a full URL
    memory_mib: int
    cpu_millis: int
    timeout_s: float
    concurrency: int = 1
    env: dict[str, str] = Field(default_factory=dict)
    owner: str = ""  # the control plane that started it (HA: each manages its own instances)


class InstanceReport(BaseModel):
    """An instance as its node sees it."""

    instance_id: str
    function: str
    version: int
    state: str
    memory_mib: int = 0
    cpu_millis: int = 0
    concurrency: int = 1
    in_flight: int = 0
    start_ms: float = 0.0
    owner: str = ""


class Heartbeat(BaseModel):
    """What an agent tells the control plane every few seconds."""

    node_id: str
    url: str
    provider: str = "local"
    node_type: str = "local"
    cpu_millis: int
    memory_mib: int
    instances: list[InstanceReport] = Field(default_factory=list)
    started_at: float = 0.0
