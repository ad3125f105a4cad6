"""The only SQL: engine, unit of work, tables, one repository module per job, and migrations.

Others use `Store` (every repository behind one door), the tables as the rows it returns, and the
lease's fencing types. Nothing outside this room imports SQLModel or SQLAlchemy.
"""

from control_plane.store.accounts import ADMIN_USER, TokenHolder, hash_token
from control_plane.store.cluster import Fence, LeaseLost
from control_plane.store.engine import alembic_config, downgrade, migrate
from control_plane.store.nodes import REMOVED
from control_plane.store.store import Store
from control_plane.store.tables import (
    AccessGrant,
    ApiToken,
    AsyncInvocation,
    BudgetAlert,
    BusRule,
    CodeArtifact,
    ControlPlaneMember,
    DeadLetter,
    FleetEvent,
    Function,
    FunctionBase,
    FunctionVersion,
    InstanceIntent,
    InstanceUsage,
    InvocationLog,
    InvocationUsage,
    JoinToken,
    NodeCredential,
    NodeRecord,
    ProviderIntent,
    Schedule,
    Tenant,
    UserAccount,
)
from control_plane.store.usage import instance_row, invocation_row, utc_day

__all__ = [
    "ADMIN_USER",
    "REMOVED",
    "AccessGrant",
    "ApiToken",
    "AsyncInvocation",
    "BudgetAlert",
    "BusRule",
    "CodeArtifact",
    "ControlPlaneMember",
    "DeadLetter",
    "Fence",
    "FleetEvent",
    "Function",
    "FunctionBase",
    "FunctionVersion",
    "InstanceIntent",
    "InstanceUsage",
    "InvocationLog",
    "InvocationUsage",
    "JoinToken",
    "LeaseLost",
    "NodeCredential",
    "NodeRecord",
    "ProviderIntent",
    "Schedule",
    "Store",
    "Tenant",
    "TokenHolder",
    "UserAccount",
    "alembic_config",
    "downgrade",
    "hash_token",
    "instance_row",
    "invocation_row",
    "migrate",
    "utc_day",
]
