"""Wire messages between the control plane and node agents (JSON over HTTP), and the invocation's
headers and outcomes.

The invocation itself does not use these models: it is proxied as raw bytes, with its outcome in
headers (see `OUTCOME_HEADER`), so no hop parses or re-encodes a payload. The shim's part of that
protocol is defined once in `node_agent.shim.cumulus_wire` (standard library only, mounted into
every function container); the agent forwards the shim's outcome headers to the control plane
unchanged and adds its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from node_agent.shim.cumulus_wire import (
    DURATION_HEADER,
    HANDLER_ERROR,
    INIT_ERROR,
    INVALID_EVENT,
    LOG_BYTES_HEADER,
    MAX_ANSWER_BYTES,
    MAX_RESULT_BYTES,
    NOT_SERIALIZABLE,
    OK,
    OUTCOME_HEADER,
    REQUEST_ID_HEADER,
    RESPONSE_TOO_LARGE,
    SHIM_OUTCOMES,
)

__all__ = [
    "AGENT_OUTCOMES",
    "COLD_START_HEADER",
    "CRASHED",
    "DURATION_HEADER",
    "FUNCTION_HEADER",
    "HANDLER_ERROR",
    "INIT_ERROR",
    "INSTANCE_GONE_HEADER",
    "INSTANCE_HEADER",
    "INSTANCE_NOT_FOUND",
    "INVALID_EVENT",
    "LOG_BYTES_HEADER",
    "MAIL_ROUTE",
    "MAX_ANSWER_BYTES",
    "MAX_RESULT_BYTES",
    "NOT_SERIALIZABLE",
    "OK",
    "OUTCOME_HEADER",
    "OUT_OF_MEMORY",
    "REQUEST_ID_HEADER",
    "RESPONSE_TOO_LARGE",
    "SHIM_OUTCOMES",
    "TIMEOUT",
    "TIMEOUT_HEADER",
    "USAGE_ROUTE",
    "Heartbeat",
    "HeartbeatReply",
    "InstanceReport",
    "InstanceStart",
    "JoinRequest",
    "JoinResult",
    "UsageBatch",
    "UsageRecord",
]

# Control plane -> agent, on an invocation (the request id header is the shim's too).
TIMEOUT_HEADER = "X-Cumulus-Timeout-Ms"
# Control plane -> agent: this call waited for the instance to start (it is charged the start-up).
COLD_START_HEADER = "X-Cumulus-Cold-Start"
# Agent -> control plane: usage records (`node_agent.meter`), stored before the answer.
USAGE_ROUTE = "/v1/internal/usage"
# A function's request to a service (`context.services`), forwarded by its node's agent with the
# instance that made it (the control plane checks the instance was placed on that node).
MAIL_ROUTE = "/v1/internal/services/mail"
INSTANCE_HEADER = "X-Cumulus-Instance"
FUNCTION_HEADER = "X-Cumulus-Function"
# Agent -> control plane: the instance is gone (stopped, crashed, timed out), do not call it again.
INSTANCE_GONE_HEADER = "X-Cumulus-Instance-Gone"

# Outcomes the agent reports itself (the shim's are in SHIM_OUTCOMES).
TIMEOUT = "FunctionTimeout"
OUT_OF_MEMORY = "FunctionOutOfMemory"
CRASHED = "FunctionCrashed"
INSTANCE_NOT_FOUND = "InstanceNotFound"
AGENT_OUTCOMES = (TIMEOUT, OUT_OF_MEMORY, CRASHED, INSTANCE_NOT_FOUND)


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
    package_type: str = "zip"  # "zip": code run by the shim; "image": an image's own Lambda runtime
    image: str = ""  # the image to run it from ("": the agent's runtime image)
    image_url: str = ""  # where to fetch that image when the node's engine lacks it
    image_archive: bool = False  # what image_url serves: a `docker save` archive (else a rootfs tarball)
    command: list[str] | None = None  # an image function's command instead of its image's CMD
    layer_digest: str = ""  # the dependency layer to mount beside the code ("": none)
    layer_url: str = ""
    network: str = "none"  # "none" or "egress"


class InstanceReport(BaseModel):
    """An instance as its node sees it."""

    instance_id: str = Field(max_length=256)
    function: str = Field(max_length=128)  # tenant/name
    version: int = Field(ge=0)
    state: str = Field(max_length=16)
    memory_mib: int = Field(default=0, ge=0, le=1 << 30)
    cpu_millis: int = Field(default=0, ge=0, le=10_000_000)
    concurrency: int = Field(default=1, ge=1, le=100_000)
    in_flight: int = Field(default=0, ge=0, le=1_000_000)
    start_ms: float = Field(default=0.0, ge=0)
    owner: str = Field(default="", max_length=128)


class Heartbeat(BaseModel):
    """What an agent tells the control plane every few seconds (bounded: a node may not claim a
    negative or absurd capacity, nor report more instances than it can hold)."""

    node_id: str = Field(max_length=128)
    url: str = Field(max_length=2048)
    provider: str = Field(default="local", max_length=64)
    node_type: str = Field(default="local", max_length=128)
    cpu_millis: int = Field(gt=0, le=10_000_000)
    memory_mib: int = Field(gt=0, le=1 << 30)
    instances: list[InstanceReport] = Field(default_factory=list, max_length=10_000)
    started_at: float = 0.0


class HeartbeatReply(BaseModel):
    """What a control plane answers a heartbeat with: every live control plane's URL (HA: the
    agent reports to each)."""

    ok: bool = True
    control_planes: list[str] = Field(default_factory=list)


class JoinRequest(BaseModel):
    """What a new node's agent sends to join, once, with its single-use join token."""

    join_token: str
    url: str = Field(description="where the control plane reaches this agent")
    provider_node_id: str = Field(default="", description="the provider's id for this machine")


class JoinResult(BaseModel):
    """What a joining node gets back: its node id, its own secret (with which it calls control
    planes, as `Bearer <node id>:<node secret>`) and the key control planes call it with."""

    node_id: str
    node_secret: str
    agent_key: str


class UsageRecord(BaseModel):
    """One metered thing, as a node measured it: an invocation an instance ran, or an instance that
    stopped (bounded: a node cannot send absurd values)."""

    seq: int = Field(ge=0)
    kind: Literal["invocation", "instance"]
    instance_id: str = Field(max_length=256)
    function: str = Field(max_length=128)
    version: int = Field(ge=0, le=1 << 31)
    memory_mib: int = Field(ge=0, le=1 << 20)
    started_at: float = Field(ge=0, le=1e11)
    init_ms: float = Field(default=0.0, ge=0, le=86_400_000)
    # invocations
    request_id: str = Field(default="", max_length=128)
    duration_us: int = Field(default=0, ge=0, le=86_400_000_000)
    outcome: str = Field(default="", max_length=64)
    # instances
    ended_at: float = Field(default=0.0, ge=0, le=1e11)
    busy_ms: float = Field(default=0.0, ge=0, le=1e12)


class UsageBatch(BaseModel):
    """What an agent posts to `USAGE_ROUTE`."""

    node_id: str = Field(max_length=128)
    records: list[UsageRecord] = Field(max_length=10_000)
