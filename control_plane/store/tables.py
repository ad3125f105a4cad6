"""The tables (SQLModel, `table=True`), and the schema bases that other rooms' API shapes extend.

Only this room imports SQLModel and SQLAlchemy. A base such as `FunctionBase` holds the fields that
the table and the API shapes share; `control_plane.functions` builds `FunctionCreate` and
`FunctionPublic` on it. Structured values (a version's settings, a provision's machine ids, a
member's unplaced demand) are JSON columns, never encoded by hand into strings.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


class FunctionBase(SQLModel):
    """What the table of functions and every API shape of a function share."""

    name: str = Field(description="lowercase letters, digits and dashes")


class Function(FunctionBase, table=True):
    """A named function of a tenant; its versions hold code and settings. `name` is its key: the
    full name `tenant/name`, the bare name in the default tenant (`control_plane.identity.access`)."""

    name: str = Field(primary_key=True)
    tenant: str = Field(default="default", index=True)
    latest_version: int = 0
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class FunctionVersion(SQLModel, table=True):
    """One immutable deployment of a function: its settings as deployed, and its code's digest."""

    __table_args__ = (UniqueConstraint("function", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    function: str = Field(index=True)
    version: int
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    code_digest: str
    code_size: int
    layer_digest: str | None = None  # the dependency layer its code names, if it has requirements
    created_at: float = Field(default_factory=time.time)


class Tenant(SQLModel, table=True):
    """A tenant (namespace): it owns functions and users, and has quotas and a monthly budget."""

    name: str = Field(primary_key=True)
    quotas: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    budget: float | None = None  # per calendar month, in the price sheet's currency
    budget_action: str = "throttle"  # or "warn"
    created_at: float = Field(default_factory=time.time)
    # Over its budget in this month: the fleet grows no more for it; its calls are refused (throttle).
    over_budget_month: str | None = None


class UserAccount(SQLModel, table=True):
    """A user (a person or a service account) of one tenant, with one role there."""

    name: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    role: str
    created_at: float = Field(default_factory=time.time)


class ApiToken(SQLModel, table=True):
    """A user's bearer token, stored as its SHA-256 only; `public_id` names it in lists and revokes.
    A token refused from `expires_at` or `revoked_at` on; `scopes` (None: all its user may) limit it."""

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(unique=True, index=True)
    token_hash: str = Field(unique=True, index=True)
    username: str = Field(index=True)
    name: str = ""  # what it is for
    scopes: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_to: str | None = None  # the public id of the token that replaced it
    created_at: float = Field(default_factory=time.time)


class AccessGrant(SQLModel, table=True):
    """One permission for one user on the functions of `tenant` matching `pattern`."""

    __table_args__ = (UniqueConstraint("username", "permission", "tenant", "pattern"),)
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True)
    permission: str
    tenant: str = Field(index=True)
    pattern: str
    created_at: float = Field(default_factory=time.time)


class Generation(SQLModel, table=True):
    """A counter that grows with every change of what it names (`identity`: users, tokens and
    grants), so that every control plane can drop what it cached from them."""

    name: str = Field(primary_key=True)
    value: int = 0


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


class NodeCredential(SQLModel, table=True):
    """A joined node's secret (its SHA-256 only) and the URL it joined with: the node's identity."""

    node_id: str = Field(primary_key=True)
    secret_hash: str
    url: str
    joined_at: float = Field(default_factory=time.time)


class ProviderIntent(SQLModel, table=True):
    """A provider call written down before it is made, so a control plane that crashes mid-call
    finishes it on restart (provider calls are idempotent by request id)."""

    request_id: str = Field(primary_key=True)
    kind: str  # "create" | "terminate"
    provider: str
    node_type: str = ""
    provider_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
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
    lease tick and publishes the calls it cannot place (`pending`: function, resources, count), so
    the leader scales the fleet for all."""

    id: str = Field(primary_key=True)
    url: str
    started_at: float = Field(default_factory=time.time)
    last_seen: float = 0.0
    pending: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class ClusterSecret(SQLModel, table=True):
    """A secret every control plane of the cluster shares, sealed (e.g. the seed of the node keys)."""

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


class InvocationUsage(SQLModel, table=True):
    """One metered invocation (an instance ran it), as its node measured it: stored once per request
    id, whoever reports it how many times."""

    request_id: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    function: str = Field(index=True)  # the function's key (`name`, or `tenant/name`)
    version: int
    instance_id: str
    node_id: str
    started_at: float
    day: str = Field(index=True)  # UTC, YYYY-MM-DD, of started_at
    month: str = Field(index=True)  # UTC, YYYY-MM
    duration_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    billed_ms: int = Field(sa_column=Column(BigInteger, nullable=False))  # duration, rounded up to 1 ms
    memory_mib: int
    # billed_ms x memory_mib: GB·s = mib_ms / 1,024,000, exactly
    mib_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # the start-up time this call waited for (0: a warm call), rounded up to 1 ms
    init_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    outcome: str
    recorded_at: float = Field(default_factory=time.time)


class InstanceUsage(SQLModel, table=True):
    """One instance's life, metered once it stopped: how long it lived, and how long it idled."""

    instance_id: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    function: str = Field(index=True)
    version: int
    node_id: str
    memory_mib: int
    started_at: float
    ended_at: float
    day: str = Field(index=True)  # of ended_at
    month: str = Field(index=True)
    lifetime_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    busy_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    idle_ms: int = Field(sa_column=Column(BigInteger, nullable=False))  # lifetime - busy: its keep-alive
    init_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    recorded_at: float = Field(default_factory=time.time)


class BudgetAlert(SQLModel, table=True):
    """A tenant's spending crossed a share of its monthly budget (recorded once per level)."""

    tenant: str = Field(primary_key=True)
    month: str = Field(primary_key=True)
    level: int = Field(primary_key=True)  # percent: 80, 100
    spent: float
    budget: float
    at: float = Field(default_factory=time.time)


class QueuedJob(SQLModel, table=True):
    """A job of the durable queue (`control_plane.jobs`): waiting, leased, or done (kept as a
    tombstone for the dedupe window, so a key put again is known as a duplicate)."""

    __table_args__ = (UniqueConstraint("queue", "key"), Index("ix_queuedjob_ready", "queue", "done_at",
                                                               "available_at"))
    id: int | None = Field(default=None, primary_key=True)
    queue: str
    key: str
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    available_at: float
    lease_token: str | None = None
    lease_until: float | None = None
    deliveries: int = 0
    done_at: float | None = None
    created_at: float = Field(default_factory=time.time)


class AsyncInvocation(SQLModel, table=True):
    """An async call (`X-Cumulus-Invocation-Type: Event`): its state and attempts. The event itself
    travels in its job; a dead-lettered one is kept in `DeadLetter`."""

    request_id: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    function: str = Field(index=True)  # the function's key
    state: str = Field(index=True)  # queued | running | retrying | succeeded | failed | dead_lettered
    attempts: int = 0
    enqueued_at: float = Field(index=True)
    updated_at: float
    next_attempt_at: float | None = None
    source: str = "api"  # api | schedule:NAME | rule:NAME | workflow:EXECUTION | destination:REQUEST
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    duplicates: int = 0  # deliveries of an attempt already run (at-least-once), detected by request id


class DeadLetter(SQLModel, table=True):
    """An async call that ran out of retries or of age, with its event, until redriven."""

    request_id: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    function: str = Field(index=True)
    event: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    attempts: int
    reason: str  # retries_exhausted | event_too_old | function_gone
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    dead_at: float = Field(index=True)


class Schedule(SQLModel, table=True):
    """A schedule: a cron expression (in a time zone) or a rate, firing async calls of a function.
    `next_fire_at` moves on by compare-and-set, so that of several control planes one fires each."""

    key: str = Field(primary_key=True)  # `tenant/name` (the bare name in the default tenant)
    tenant: str = Field(index=True)
    name: str
    function: str = Field(index=True)  # the target function's key
    cron: str | None = None
    rate_s: float | None = None
    tz: str = "UTC"
    anchor: float = 0.0
    data: str = "{}"  # the event's `detail`, JSON
    catch_up: bool = True  # a firing missed while no control plane ran: once on return, or skipped
    next_fire_at: float = Field(index=True)
    last_fired_at: float | None = None
    fired: int = 0
    created_at: float = Field(default_factory=time.time)


class BusRule(SQLModel, table=True):
    """A rule of a tenant's event bus: events matching `pattern` go to `target`, transformed."""

    key: str = Field(primary_key=True)  # `tenant/name` (the bare name in the default tenant)
    tenant: str = Field(index=True)
    name: str
    pattern: str  # the event pattern, JSON
    target: str  # "function:KEY"
    input_paths: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    input_template: str | None = None
    created_at: float = Field(default_factory=time.time)


class Workflow(SQLModel, table=True):
    """A state machine (Amazon States Language) of a tenant; its executions keep the definition
    they started with."""

    key: str = Field(primary_key=True)  # `tenant/name` (the bare name in the default tenant)
    tenant: str = Field(index=True)
    name: str
    definition: str  # JSON
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class WorkflowExecution(SQLModel, table=True):
    """One run of a workflow: the interpreter's state after its last step (moved on by
    compare-and-set on `version`), and how it ended."""

    id: str = Field(primary_key=True)
    workflow: str = Field(index=True)  # the workflow's key
    tenant: str = Field(index=True)
    name: str
    definition: str  # JSON, as it started
    status: str = Field(index=True)  # RUNNING | SUCCEEDED | FAILED
    state: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    version: int = 1
    input: str  # JSON
    output: str | None = None
    error: str | None = None
    cause: str | None = None
    started_at: float
    ended_at: float | None = None


class WorkflowEvent(SQLModel, table=True):
    """One event of an execution's history, in order."""

    __table_args__ = (UniqueConstraint("execution", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    execution: str = Field(index=True)
    seq: int
    type: str
    state_name: str | None = None
    timestamp: float
    details: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
