"""The control plane's schema: tables and the API's request/response shapes (layered SQLModel)."""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, field_validator, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV_PREFIX = "CUMULUS_"


class FunctionConfig(BaseModel):
    """What a user sets for a function; stored as JSON with every version."""

    name: str = PydanticField(pattern=NAME_PATTERN, description="lowercase letters, digits and dashes")
    handler: str = PydanticField(default="main.handler", pattern=HANDLER_PATTERN,
                                 description="module.function")
    memory_mb: int = PydanticField(default=256, ge=64, le=16384, description="memory limit (MiB)")
    cpu_millis: int = PydanticField(default=0, ge=0, le=64000,
                            description="CPU quota in millicores; 0 = proportional to memory")
    timeout_s: float = PydanticField(default=30.0, gt=0, le=900, description="per-invocation timeout")
    concurrency: int = PydanticField(default=1, ge=1, le=1000, description="in-flight requests per instance")
    min_instances: int = PydanticField(default=0, ge=0, le=1000)
    max_instances: int = PydanticField(default=10, ge=1, le=1000)
    keep_alive_s: float = PydanticField(default=600.0, ge=0, le=86400, description="idle time before stop")
    env: dict[str, str] = PydanticField(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env_keys(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not ENV_KEY.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if key.startswith(RESERVED_ENV_PREFIX):
                raise ValueError(f"environment variables starting with {RESERVED_ENV_PREFIX} are reserved")
        return env

    @model_validator(mode="after")
    def _min_max(self) -> FunctionConfig:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) exceeds max_instances "
                             f"({self.max_instances})")
        return self

    def effective_cpu_millis(self) -> int:
        """The CPU quota: as set, or one core per GiB of memory, at least a quarter core."""
        return self.cpu_millis or max(250, self.memory_mb * 1000 // 1024)


class Function(SQLModel, table=True):
    """A named function; its versions hold code and settings."""

    name: str = Field(primary_key=True)
    latest_version: int = 0
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class FunctionVersion(SQLModel, table=True):
    """One immutable deployment of a function."""

    __table_args__ = (UniqueConstraint("function", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    function: str = Field(index=True)
    version: int
    config_json: str
    code_digest: str
    code_size: int
    created_at: float = Field(default_factory=time.time)

    def config(self) -> FunctionConfig:
        """The version's settings."""
        return FunctionConfig.model_validate_json(self.config_json)


class ApiToken(SQLModel, table=True):
    """A bearer token, stored as its SHA-256."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, index=True)
    name: str
    is_admin: bool = False
    created_at: float = Field(default_factory=time.time)


class NodeRecord(SQLModel, table=True):
    """A node of the fleet as last reported by its agent."""

    id: str = Field(primary_key=True)
    provider: str
    node_type: str
    url: str
    cpu_millis: int
    memory_mib: int
    state: str
    last_heartbeat: float = 0.0
    created_at: float = Field(default_factory=time.time)


class JoinToken(SQLModel, table=True):
    """A single-use, expiring token with which a newly provisioned node joins the cluster."""

    token_hash: str = Field(primary_key=True)
    request_id: str = Field(index=True, unique=True)
    provider: str
    node_type: str
    expires_at: float
    used_at: float | None = None
    node_id: str | None = None


class JoinRequest(SQLModel):
    """What a node agent sends to join."""

    join_token: str
    url: str = Field(description="where the control plane reaches this agent")
    provider_node_id: str = Field(default="", description="the provider's id for this machine")


class JoinResult(SQLModel):
    """What a joining node gets back."""

    node_id: str
    node_token: str


class ProviderIntent(SQLModel, table=True):
    """A provider call written down before it is made, so a control plane that crashes mid-call
    finishes it on restart (provider calls are idempotent by request id)."""

    request_id: str = Field(primary_key=True)
    kind: str  # "create" | "terminate"
    provider: str
    node_type: str = ""
    provider_ids: str = ""  # comma-separated
    state: str = "open"  # open -> created (create: waiting for the join) -> done | failed
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class LeaderLease(SQLModel, table=True):
    """Who runs the reconcilers. A holder renews before `expires_at`; another may take it after.
    `generation` grows with every change of holder and fences writes of a deposed leader."""

    name: str = Field(primary_key=True)
    holder: str = ""
    generation: int = 0
    expires_at: float = 0.0


class InstanceIntent(SQLModel, table=True):
    """A start or stop of an instance, written before its node agent is asked and deleted once the
    agent answered. A control plane restarted with open ones stops those instances (a start is
    rolled back, a stop finished); both are idempotent on the agent."""

    instance_id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    kind: str  # "start" or "stop"
    function: str
    node_id: str
    node_url: str
    created_at: float = Field(default_factory=time.time)


class ControlPlaneMember(SQLModel, table=True):
    """A running control plane (HA: several share one database). Each renews `last_seen` every
    lease tick and publishes the calls it cannot place, so the leader scales the fleet for all."""

    id: str = Field(primary_key=True)
    url: str
    started_at: float = Field(default_factory=time.time)
    last_seen: float = 0.0
    pending_json: str = "[]"


class ClusterSecret(SQLModel, table=True):
    """A secret every control plane of the cluster shares (e.g. the node agents' token)."""

    name: str = Field(primary_key=True)
    value: str


class CodeArtifact(SQLModel, table=True):
    """A built code artifact, by digest: any control plane can serve any deployed version."""

    digest: str = Field(primary_key=True)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: float = Field(default_factory=time.time)


class FleetEvent(SQLModel, table=True):
    """A scaling decision or fleet observation, with its reason."""

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    kind: str
    reason: str
    node_id: str = ""


class InvocationLog(SQLModel, table=True):
    """One invocation's outcome and captured stdout/stderr."""

    id: int | None = Field(default=None, primary_key=True)
    function: str = Field(index=True)
    version: int
    request_id: str
    started_at: float
    duration_ms: float
    outcome: str
    cold_start: bool
    logs: str


class FunctionPublic(SQLModel):
    """A function as the API shows it."""

    name: str
    version: int
    url: str
    config: dict[str, Any]
    code_digest: str
    code_size: int
    created_at: float
    updated_at: float
    instances: int = Field(default=0, description="instances ready to serve")
    starting: int = Field(default=0, description="instances being started")


class DeployResult(SQLModel):
    """The answer to a deployment."""

    name: str
    version: int
    url: str
