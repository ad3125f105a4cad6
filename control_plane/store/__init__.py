"""The only SQL: engine, unit of work, tables, one repository module per job, and migrations.

Others use `Store` (every repository behind one door), the tables as the rows it returns, and the
lease's fencing types. Nothing outside this room imports SQLModel or SQLAlchemy.
"""

from control_plane.store.cluster import Fence, LeaseLost
from control_plane.store.engine import alembic_config, downgrade, migrate
from control_plane.store.nodes import REMOVED
from control_plane.store.store import Store
from control_plane.store.tables import (
    ApiToken,
    CodeArtifact,
    ControlPlaneMember,
    FleetEvent,
    Function,
    FunctionBase,
    FunctionVersion,
    InstanceIntent,
    InvocationLog,
    JoinToken,
    NodeCredential,
    NodeRecord,
    ProviderIntent,
)
from control_plane.store.tokens import hash_token

__all__ = [
    "REMOVED",
    "ApiToken",
    "CodeArtifact",
    "ControlPlaneMember",
    "Fence",
    "FleetEvent",
    "Function",
    "FunctionBase",
    "FunctionVersion",
    "InstanceIntent",
    "InvocationLog",
    "JoinToken",
    "LeaseLost",
    "NodeCredential",
    "NodeRecord",
    "ProviderIntent",
    "Store",
    "alembic_config",
    "downgrade",
    "hash_token",
    "migrate",
]
